"""The base of every config section (experiment, model, train, each task's keys): loud on typos and on
values that pydantic's lax mode would quietly turn into something else.

- unknown keys are errors (`extra="forbid"`);
- a number is finite: `.inf` and `.nan` are refused (allow_inf_nan=False) — no key takes infinity;
- a number is not a boolean, and a boolean is true or false: `layers: true` is refused instead of read as
  1, `tie_weights: 1` instead of read as true.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

SEED_MAX = 2**63 - 1  # torch takes seeds up to 2^64 - 1; a signed 64-bit integer keeps them exact everywhere
_UnionType = type(int | None)


def _options(annotation: Any) -> set:
    """The types a field takes: {int, NoneType} for `int | None`."""
    union = typing.get_origin(annotation) in (typing.Union, _UnionType)
    return set(typing.get_args(annotation)) if union else {annotation}


def _mistyped(value: Any, annotation: Any) -> str | None:
    """What is wrong with a boolean given for a number, or a non-boolean for a boolean; None if neither."""
    options = _options(annotation)
    if Any in options:
        return None
    if isinstance(value, bool) and {int, float} & options and bool not in options:
        return f"expected a number, not {str(value).lower()}"
    if options <= {bool, type(None)} and value is not None and not isinstance(value, bool):
        return f"expected true or false, not {value!r}"
    return None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        # a field validator would do this per key, but pydantic allows none on a task's `name` discriminator
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                problem = _mistyped(value, field.annotation) if field is not None else None
                if problem:
                    raise ValueError(f"{key}: {problem}")
        return data
