"""A discrete-event model of a run against a throttling server, driving the real AdaptiveRate.

Seconds of simulated time per run take milliseconds: for trying the rate rules against a
hidden limit or random 429s before measuring them for real with ``bench_compare.py``.

    python bench/rate_model.py

Model: ``jobs`` jobs, ``concurrency`` places; a job takes a place, passes the limiter (one
reservation at a time, as ``AdaptiveRate.enter`` does), is answered ``latency`` seconds later
(429 when the server's sliding-second ``limit`` is full, or with probability ``p429``); a 429'd
job gives its place back for a backoff of up to 1 s, as the retry policy does for 429s.
"""

from __future__ import annotations

import heapq
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchgen.errors import RateLimited
from batchgen.gates import Send
from batchgen.gates.rate import AdaptiveRate


def simulate(  # noqa: PLR0915 - one event loop, its cases side by side
    jobs: int, concurrency: int, latency: float, *, limit: int | None = None, p429: float = 0.0, seed: int = 1
) -> dict[str, float]:
    """Run the model; returns seconds, jobs/s and the share of POSTs answered 429."""
    rng = random.Random(seed)
    clock = [0.0]
    limiter = AdaptiveRate(clock=lambda: clock[0])
    events: list[tuple[float, int, str, int]] = []
    order = 0

    def at(time: float, kind: str, job: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (time, order, kind, job))

    free, pending, waiting, queue = concurrency, list(range(jobs)), [], []
    gate_busy = False
    admitted: list[float] = []
    sends: dict[int, Send] = {}
    posts = throttled = 0

    def fill(now: float) -> None:
        nonlocal free, gate_busy
        while free > 0 and (waiting or pending):
            free -= 1
            queue.append(waiting.pop(0) if waiting else pending.pop(0))
        if queue and not gate_busy:
            gate_busy = True
            at(now, "gate", -1)

    fill(0.0)
    while events:  # bounded: every job ends after finitely many 429s (the server admits some)
        now, _, kind, job = heapq.heappop(events)
        clock[0] = now
        if kind == "gate":
            if not queue:
                gate_busy = False
                continue
            start = limiter.reserve(now)
            at(start, "send", queue.pop(0))
            at(start, "gate", -1)
        elif kind == "send":
            posts += 1
            sends[job] = Send(retry_of=None, sent_at=now)
            ok = True
            if limit is not None:
                if len([t for t in admitted[-limit:] if t > now - 1.0]) >= limit:
                    ok = False
                else:
                    admitted.append(now)
            ok = ok and rng.random() >= p429
            at(now + latency + rng.uniform(0, 0.002), "answer" if ok else "throttle", job)
        elif kind == "answer":
            limiter.settle(sends[job], None)
            free += 1
            fill(now)
        elif kind == "throttle":
            throttled += 1
            limiter.settle(sends[job], RateLimited("429"))
            free += 1
            at(now + rng.uniform(0, 1.0), "retry", job)
            fill(now)
        else:
            waiting.append(job)
            fill(now)
    return {
        "seconds": round(clock[0], 2),
        "jobs/s": round(jobs / clock[0], 2),
        "429 share": round(throttled / posts, 3),
    }


def main() -> None:
    for seed in (1, 2, 3):
        limited = simulate(200, 16, 0.003, limit=5, seed=seed)
        clean = simulate(600, 16, 0.2, seed=seed)
        noisy = simulate(600, 16, 0.2, p429=0.15, seed=seed)
        ratio = round(noisy["jobs/s"] / clean["jobs/s"], 2)
        print(f"seed {seed}: hidden 5/s limit {limited}; random 15% 429s: {ratio} of the clean run")


if __name__ == "__main__":
    main()
