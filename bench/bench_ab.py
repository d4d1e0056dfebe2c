"""A/B of batchgen alone: two checkouts of the code (``--old DIR``, ``--new DIR``), each run as a
process of its own against one ``simulate-server --image-pool 8`` process, alternating, so that
a change's cost is read in one sitting on one machine. For each run: wall seconds and CPU
seconds (user + sys) of the first run of ``--jobs`` jobs and of a re-run (a resume that sends
nothing).

    python bench/bench_ab.py --old /tmp/old-checkout --pairs 4        # --new defaults to this tree
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from harness import batchgen, server, stats, timed, write_jobs

REPO = Path(__file__).resolve().parent.parent

# The checkout's own package, whatever is installed: the editable install's finder is dropped
# from sys.meta_path and the checkout put first on sys.path.
LAUNCH = (
    "import sys;"
    " sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('__editable__')];"
    " sys.path.insert(0, sys.argv.pop(1)); from batchgen.cli import main; sys.argv[0] = 'batchgen';"
    " sys.exit(main())"
)


def command(checkout: Path, job_file: Path, out: Path, url: str, *options: str) -> list[str]:
    """``batchgen run`` of ``checkout``'s code (``options``: default ``--concurrency 64``)."""
    line = batchgen(job_file, out, url, *(options or ("--concurrency", "64")))
    return [sys.executable, "-c", LAUNCH, str(checkout), *line[3:]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, default=REPO)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {
        side: {"wall": [], "cpu": [], "rerun_wall": [], "rerun_cpu": []} for side in ("old", "new")
    }
    with tempfile.TemporaryDirectory() as tmp, server("--image-pool", "8") as url:
        job_file = write_jobs(Path(tmp) / "jobs.jsonl", args.jobs)
        for pair in range(args.pairs):
            order = ("old", "new") if pair % 2 == 0 else ("new", "old")
            for side in order:
                out = Path(tmp) / f"{side}-{pair}"
                before = stats(url)["generations"]
                first = timed(command(getattr(args, side), job_file, out, url))
                again = timed(command(getattr(args, side), job_file, out, url))
                assert first.code == 0 and again.code == 0, (first.stderr[-500:], again.stderr[-500:])
                assert stats(url)["generations"] - before == args.jobs  # the re-run sent nothing
                for key, value in (
                    ("wall", first.wall),
                    ("cpu", first.cpu),
                    ("rerun_wall", again.wall),
                    ("rerun_cpu", again.cpu),
                ):
                    figures[side][key].append(round(value, 2))
    summary = {
        side: {key: {"runs": values, "median": statistics.median(values)} for key, values in sides.items()}
        for side, sides in figures.items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
