"""Money, in exact decimals: what the API says a request cost, summed without rounding.

The API reports each request's cost in ``x-aimlapi-usd-spent`` (USD) and
``x-aimlapi-credits-used`` (credits) headers (NOTES.md, "Request tracing and cost headers").
Their text is read as a :class:`~decimal.Decimal`, kept to :data:`PLACES` decimal places, and
stored and summed as whole units of ``10**-PLACES`` (SQLite sums integers exactly), so every
screen that shows a sum (``run``'s summary, ``status``, the report, metrics, ``--summary-json``)
shows the same figure, rounded once, to the cent, half up, by :func:`usd`.

Example::

    cost = Spend.of("0.045", "2646")          # Spend(usd=Decimal('0.045'), credits=Decimal('2646'))
    total = cost + cost                        # Spend(usd=Decimal('0.090'), ...)
    usd(total.usd)                             # '$0.09'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["MAX_COST", "PLACES", "Spend", "from_units", "parse_cost", "to_units", "usd"]

PLACES = 9
"""Decimal places kept of a cost header (a value with more is rounded half-even to these)."""
MAX_COST = Decimal(10) ** 9
"""A header above this (USD or credits, one request) is not a price: it is read as unreadable.
In units of ``10**-PLACES`` it stays under 10**18, within SQLite's 64-bit integers."""
_QUANTUM = Decimal(1).scaleb(-PLACES)
_ZERO = Decimal(0)
_CENTS = Decimal("0.01")


def parse_cost(text: str | None) -> Decimal | None:
    """A cost header's value (``"0.045"``) as an exact decimal, or None when it is absent or not
    a finite number from 0 to :data:`MAX_COST` (``abc``, ``NaN``, ``-5``, ``1e400``)."""
    if text is None or len(text) > 64:  # noqa: PLR2004 - a price is a short number
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value > MAX_COST:
        return None
    return value.quantize(_QUANTUM) if value.as_tuple().exponent < -PLACES else value  # type: ignore[operator]


def to_units(value: Decimal) -> int:
    """``value`` in whole units of ``10**-PLACES`` (how the state database keeps money)."""
    return int(value.scaleb(PLACES).to_integral_value())


def from_units(units: int) -> Decimal:
    """The decimal of :func:`to_units`' whole units, without trailing zeros beyond cents."""
    value = Decimal(units).scaleb(-PLACES).normalize()
    return value if value.as_tuple().exponent <= _CENTS.as_tuple().exponent else value.quantize(_CENTS)  # type: ignore[operator]


def usd(value: Decimal, *, exact: bool = False) -> str:
    """A USD amount as every screen shows it: ``$1.80`` for 1.795 (to the cent, half up); with
    ``exact``, every digit past the cents too (``$1.795``), where rounding would mislead (a
    budget "spent $0.60 of the $0.60" when $0.595 was)."""
    cents = value.quantize(_CENTS, rounding=ROUND_HALF_UP)
    return f"${value.normalize() if exact and cents != value else cents}"


@dataclass(frozen=True, slots=True)
class Spend:
    """Money: USD and AIML API credits, exact decimals. ``missing``: the currencies an answer's
    headers did not say (counted as 0 here; a budget in that currency cannot trust it)."""

    usd: Decimal = _ZERO
    credits: Decimal = _ZERO
    missing: tuple[str, ...] = field(default=(), compare=False)

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.usd + other.usd, self.credits + other.credits)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(self.usd - other.usd, self.credits - other.credits)

    def __bool__(self) -> bool:
        return bool(self.usd or self.credits)

    @staticmethod
    def of(usd_spent: str | None, credits_used: str | None) -> Spend | None:
        """The cost the ``x-aimlapi-usd-spent`` / ``x-aimlapi-credits-used`` header values say;
        None when neither is readable (see :func:`parse_cost`)."""
        usd_value, credits = parse_cost(usd_spent), parse_cost(credits_used)
        if usd_value is None and credits is None:
            return None
        missing = ("usd",) * (usd_value is None) + ("credits",) * (credits is None)
        return Spend(
            usd_value if usd_value is not None else _ZERO, credits if credits is not None else _ZERO, missing
        )

    def describe(self) -> str:
        """``$1.80 / 2646 credits``."""
        return f"{usd(self.usd)} / {self.credits.quantize(Decimal(1), rounding=ROUND_HALF_UP)} credits"
