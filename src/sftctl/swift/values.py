"""Argument values: coercion by the catalog's type, ``--set`` parsing, and tokens.

A value stays as the user wrote it wherever ms-swift would read it the same way:
``1e-4`` renders as ``1e-4`` and ``eval_strategy: no`` stays the string ``no``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sftctl.config.yamlio import WrittenFloat, parse_scalar
from sftctl.swift.catalog import Argument

# What transformers' string_to_bool accepts, in either case.
_TRUE = {"true", "yes", "t", "y", "1"}
_FALSE = {"false", "no", "f", "n", "0"}
_FLOW_LIST = re.compile(r"^\[.*\]$", re.S)


class ValueProblem(Exception):
    """A value that does not fit its argument; message and fix."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _describe(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)


def _int_example(arg: Argument) -> int:
    return arg.default if isinstance(arg.default, int) and not isinstance(arg.default, bool) else 1


def _float_example(arg: Argument) -> str:
    """An example value for a float argument: its own default where it has one."""
    default = arg.default
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default:
        return f"{default:g}"
    return "1e-4" if "rate" in arg.name else "1.0"


def _scalar(arg: Argument, value: Any) -> Any:
    kind = arg.type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).lower() in _TRUE | _FALSE:
            return str(value).lower() in _TRUE
        raise ValueProblem(
            f"{arg.name} must be a boolean, got {_describe(value)}",
            f"write {arg.name}: true or false",
        )
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
                return int(value)
            raise ValueProblem(
                f"{arg.name} must be an integer, got {_describe(value)}",
                f"write a whole number, e.g. {arg.name}: {_int_example(arg)}",
            )
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ValueProblem(
                    f"{arg.name} must be an integer, got {_describe(value)}",
                    f"write a whole number, e.g. {arg.name}: {_int_example(arg)}",
                ) from None
        return value
    if kind == "float":
        if isinstance(value, bool):
            raise ValueProblem(
                f"{arg.name} must be a number, got {_describe(value)}",
                f"write e.g. {arg.name}: {_float_example(arg)}",
            )
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            try:
                return WrittenFloat(value.strip())
            except ValueError:
                pass
        raise ValueProblem(
            f"{arg.name} must be a number, got {_describe(value)}",
            f"write e.g. {arg.name}: {_float_example(arg)}",
        )
    if kind == "json":
        if isinstance(value, (dict, list)):
            return value
        if isinstance(value, str):
            return value
        raise ValueProblem(
            f"{arg.name} must be a mapping or a JSON string, got {_describe(value)}",
            f"write e.g. {arg.name}: {{key: value}}",
        )
    # str: scalars are kept as text; ms-swift parses the token itself.
    if isinstance(value, (dict, list)):
        raise ValueProblem(
            f"{arg.name} takes one text value, got {_describe(value)}",
            f"write a single value for {arg.name}",
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def coerce(arg: Argument, value: Any) -> Any:
    """Check ``value`` against ``arg``'s type, nargs and choices; return it normalised."""
    if value is None:
        return None
    if arg.is_list:
        items = value if isinstance(value, list) else [value]
        if not items and arg.nargs == "+":
            raise ValueProblem(f"{arg.name} needs at least one value", f"write e.g. {arg.name}: [value]")
        out = [_scalar(arg, item) for item in items]
    else:
        if isinstance(value, list) and arg.type != "json":
            raise ValueProblem(
                f"{arg.name} takes one value, got a list {_describe(value)}",
                f"write a single value for {arg.name}",
            )
        out = _scalar(arg, value)
    if arg.choices:
        for item in out if isinstance(out, list) else [out]:
            if token(item) not in arg.choices:
                raise ValueProblem(
                    f"{arg.name} must be one of {', '.join(arg.choices)}; got {_describe(item)}",
                    f"pick one of: {', '.join(arg.choices)}",
                )
    return out


def parse_set_value(arg: Argument | None, text: str) -> Any:
    """Parse the VALUE of ``--set KEY=VALUE`` by the argument's catalog type. ``null``
    removes the value (the inherited one too), whatever the type."""
    if text.strip() == "null":
        return None
    if arg is None:
        return parse_scalar(text)
    if _FLOW_LIST.match(text.strip()) and (arg.is_list or arg.type == "json"):
        parsed = parse_scalar(text)
        if isinstance(parsed, list):
            return [str(item) if arg.type == "str" and not isinstance(item, str) else item for item in parsed]
    if arg.type == "str":
        return text
    if arg.type == "json":
        try:
            return json.loads(text)
        except ValueError:
            return parse_scalar(text) if text.strip().startswith("{") else text
    return parse_scalar(text)


def as_texts(value: Any) -> list[str]:
    """A scalar or list argument as a list of strings; None as no value."""
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def token(value: Any) -> str:
    """The command-line token of one scalar value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, WrittenFloat):
        return value.text
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def tokens(value: Any, is_list: bool) -> list[str]:
    """The command-line tokens after one ``--flag``; a list argument takes several."""
    if is_list and isinstance(value, list):
        return [token(item) for item in value]
    return [token(value)]
