"""The model ids a job may name, and each one's fields: the four seed models (pydantic,
:mod:`batchgen.models.seed`) first, then every other image model of the API
(:mod:`batchgen.models.catalog`)."""

from __future__ import annotations

import functools
from typing import Any

from batchgen.models import catalog
from batchgen.models.seed import MODELS

__all__ = ["all_models", "fields_of", "is_known"]


@functools.cache
def all_models() -> tuple[str, ...]:
    """Every model id a job may name: the seed models first, then every other image model of
    the API (:mod:`batchgen.models.catalog`)."""
    return (*MODELS, *(m for m in catalog.models() if m not in MODELS))


@functools.cache
def _known_set() -> frozenset[str]:
    return frozenset(all_models())


def is_known(model: Any) -> bool:
    """Whether a job may name ``model`` (any value: a list or a mapping is simply not a model)."""
    return isinstance(model, str) and model in _known_set()


@functools.cache
def fields_of(model: str) -> frozenset[str]:
    """The fields a body of ``model`` may hold."""
    return frozenset(MODELS[model].model_fields if model in MODELS else catalog.models()[model].fields)
