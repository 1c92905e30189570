"""Rules shared by every spec model: no booleans for numbers, finite numbers, sane ranges.

A message that carries its own fix writes it after ". Fix: "; the loader splits it off, so
the line names the limit, why it exists and what to do.
"""

from __future__ import annotations

import math
from typing import Any, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

FIX_MARK = ". Fix: "


def _leaves(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    if not args:
        return [annotation]
    return [leaf for arg in args for leaf in _leaves(arg)]


def wants_number(annotation: Any) -> bool:
    """The type holds int or float somewhere, and never bool (nor Any/object)."""
    leaves = _leaves(annotation)
    if any(leaf is bool or leaf is Any or leaf is object for leaf in leaves):
        return False
    return any(leaf is int or leaf is float for leaf in leaves)


def holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list | tuple):
        return any(holds_bool(v) for v in value)
    if isinstance(value, dict):
        return any(holds_bool(k) or holds_bool(v) for k, v in value.items())
    return False


class BoolGiven:
    """A true/false found where a number belongs: no number type accepts it, so pydantic
    reports it at the exact field (and list index), and the loader says what it was."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"

    def __hash__(self) -> int:
        return hash(("BoolGiven", self.value))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoolGiven) and other.value == self.value


BOOL_PROBLEM = "a boolean ({}) where a number belongs"
BOOL_FIX = "write a number (YAML reads true/false, yes/no and on/off as booleans)"


def _mark(value: Any) -> Any:
    if isinstance(value, bool):
        return BoolGiven(value)
    if isinstance(value, list | tuple):
        return [_mark(v) for v in value]
    if isinstance(value, dict):
        return {_mark(k): _mark(v) for k, v in value.items()}
    return value


class StrictModel(BaseModel):
    """Unknown fields, NaN/inf and true/false where a number belongs are all refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out: dict[Any, Any] | None = None
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None or not holds_bool(value) or not wants_number(field.annotation):
                continue
            out = dict(data) if out is None else out
            out[name] = _mark(value)
        return data if out is None else out


class FieldProblem(ValueError):
    """A rule of a whole model that one of its fields breaks: `field` is its dotted path
    below the model (e.g. 'layers[2].flavor'), so the loader names that field, not the
    model it sits in."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _number(value: float) -> str:
    """A value as the user wrote it: 1000000, not 1e+06 (but 1e+30 for a 31-digit int)."""
    if isinstance(value, int) and abs(value) < 10**16:
        return str(value)
    return f"{value:g}"


def limit(
    low: float | None = None,
    high: float | None = None,
    *,
    why: str,
    unit: str = "",
) -> AfterValidator:
    """A range check whose message names the limit and why it exists."""

    def check(value: float) -> float:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"not a finite number{FIX_MARK}give a finite number")
        if low is not None and value < low:
            raise ValueError(
                f"{_number(value)}{unit} is below the minimum {_number(low)}{unit} ({why})"
                f"{FIX_MARK}use at least {_number(low)}{unit}"
            )
        if high is not None and value > high:
            raise ValueError(
                f"{_number(value)}{unit} is above the maximum {_number(high)}{unit} ({why})"
                f"{FIX_MARK}use at most {_number(high)}{unit}"
            )
        return value

    return AfterValidator(check)


def unique_items(what: str) -> AfterValidator:
    """A list whose items must not repeat (a node listed twice is a typo, not a weight)."""

    def check(value: list[Any]) -> list[Any]:
        seen: set[Any] = set()
        repeated = [v for v in value if v in seen or seen.add(v)]  # type: ignore[func-returns-value]
        if repeated:
            raise ValueError(
                f"{what} {sorted(set(map(str, repeated)))} listed more than once"
                f"{FIX_MARK}list each one once"
            )
        return value

    return AfterValidator(check)


def split_fix(message: str) -> tuple[str, str | None]:
    problem, mark, fix = message.partition(FIX_MARK)
    return (problem, fix) if mark else (message, None)
