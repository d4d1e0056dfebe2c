"""Baseline: the least a client must do per job, over a bare aiohttp session.

POST the job, then download the image (``url``) or decode it (``b64_json``), write the file.
No state, no fsync, no retries, no verification: the floor batchgen is measured against.

    python bench/baseline_aiohttp.py JOBS.jsonl OUT_DIR BASE_URL --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
from pathlib import Path

import aiohttp


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("base_url")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [json.loads(line) for line in args.jobs.read_text().splitlines() if line.strip()]
    headers = {"Authorization": f"Bearer {os.environ['AIMLAPI_KEY']}"}
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            job = queue.get_nowait()
            name = job.pop("id")
            async with session.post(f"{args.base_url}/v1/images/generations", json=job, headers=headers) as r:
                answer = await r.json()
            item = answer["data"][0]
            if item.get("b64_json"):
                data = base64.b64decode(item["b64_json"])
            else:
                async with session.get(item["url"]) as r:
                    data = await r.read()
            (args.out / f"{name}.png").write_bytes(data)

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.TaskGroup() as group:
        for _ in range(args.concurrency):
            group.create_task(worker(session))


if __name__ == "__main__":
    asyncio.run(main())
