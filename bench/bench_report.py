"""The report of a 2,000-job folder: time to build it (thumbnails made, then again with them
made), the page's size, and its first paint in headless Chromium (Debian's, via Selenium).

    python bench/bench_report.py [--jobs 2000]

The folder is made by ``batchgen run --simulate`` (the simulator in-process: this measures the
report, not the run), with the shop mix of tests/test_report.py: square tiles, edits of a
reference photo, a few flagged prompts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]


def jobs(count: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(count):
        if i % 10 == 3:
            out.append(
                {
                    "id": f"edit-{i:05}",
                    "model": "reve/edit-image",
                    "prompt": f"mug {i}",
                    "image_url": "mug.jpg",
                }
            )
        elif i % 97 == 7:
            out.append({"id": f"tile-{i:05}", "model": "reve/create-image", "prompt": f"[[violation]] {i}"})
        else:
            out.append(
                {
                    "id": f"tile-{i:05}",
                    "model": "reve/create-image",
                    "prompt": f"tile {i}",
                    "aspect_ratio": "1:1",
                }
            )
    return out


def first_paint(page: Path, profile: Path) -> float:
    """Milliseconds to the first contentful paint of ``page`` in headless Chromium."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
                 "--disable-background-networking", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(page.as_uri())
        for _ in range(200):
            paint = driver.execute_script(
                "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null"
            )
            if paint is not None:
                return float(paint)
            time.sleep(0.05)
        raise RuntimeError("no first-contentful-paint entry")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    count = parser.parse_args().jobs
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "mug.jpg").write_bytes((ROOT / "sample_jobs" / "images" / "blue-mug.jpg").read_bytes())
        job_file = base / "jobs.jsonl"
        job_file.write_text("".join(json.dumps(j) + "\n" for j in jobs(count)))
        out = base / "out"
        batchgen = [sys.executable, "-m", "batchgen"]
        subprocess.run([*batchgen, "run", str(job_file), "--out", str(out), "--simulate", "--no-progress",
                        "--concurrency", "32"], check=False, capture_output=True)  # fmt: skip
        timings = []
        for _ in range(2):  # cold (thumbnails made), then warm
            started = time.perf_counter()
            subprocess.run([*batchgen, "report", str(out)], check=True, capture_output=True)
            timings.append(time.perf_counter() - started)
        page = out / "report.html"
        paints = [first_paint(page, base / f"profile-{i}") for i in range(3)]
        print(
            json.dumps(
                {
                    "jobs": count,
                    "build_cold_s": round(timings[0], 2),
                    "build_warm_s": round(timings[1], 2),
                    "page_bytes": page.stat().st_size,
                    "thumbnail_bytes": sum(p.stat().st_size for p in (out / "thumbnails").iterdir()),
                    "first_paint_ms": [round(p) for p in paints],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
