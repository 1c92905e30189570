"""Reading spec files: text checks (size, binary, UTF-8) and a YAML loader that refuses
a key given twice; every problem becomes one UserError line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from testbed.errors import UserError

MAX_SPEC_BYTES = 16 * 1024 * 1024  # specs are a few kB; measured calibrations a few hundred


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping: YAML would silently keep the last one."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: SafeLoader says so below
                continue
            if seen:
                raise DuplicateKeyError(
                    None,
                    None,
                    f"key '{key}' is given twice (first at line {first_line[key] + 1})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_text(path: Path) -> str:
    """The file's text, or one line saying why it is not a readable UTF-8 text file."""
    if path.is_dir():
        raise UserError(
            str(path), "is a directory, not a YAML file", "give the path of a .yaml file"
        )
    if not path.is_file():
        if path.exists():
            raise UserError(
                str(path),
                "not a regular file (a device, pipe or socket)",
                "give the path of a .yaml file",
            )
        raise UserError(
            str(path),
            "file not found",
            "check the path (relative paths in a spec are relative to the spec file)",
        )
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise UserError(
                str(path),
                f"{size} bytes is too big for a spec (the limit is {MAX_SPEC_BYTES} bytes; "
                "specs are a few kilobytes)",
                "check that this is the spec you meant",
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(
            str(path), f"cannot be read ({exc.strerror or exc})", "check the file's permissions"
        ) from None
    if b"\x00" in raw:
        raise UserError(
            str(path),
            f"a binary file (NUL byte at offset {raw.index(0)}), not YAML text",
            "give the YAML spec, not a binary or compressed file",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}",
            f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8 text",
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
    return text.removeprefix("\ufeff")


def read_yaml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    if not text.strip():
        raise UserError(
            str(path), "the file is empty", "write the file's fields as 'key: value' lines"
        )
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"{path}{line}", str(exc.problem), "keep one of the two and delete the other"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UserError(
            where, f"YAML syntax error ({problem})", "fix the syntax at that line"
        ) from None
    except RecursionError:
        raise UserError(
            str(path), "nested too deeply to be a spec", "write a flat spec of 'key: value' pairs"
        ) from None
    if data is None:
        raise UserError(
            str(path), "the file holds only comments", "write the file's fields as 'key: value'"
        )
    if not isinstance(data, dict):
        raise UserError(
            str(path),
            f"the top level is a {type(data).__name__}, not a mapping",
            "write 'key: value' pairs",
        )
    return data
