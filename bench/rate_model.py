"""A discrete-event model of a run against a throttling server, driving the real rate controllers:
the learned limit (``LearnedLimit``, today's) and CUBIC (``AdaptiveRate``, the one before),
side by side on the workloads of issue 19. Simulated minutes take milliseconds (a fake clock).

    python bench/rate_model.py                 # every workload, both controllers, seeds 1-3
    python bench/rate_model.py --only w5_1000 --seeds 1

Model: ``jobs`` jobs, ``concurrency`` places; a job takes a place, passes the controller (one at a
time, as the gate's lock does), reaches the server 1-3 ms later and is answered after
``latency`` (+-20%) when admitted, or 2 ms after arriving when refused (a 429 costs no
generation). The server refuses when its limit is full: a sliding window of admitted requests
(``limit`` per ``window`` s, possibly changing at ``change_at``), or admitted requests in flight
(``in_flight``), or at random (``p429``). A refused job gives its place back for a backoff of up
to 1 s, as the retry policy does for 429s.

Figures: ``admitted``: the rate of admitted requests (by the time they were sent, to the last of
them) as a share of what the limit allows (after a change: over the part after it);
``steady``: the same from 10 s on; ``429``: the share of POSTs
refused (``steady``: of those sent from 10 s on); ``opening``: refusals among the first 2 s of
sends; ``after change``: 429s in the 15 s after a change; ``vs free``: the run's speed against a
client with no controller at all (for workloads without a limit).
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchgen.errors import RateLimited
from batchgen.gates import Send
from batchgen.gates.learned import LearnedLimit
from batchgen.gates.rate import AdaptiveRate


@dataclass(frozen=True)
class Workload:
    """A server and a run: see the module docstring."""

    jobs: int
    concurrency: int = 16
    latency: float = 0.1
    limit: int | None = None
    window: float = 1.0
    in_flight: int | None = None
    p429: float = 0.0
    change_at: float | None = None
    new_limit: int | None = None


WORKLOADS = {
    "w5_1000": Workload(1000, limit=5),
    "w5_200": Workload(200, limit=5),
    "slow_5s": Workload(300, concurrency=64, latency=5.0, limit=5),
    "in_flight_8": Workload(500, latency=1.0, in_flight=8),
    "drop_5_2": Workload(300, limit=5, change_at=20.0, new_limit=2),
    "rise_2_8": Workload(800, limit=2, change_at=20.0, new_limit=8),
    "w50_10s": Workload(600, limit=50, window=10.0),
    "w300_60s": Workload(1500, limit=300, window=60.0),
    "random_429": Workload(600, latency=0.2, p429=0.15),
    "opening_64": Workload(200, concurrency=64, limit=5),
    "no_limit_2s": Workload(3000, concurrency=256, latency=2.0),
}

TARGETS = {  # issue 19's "must show", per workload: (least admitted, most 429 share)
    "w5_1000": "admitted >= 95%, 429 <= 4%",
    "w5_200": "admitted >= 93%, 429 <= 7%",
    "slow_5s": "admitted >= 90% (95% steady), 429 <= 10%",
    "in_flight_8": "admitted >= 93%, 429 <= 5%",
    "drop_5_2": ">= 93% of the new limit after the drop, <= 10 429s in the 15 s after it",
    "rise_2_8": ">= 90% of the new limit after the rise",
    "w50_10s": "admitted >= 93%, <= 5% 429 in steady state",
    "w300_60s": "admitted >= 93%, <= 5% 429 in steady state",
    "random_429": ">= 0.95x a client with no controller",
    "opening_64": "<= 10 POSTs refused before the first steady second",
    "no_limit_2s": ">= 0.97x a client with no controller",
}


@dataclass
class _Server:
    w: Workload
    rng: random.Random
    admitted: deque[float] = field(default_factory=deque)
    busy: int = 0

    def limit_at(self, t: float) -> int | None:
        if self.w.change_at is not None and t >= self.w.change_at:
            return self.w.new_limit
        return self.w.limit

    def admit(self, arrival: float) -> bool:
        limit = self.limit_at(arrival)
        if limit is not None:
            while self.admitted and self.admitted[0] <= arrival - self.w.window:
                self.admitted.popleft()
            if len(self.admitted) >= limit:
                return False
        if self.w.in_flight is not None and self.busy >= self.w.in_flight:
            return False
        if self.rng.random() < self.w.p429:
            return False
        if limit is not None:
            self.admitted.append(arrival)
        return True


def simulate(w: Workload, controller: str, seed: int) -> dict[str, float]:  # noqa: PLR0912, PLR0915 - one event loop
    """Run workload ``w`` with ``controller`` (``learned``, ``cubic`` or ``none``)."""
    rng = random.Random(seed)
    clock = [0.0]
    learned = LearnedLimit(clock=lambda: clock[0]) if controller == "learned" else None
    cubic = AdaptiveRate(clock=lambda: clock[0]) if controller == "cubic" else None
    server = _Server(w, random.Random(seed + 1000))
    events: list[tuple[float, int, str, Any]] = []
    order = 0

    def at(time: float, kind: str, item: Any = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (time, order, kind, item))

    free, pending, retrying, queue = w.concurrency, list(range(w.jobs)), [], deque()
    gate_at: float | None = None  # when the gate next looks (None: idle; inf: waits for an answer)
    sends: list[tuple[float, bool]] = []  # (send time, refused)
    done_times: list[float] = []
    admitted_sends: list[float] = []  # send times of the admitted requests

    def fill(now: float) -> None:
        nonlocal free
        while free > 0 and (retrying or pending):
            free -= 1
            queue.append(retrying.pop(0) if retrying else pending.pop(0))
        wake(now)

    def wake(now: float) -> None:
        nonlocal gate_at
        if queue and (gate_at is None or gate_at == math.inf):
            gate_at = now
            at(now, "gate")

    fill(0.0)
    while events:  # bounded: every job is admitted after finitely many 429s
        now, _, kind, item = heapq.heappop(events)
        clock[0] = now
        if kind == "gate":
            if gate_at != now:
                continue  # superseded
            gate_at = None
            if not queue:
                continue
            if learned is not None:
                wait, probe = learned.admit(now)
                if wait > 0:
                    gate_at = math.inf if math.isinf(wait) else now + wait
                    if not math.isinf(wait):
                        at(gate_at, "gate")
                    continue
                ticket: Any = learned.sent(now, probe=probe)
                start = now
            elif cubic is not None:
                start = cubic.reserve(now)
                ticket = Send(retry_of=None, sent_at=start)
            else:
                start, ticket = now, None
            job = queue.popleft()
            at(start, "send", (job, ticket))
            gate_at = start
            at(start, "gate")
        elif kind == "send":
            job, ticket = item
            arrival = now + rng.uniform(0.001, 0.003)
            ok = server.admit(arrival)
            sends.append((now, not ok))
            if ok:
                server.busy += 1
                at(arrival + w.latency * rng.uniform(0.8, 1.2), "answer", (job, ticket, True))
                admitted_sends.append(now)
            else:
                at(arrival + 0.002, "answer", (job, ticket, False))
        elif kind == "answer":
            job, ticket, ok = item
            if ok:
                server.busy -= 1
                done_times.append(now)
            if learned is not None:
                learned.answered(ticket, refused=not ok)
            elif cubic is not None:
                cubic.settle(ticket, None if ok else RateLimited("429"))
            free += 1
            if not ok:
                at(now + rng.uniform(0, 1.0), "retry", job)
            fill(now)
            if gate_at is not None and gate_at > now:  # an answer may free the limiter: look again
                gate_at = None
                wake(now)
        else:  # retry
            retrying.append(item)
            fill(now)
    return _figures(w, sends, done_times, admitted_sends)


def _figures(
    w: Workload, sends: list[tuple[float, bool]], done: list[float], admitted: list[float]
) -> dict[str, float]:
    end = max(done)
    posts = len(sends)
    refused = sum(r for _, r in sends)
    steady_sends = [r for t, r in sends if t >= 10.0]
    figures: dict[str, float] = {
        "seconds": round(end, 2),
        "429": round(refused / posts, 3),
        "429 steady": round(sum(steady_sends) / len(steady_sends), 3) if steady_sends else 0.0,
        "opening": sum(r for t, r in sends if t < 2.0),
    }
    if w.limit is not None or w.in_flight is not None:
        if w.in_flight is not None:
            allowed = w.in_flight / w.latency
        else:
            allowed = (w.new_limit if w.change_at is not None else w.limit) / w.window  # type: ignore[operator]
        # admitted requests by the time they were sent, over the sending (not the last answers)
        since, last = w.change_at or 0.0, max(admitted)
        part = [t for t in admitted if t >= since]
        figures["admitted"] = round(len(part) / (last - since) / allowed, 3)
        later = [t for t in admitted if t >= max(since, 10.0)]
        if len(later) > 1:
            figures["admitted steady"] = round(len(later) / (last - max(since, 10.0)) / allowed, 3)
        if w.change_at is not None:
            figures["after change"] = sum(r for t, r in sends if w.change_at <= t < w.change_at + 15)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    names = [n for n in WORKLOADS if not args.only or n in args.only.split(",")]
    for name in names:
        w = WORKLOADS[name]
        print(f"{name}: {TARGETS[name]}")
        free = None
        if w.limit is None and w.in_flight is None:
            free = statistics.mean(simulate(w, "none", s)["seconds"] for s in range(1, args.seeds + 1))
        for controller in ("cubic", "learned"):
            runs = [simulate(w, controller, s) for s in range(1, args.seeds + 1)]
            mean = {k: round(statistics.mean(r[k] for r in runs), 3) for k in runs[0]}
            if free is not None:
                mean["vs free"] = round(free / mean["seconds"], 3)
            print(f"  {controller:8s} {mean}")


if __name__ == "__main__":
    main()
