"""Which limit explains the refusals: the statistics of :mod:`batchgen.gates.learned`.

Each answered send is a point: its counts (:data:`~batchgen.gates.learned.KINDS`) and whether it
was refused. A limit ``v`` on one count explains the refusals when the points at or above ``v``
are mostly refused and those below mostly admitted (a decision stump), and the refusals above
``v`` are far more than the 429s that come at counts below it (the background: random 429s that
carry no rate information). The most recent points are tried first, in growing spans, so a
limit that drops is seen within a few refusals while one refusal among many does not move it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

__all__ = ["FIT_POINTS", "Fit", "Point", "errors", "near", "refit"]

Point = tuple[tuple[int, int, int, int], bool]
"""A send's counts, one per kind, and whether it was refused."""

NEAR = 0.05  # a refusal within this share (at least 1) under a limit is that limit's, not news
SPANS = (8, 16, 32, 64, 128, 256, 512)  # the newest points a refit looks at, shortest first
FIT_POINTS = SPANS[-1]  # ... and the most of them it looks at
MIN_REFUSED = 5  # refusals above a threshold before it can be a limit
MIN_SHARE = 0.75  # ... and the share of refusals above it
MIN_ADMITTED_BELOW = 2  # ... and admissions below it in the same span
Z_NEEDED = 5.0  # ... and how far (standard deviations) above the background share of 429s
BACKGROUND_SPAN = 256  # answered samples the background share is measured over


@dataclass(slots=True)
class Fit:
    """A limit that explains the refusals: on count ``kind``, at ``limit``, seen in the last
    ``span`` points, ``refused_above`` of which were refused at or above it."""

    kind: int
    limit: int
    span: int
    refused_above: int


def near(limit: int) -> int:
    """The count from which a refusal is put down to ``limit`` (and the jitter of arrivals)."""
    return limit - max(1, math.ceil(limit * NEAR))


def refit(points: list[Point]) -> Fit | None:
    """The threshold that explains the refusals among the most recent ``points`` (counts,
    refused), the shortest span first, if any passes the noise test."""
    longer = points[-BACKGROUND_SPAN:]
    for span in SPANS:
        recent = points[-span:]
        fits = []
        for kind in range(len(recent[0][0]) if recent else 0):
            fit, missed = _stump(recent, kind, longer)
            if fit is not None:
                # (ties, common in a short span where every count grows with time, go to the
                # limit the longer history contradicts least)
                fits.append((missed, errors(longer, kind, fit.limit), kind, fit))
        if fits:
            return min(fits, key=lambda f: f[:3])[3]
        if len(recent) < span:
            break
    return None


def errors(points: list[Point], kind: int, limit: int) -> int:
    """How many of ``points`` a limit ``limit`` on count ``kind`` gets wrong."""
    return sum(1 for counts, refused in points if (counts[kind] >= limit) != refused)


def _stump(
    samples: list[Point],
    kind: int,
    longer: list[Point],
) -> tuple[Fit | None, float]:
    """The threshold ``v`` on count ``kind`` that best tells refused (count >= v) from admitted
    among ``samples``, and its errors; None unless the refusals above it pass the noise test:
    far more than the share of 429s below ``v`` over the ``longer`` span (the background: a
    limit refuses nothing below itself). One sort and one sweep per span: O(n log n)."""
    ordered = sorted((counts[kind], refused) for counts, refused in samples)
    total_refused = sum(refused for _, refused in ordered)
    history = sorted((counts[kind], refused) for counts, refused in longer)
    history_refused = [0]
    for _, refused in history:
        history_refused.append(history_refused[-1] + refused)
    best: Fit | None = None
    best_errors = math.inf
    refused_below = admitted_below = 0
    for i, (value, refused) in enumerate(ordered):
        if refused and value >= 1 and (i == 0 or ordered[i - 1][0] < value):
            above = len(ordered) - i
            refused_above = total_refused - refused_below
            wrong = (above - refused_above) + refused_below
            below = bisect.bisect_left(history, (value, False))
            share = min(0.5, max(0.01, history_refused[below] / below if below else 0.0))
            z = (refused_above - share * above) / math.sqrt(above * share * (1 - share))
            if (
                admitted_below >= MIN_ADMITTED_BELOW  # (a span all refused cannot place a limit)
                and refused_above >= MIN_REFUSED
                and refused_above >= MIN_SHARE * above
                and z >= Z_NEEDED
                and wrong < best_errors
            ):
                best, best_errors = Fit(kind, value, len(samples), refused_above), wrong
        refused_below += refused
        admitted_below += not refused
    return best, best_errors
