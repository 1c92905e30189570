"""Turning a pydantic ValidationError into one UserError line: the field path as the user
wrote it, the problem, the value given and a fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from testbed.errors import UserError
from testbed.spec.checks import (
    BOOL_FIX,
    BOOL_PROBLEM,
    BoolGiven,
    FieldProblem,
    StrictModel,
    split_fix,
)

M = TypeVar("M", bound=BaseModel)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "tuple", "none"}


def _model_names(cls: type[BaseModel]) -> set[str]:
    return {cls.__name__}.union(*(_model_names(sub) for sub in cls.__subclasses__()))


def _discriminator_tags(cls: type[BaseModel]) -> set[str]:
    """The `kind: Literal[...]` values of the spec models: pydantic puts the chosen one
    into an error's location (`drift[0].profile.sine.base_ms`), the user never wrote it."""
    tags: set[str] = set()
    kind = cls.model_fields.get("kind")
    if kind is not None and get_origin(kind.annotation) is Literal:
        tags.update(str(v) for v in get_args(kind.annotation))
    for sub in cls.__subclasses__():
        tags |= _discriminator_tags(sub)
    return tags


def _is_union_tag(part: int | str) -> bool:
    """A location part pydantic adds for a member of a union (`str`, `LayoutRef`,
    `function-after[...]`), not a field the user wrote."""
    if not isinstance(part, str):
        return False
    return (
        part in _TYPE_TAGS
        or "[" in part
        or part in _model_names(StrictModel)
        or part in _discriminator_tags(StrictModel)
    )


def _chosen_error(errors: list[Any]) -> Any:
    """The error to show. A value that fits no member of a union gets one error per
    member; the member that got further into the value (a deeper location) is the one
    the user meant, e.g. `layout: {generate: {nodes: 20000}}` is a LayoutRef, not a str."""
    first = errors[0]
    loc = tuple(first["loc"])
    if len(loc) >= 2 and _is_union_tag(loc[-1]):
        parent = loc[:-1]
        for other in errors[1:]:
            other_loc = tuple(other["loc"])
            if other_loc[: len(parent)] == parent and len(other_loc) > len(loc):
                return other
    return first


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if _is_union_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_BOUND_FIX = {
    "greater_than": "give a number above {gt}",
    "greater_than_equal": "give a number of at least {ge}",
    "less_than": "give a number below {lt}",
    "less_than_equal": "give a number of at most {le}",
    "too_short": "give at least {min_length} item(s)",
    "too_long": "give at most {max_length} item(s)",
    "finite_number": "give a finite number (.inf and .nan are not)",
    "literal_error": "use {expected}",
    "string_pattern_mismatch": "use lower-case letters and digits, starting with a letter",
}


def _fix_for(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind in _BOUND_FIX:
        try:
            ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in error["ctx"].items()}
            return _BOUND_FIX[kind].format(**ctx)
        except (KeyError, IndexError, AttributeError):
            pass
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "write it as a mapping of its fields (key: value)"
    if kind == "missing":
        return "add this field"
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind == "value_error":
        return "change the value as the message says"
    if kind.endswith("_parsing") or kind.endswith("_type"):
        return "give a value of the expected type"
    return "change the value to satisfy the rule"


def validate(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = _chosen_error(exc.errors())
        loc = tuple(first["loc"])
        problem = (first.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):  # a model's rule that blames one of its fields
            inner = (
                problem.field if problem.field.startswith("[") or not loc else "." + problem.field
            )
            field = (_field_path(loc) if loc else "") + inner
        else:
            field = _field_path(loc)
        field = field.replace("\n", "\\n")
        message, fix = split_fix(str(first["msg"]).removeprefix("Value error, "))
        got = first.get("input")
        if isinstance(got, BoolGiven):
            message, fix = BOOL_PROBLEM.format(got), BOOL_FIX
        elif first["type"] not in ("missing",) and not isinstance(got, (dict, list)):
            message += f" (got {shown(got)})"
        more = len(exc.errors()) - 1
        if more:
            message += f"; {more} more problem(s) after this one"
        raise UserError(f"{path}: field '{field}'", message, fix or _fix_for(first)) from None
