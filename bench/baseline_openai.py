"""Baseline: the script a user would write instead of adopting batchgen, over the official SDK.

``AsyncOpenAI(base_url=.../v1).images.generate(..., extra_body=...)`` per job, at most
``--concurrency`` at once, then download (the SDK's own HTTP library) or decode the image and write the file.

    python bench/baseline_openai.py JOBS.jsonl OUT_DIR BASE_URL --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
from pathlib import Path

from openai import AsyncOpenAI

try:  # openai 3 ships on httpx2; earlier releases on httpx
    import httpx2 as httpx
except ImportError:
    import httpx  # type: ignore[no-redef]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("base_url")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [json.loads(line) for line in args.jobs.read_text().splitlines() if line.strip()]
    client = AsyncOpenAI(base_url=f"{args.base_url}/v1", api_key=os.environ["AIMLAPI_KEY"], max_retries=2)
    limit = asyncio.Semaphore(args.concurrency)

    async def one(job: dict[str, object], http: httpx.AsyncClient) -> None:
        name = job.pop("id")
        model, prompt = job.pop("model"), job.pop("prompt")
        async with limit:
            result = await client.images.generate(model=str(model), prompt=str(prompt), extra_body=job)
            image = result.data[0]
            data = (
                base64.b64decode(image.b64_json)
                if image.b64_json
                else (await http.get(image.url or "")).content
            )
        (args.out / f"{name}.png").write_bytes(data)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=args.concurrency)) as http:
        await asyncio.gather(*(one(job, http) for job in jobs))


if __name__ == "__main__":
    asyncio.run(main())
