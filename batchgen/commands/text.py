"""How commands print: lists of job ids cut short, exact money as JSON numbers."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["json_number", "some"]


def some(ids: list[str], shown: int = 10) -> str:
    """The first ``shown`` of ``ids``, and how many more there are."""
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def json_number(value: object) -> float:
    """``json.dumps``'s ``default`` for exact money: the number that prints as the decimal (a
    float's shortest repr). Raises :class:`TypeError` for anything else."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
