"""What the simulator gets wrong on purpose (faults) and what it has seen (state)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["FaultConfig", "SimulatorState"]


def _opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(slots=True)
class FaultConfig:
    """Fault probabilities (0..1, drawn per request from a seeded RNG) and enforced limits.

    Each field's ``help`` metadata says what it does (and is the ``simulate-server --help``).
    """

    seed: int = _opt(0, "seed of the fault RNG (same seed, same faults)")
    latency: float = _opt(0.0, "seconds every generation takes")
    error_429: float = _opt(0.0, "probability of 429 Too many requests, without Retry-After like the API")
    error_500: float = _opt(0.0, "probability of 500")
    error_503: float = _opt(0.0, "probability of 503")
    drop: float = _opt(0.0, "probability of closing the connection before answering (nothing billed)")
    slow: float = _opt(0.0, "probability of answering after --slow-seconds more")
    slow_seconds: float = _opt(5.0, "seconds a slow answer takes on top of --latency")
    malformed: float = _opt(0.0, "probability of a 201 with broken JSON")
    big_json: float = _opt(0.0, "probability of an answer padded to --big-json-bytes")
    big_json_bytes: int = _opt(80 * 1024 * 1024, "bytes of a padded answer")
    bad_scheme: float = _opt(0.0, "probability of an image URL file:///etc/passwd")
    cdn_fail: float = _opt(0.0, "probability of a CDN 500 or truncated image")
    cdn_not_image: float = _opt(0.0, "probability of HTML served as image/png")
    cdn_oversized: float = _opt(0.0, "probability of --oversized-bytes of junk, chunked, no length")
    oversized_bytes: int = _opt(60 * 1024 * 1024, "bytes of an oversized image")
    cdn_bomb: float = _opt(0.0, "probability of a decompression bomb (a tiny PNG claiming 100000x100000)")
    cdn_redirect_loop: float = _opt(0.0, "probability of a CDN redirect to itself, forever")
    cdn_404: float = _opt(
        0.0, "probability that a new image's first download is a 404 (it appears a moment later)"
    )
    rpm_limit: int | None = _opt(None, "429 past this many accepted requests per --limit-window seconds")
    limit_window: float = _opt(60.0, "seconds of the --rpm-limit window")
    limit_change_at: float | None = _opt(
        None, "seconds after the first POST at which --rpm-limit becomes --limit-then (a limit that moves)"
    )
    limit_then: int = _opt(0, "the --rpm-limit from --limit-change-at on")
    max_in_flight: int | None = _opt(
        None, "429 while this many generations are in progress (a concurrency limit)"
    )
    credits: int | None = _opt(None, "generations before 403 'You've run out of credits'")
    hourly_limit: int | None = _opt(None, "generations before 429 'free limit for the hour'")
    retry_after: int | None = _opt(
        None, "Retry-After seconds on fault and rate-limit 429s (the real API sends none)"
    )
    image_pool: int = _opt(
        0, "pictures drawn per size and served again (0: a new one per request); for benchmarks"
    )

    def update(self, changes: dict[str, Any]) -> None:
        """Set fields by name (unknown names raise ``KeyError``)."""
        names = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise KeyError(name)
            setattr(self, name, value)


@dataclass(slots=True)
class SimulatorState:
    """Counters a test or ``GET /_sim/stats`` reads; thread-safe through ``changed``.

    ``generations`` counts billed generations (2xx answers sent); ``posts`` every POST;
    ``generated`` lists (X-Client-Request-Id, prompt, request_id) per billed generation;
    ``post_times`` the monotonic time of each POST.
    """

    config: FaultConfig = field(default_factory=FaultConfig)
    posts: int = 0
    generations: int = 0
    cdn_gets: int = 0
    cdn_with_auth: int = 0  # CDN requests that carried an Authorization header (a leak)
    statuses: Counter[int] = field(default_factory=Counter)
    generated: list[tuple[str | None, str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    post_times: list[float] = field(default_factory=list)
    accepted_times: list[float] = field(default_factory=list)
    in_progress: int = 0  # generations being made now (for max_in_flight)
    refused_times: list[float] = field(default_factory=list)  # when each 429 was answered
    changed: threading.Condition = field(default_factory=threading.Condition)
    cdn_404s: int = 0  # downloads answered 404 because the image was "not there yet"
    _served: set[str] = field(default_factory=set)  # image names the CDN has been asked for
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)

    def not_there_yet(self, name: str) -> bool:
        """Whether the first download of image ``name`` is a 404 (``cdn_404``); later ones never are."""
        first = name not in self._served
        self._served.add(name)
        if first and self.roll(self.config.cdn_404):
            self.note(cdn_404s=1)
            return True
        return False

    def roll(self, probability: float) -> bool:
        """True with ``probability`` (seeded)."""
        return probability > 0 and self.rng.random() < probability

    def note(self, **changes: Any) -> None:
        """Apply counter increments and wake whoever waits on ``changed``."""
        with self.changed:
            for name, delta in changes.items():
                setattr(self, name, getattr(self, name) + delta)
            self.changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Block (in another thread than the simulator's) until ``predicate(self)`` or timeout."""
        with self.changed:
            return bool(self.changed.wait_for(lambda: predicate(self), timeout))

    def picture_seed(self) -> int:
        """The seed of the next picture: new each time, or one of ``image_pool`` when set."""
        pool = self.config.image_pool
        return self.rng.randrange(pool) if pool > 0 else self.rng.randrange(2**48)

    def over_rate_limit(self) -> bool:
        """True when ``rpm_limit`` requests were already accepted in the last ``limit_window`` s."""
        limit = self.config.rpm_limit
        change = self.config.limit_change_at
        if change is not None and self.post_times and time.monotonic() >= self.post_times[0] + change:
            limit = self.config.limit_then
        if limit is None:
            return False
        cutoff = time.monotonic() - self.config.limit_window
        recent = sum(1 for t in self.accepted_times[-(limit + 1) :] if t >= cutoff)
        if recent >= limit:
            return True
        self.accepted_times.append(time.monotonic())
        return False

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "posts": self.posts,
            "generations": self.generations,
            "cdn_gets": self.cdn_gets,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "peak_10s": self.busiest_window(10.0),
            "post_span": max(self.post_times) - min(self.post_times) if self.post_times else 0.0,
            # 429s in the first 2 s of POSTs: how hard the opening hit a limit
            "opening_429s": sum(1 for t in self.refused_times if t < self.post_times[0] + 2.0)
            if self.post_times
            else 0,
        }

    def busiest_window(self, seconds: float) -> int:
        """The most POSTs received in any window of ``seconds``."""
        times, start, best = sorted(self.post_times), 0, 0
        for end, moment in enumerate(times):
            while times[start] < moment - seconds:
                start += 1
            best = max(best, end - start + 1)
        return best
