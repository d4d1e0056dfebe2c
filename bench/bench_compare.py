"""Benchmarks as users meet them, run by hand: ``python bench/bench_compare.py``.

The simulator runs in its own process (``batchgen simulate-server``, zero latency unless said,
pictures drawn once and served again so the server is not the bottleneck); every client runs
as a process of its own, measured alone (wall seconds, CPU seconds = user + sys, peak RSS):

1. throughput: batchgen vs a bare aiohttp client vs a script over the official openai SDK,
   alternating, ``--pairs`` times; 2,000 jobs, half answered by URL, half inline base64;
   ``--concurrency 64``; default settings (durability on);
2. hidden limit: a server admitting 5 requests per sliding second (429s without Retry-After);
   default settings, ``--concurrency 16``, 200 jobs (``--only limit-long``: 1,000 jobs, where the
   opening burst's refusals weigh less: about 4 minutes, left out unless asked for);
3. random 429s: 200 ms latency, 15% of POSTs answered 429 (no limit behind them), vs the same
   run without faults; default settings, ``--concurrency 16``;
4. ceiling: ``--rpm 600``: achieved rate and the busiest 10-second window;
5. faults: 15% 429 (Retry-After 1), 10% 500, 5% 503, 5% dropped, 2% malformed: one run;
6. scale: ``validate`` of 1,000,000 JSONL lines vs a bare ``json.loads`` of every line; a
   50,000-job run (peak RSS) and the same command on the finished folder;
7. local reference images: 150 jobs, each with its own ~3 MB PNG: peak RSS of validate and run.

Everything listens on 127.0.0.1. ``--quick`` runs smaller versions of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import batchgen, server, stats, timed, write_jobs
from PIL import Image

HERE = Path(__file__).resolve().parent
PY = sys.executable


def throughput(jobs: int, pairs: int) -> dict[str, object]:
    rows: dict[str, list[tuple[float, float]]] = {"batchgen": [], "bare aiohttp": [], "openai SDK": []}
    with server("--image-pool", "8") as url, tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        job_file = write_jobs(work / "jobs.jsonl", jobs)
        for pair in range(pairs):
            commands = {
                "bare aiohttp": [
                    PY,
                    str(HERE / "baseline_aiohttp.py"),
                    str(job_file),
                    str(work / f"bare{pair}"),
                    url,
                ],
                "batchgen": batchgen(job_file, work / f"bg{pair}", url, "--concurrency", "64"),
                "openai SDK": [
                    PY,
                    str(HERE / "baseline_openai.py"),
                    str(job_file),
                    str(work / f"oa{pair}"),
                    url,
                ],
            }
            order = list(commands) if pair % 2 == 0 else list(reversed(commands))
            for name in order:
                result = timed(commands[name])
                assert result.code == 0, (name, result.stderr[-2000:])
                rows[name].append((jobs / result.wall, result.cpu / jobs * 1000))
    median = {
        name: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
        for name, v in rows.items()
    }
    return {
        "jobs/s (median)": {name: round(v[0], 1) for name, v in median.items()},
        "CPU-s per 1000 jobs (median)": {name: round(v[1], 2) for name, v in median.items()},
        "batchgen / bare throughput": round(median["batchgen"][0] / median["bare aiohttp"][0], 2),
        "batchgen / openai throughput": round(median["batchgen"][0] / median["openai SDK"][0], 2),
        "batchgen / bare CPU per job": round(median["batchgen"][1] / median["bare aiohttp"][1], 2),
        "pairs": pairs,
    }


def simulated_run(jobs: int, server_options: list[str], *options: str) -> dict[str, object]:
    with server(*server_options) as url, tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        job_file = write_jobs(work / "jobs.jsonl", jobs, b64_every=0)
        result = timed(batchgen(job_file, work / "out", url, *options))
        seen = stats(url)
        statuses = {int(k): v for k, v in seen["statuses"].items()}
        accepted = statuses.get(200, 0) + statuses.get(201, 0)
        return {
            "exit": result.code,
            "seconds": round(result.wall, 2),
            "jobs/s": round(jobs / result.wall, 1),
            "posts": seen["posts"],
            "429 share of posts": round(statuses.get(429, 0) / max(seen["posts"], 1), 3),
            "accepted/s": round(accepted / result.wall, 2),
            "peak 10 s window": seen["peak_10s"],
            "POSTs/s, first to last": round((seen["posts"] - 1) / seen["post_span"], 2)
            if seen["post_span"]
            else None,
            "last log": result.stderr.strip().splitlines()[-1][:200] if result.stderr.strip() else "",
        }


def scale(lines: int, run_jobs: int) -> dict[str, object]:
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        big = write_jobs(work / "big.jsonl", lines, b64_every=0)
        bare = timed([PY, "-c", f"import json\nfor line in open({str(big)!r}): json.loads(line)"])
        check = timed([PY, "-m", "batchgen", "validate", str(big)])
        out["validate"] = {
            "lines": lines,
            "seconds": round(check.wall, 2),
            "bare json.loads seconds": round(bare.wall, 2),
            "ratio": round(check.wall / bare.wall, 2),
            "peak RSS MB": round(check.rss_mb),
        }
        with server("--image-pool", "8") as url:
            job_file = write_jobs(work / "run.jsonl", run_jobs, b64_every=0)
            first = timed(batchgen(job_file, work / "out", url, "--concurrency", "64"))
            again = timed(batchgen(job_file, work / "out", url, "--concurrency", "64"))
            posts = stats(url)["posts"]
        out["run"] = {
            "jobs": run_jobs,
            "exit": first.code,
            "seconds": round(first.wall, 1),
            "peak RSS MB": round(first.rss_mb),
            "re-run seconds": round(again.wall, 2),
            "re-run exit": again.code,
            "posts (both runs)": posts,
        }
    return out


def local_images(count: int, side: int) -> dict[str, object]:
    """``validate`` and ``run`` of ``count`` edit jobs, each with its own local noise PNG
    (``side`` x ``side`` pixels, about 3 bytes a pixel): peak RSS of each."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        lines = []
        for i in range(count):
            Image.effect_noise((side, side), 90 + i % 7).convert("RGB").save(work / f"ref{i}.png")
            lines.append(
                json.dumps(
                    {"id": f"e{i}", "model": "reve/edit-image", "prompt": f"p{i}", "image_url": f"ref{i}.png"}
                )
            )
        job_file = work / "jobs.jsonl"
        job_file.write_text("\n".join(lines) + "\n")
        image_mb = (work / "ref0.png").stat().st_size / 1e6
        check = timed([PY, "-m", "batchgen", "validate", str(job_file)])
        with server("--image-pool", "8") as url:
            ran = timed(batchgen(job_file, work / "out", url, "--concurrency", "16"))
    return {
        "jobs": count,
        "MB per image": round(image_mb, 1),
        "validate peak RSS MB": round(check.rss_mb),
        "run exit": ran.code,
        "run peak RSS MB": round(ran.rss_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller versions of every benchmark")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--only",
        help="comma-separated: throughput,limit,limit-long,random429,ceiling,faults,scale,images",
    )
    args = parser.parse_args()
    quick = args.quick
    chosen = set((args.only or "throughput,limit,random429,ceiling,faults,scale,images").split(","))
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d")}
    if "throughput" in chosen:
        results["throughput"] = throughput(500 if quick else 2000, 1 if quick else args.pairs)
    if "limit" in chosen:
        results["hidden limit 5/s"] = simulated_run(
            60 if quick else 200, ["--rpm-limit", "5", "--limit-window", "1"], "--concurrency", "16"
        )
    if "limit-long" in chosen:
        results["hidden limit 5/s, 1,000 jobs"] = simulated_run(
            1000, ["--rpm-limit", "5", "--limit-window", "1"], "--concurrency", "16"
        )
    if "random429" in chosen:
        jobs = 200 if quick else 600
        base = simulated_run(jobs, ["--latency", "0.2"], "--concurrency", "16")
        faulty = simulated_run(jobs, ["--latency", "0.2", "--error-429", "0.15"], "--concurrency", "16")
        results["random 429s"] = {
            "without faults": base,
            "with 15% 429": faulty,
            "ratio": round(float(faulty["jobs/s"]) / float(base["jobs/s"]), 2),  # type: ignore[arg-type]
        }
    if "ceiling" in chosen:
        results["ceiling rpm 600"] = simulated_run(
            50 if quick else 150, [], "--concurrency", "16", "--rpm", "600"
        )
    if "faults" in chosen:
        results["faults"] = simulated_run(
            200,
            ["--error-429", "0.15", "--retry-after", "1", "--error-500", "0.1", "--error-503", "0.05",
             "--drop", "0.05", "--malformed", "0.02"],
            "--concurrency", "16",
        )  # fmt: skip
    if "scale" in chosen:
        results["scale"] = scale(100_000 if quick else 1_000_000, 5_000 if quick else 50_000)
    if "images" in chosen:
        results["local reference images"] = local_images(40 if quick else 150, 1000)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
