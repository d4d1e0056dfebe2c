"""What the simulator gets wrong on purpose (faults) and what it has seen (state)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["FaultConfig", "SimulatorState"]


@dataclass(slots=True)
class FaultConfig:
    """Fault probabilities (0..1, drawn per request from a seeded RNG) and enforced limits.

    Generation faults: ``error_429`` (no ``Retry-After``, like the API), ``error_500``,
    ``error_503``, ``drop`` (connection closed before any answer; nothing billed), ``slow``
    (answer after ``slow_seconds``), ``malformed`` (2xx with broken JSON), ``big_json`` (an
    answer padded to ``big_json_bytes``), ``bad_scheme`` (image URL ``file:///etc/passwd``).
    CDN faults: ``cdn_fail`` (500 or a truncated body), ``cdn_not_image``, ``cdn_oversized``
    (``oversized_bytes`` of junk, chunked, with no Content-Length), ``cdn_bomb`` (decompression
    bomb), ``cdn_redirect_loop``.
    Limits: ``rpm_limit`` (429 past that many accepted requests in any ``limit_window``
    seconds, 60 by default), ``credits`` (generations
    before 403 "run out of credits"), ``hourly_limit`` (generations before the hourly 429).
    ``latency``: seconds every generation takes.
    """

    seed: int = 0
    latency: float = 0.0
    error_429: float = 0.0
    error_500: float = 0.0
    error_503: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 5.0
    malformed: float = 0.0
    big_json: float = 0.0
    big_json_bytes: int = 80 * 1024 * 1024
    bad_scheme: float = 0.0
    cdn_fail: float = 0.0
    cdn_not_image: float = 0.0
    cdn_oversized: float = 0.0
    oversized_bytes: int = 60 * 1024 * 1024
    cdn_bomb: float = 0.0
    cdn_redirect_loop: float = 0.0
    rpm_limit: int | None = None
    limit_window: float = 60.0
    credits: int | None = None
    hourly_limit: int | None = None

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
    changed: threading.Condition = field(default_factory=threading.Condition)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)

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

    def over_rate_limit(self) -> bool:
        """True when ``rpm_limit`` requests were already accepted in the last ``limit_window`` s."""
        limit = self.config.rpm_limit
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
        }
