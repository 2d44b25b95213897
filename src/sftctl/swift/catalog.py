"""The ms-swift ``swift sft`` argument catalogs, one data file per major version.

The data is generated from real installs by ``scripts/gen_catalogs.py`` and shipped
as package data; reading it imports nothing from ms-swift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

SUPPORTED_MAJORS = (3, 4)


@dataclass(frozen=True)
class Argument:
    """One ``swift sft`` argument as ms-swift's parser defines it."""

    name: str
    flags: tuple[str, ...]
    type: str
    nargs: str | None
    choices: tuple[str, ...] | None
    default: Any
    help: str
    help_choices: tuple[str, ...] | None = None  # values ms-swift checks in code, not in argparse

    @property
    def is_list(self) -> bool:
        return self.nargs in ("+", "*")


@dataclass(frozen=True)
class Catalog:
    """Every argument of one ms-swift major version."""

    major: int
    swift_version: str
    arguments: dict[str, dict[str, Any]]  # name -> the raw spec; see :meth:`get`

    def get(self, name: str) -> Argument | None:
        spec = self.arguments.get(name)
        return None if spec is None else _argument(name, spec)

    def __contains__(self, name: object) -> bool:
        return name in self.arguments

    def expansions(self, name: str) -> list[str]:
        """Names argparse would accept ``name`` as an abbreviation of."""
        return sorted(a for a in self.arguments if a.startswith(name) and a != name)


def _argument(name: str, spec: dict[str, Any]) -> Argument:
    # Built on demand: a config names a few dozen of the ~330 arguments.
    choices = spec.get("choices")
    return Argument(
        name=name,
        flags=tuple(spec.get("flags", ())),
        type=spec.get("type", "str"),
        nargs=spec.get("nargs"),
        choices=tuple(str(c) for c in choices) if choices else None,
        default=spec.get("default"),
        help=spec.get("help") or "",
        help_choices=tuple(spec["help_choices"]) if spec.get("help_choices") else None,
    )


@cache
def load(major: int) -> Catalog:
    """Load the shipped catalog of ms-swift ``major``."""
    path = resources.files("sftctl.swift.data").joinpath(f"swift{major}.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        from sftctl.errors import UsageError

        raise UsageError(
            f"no usable argument catalog for ms-swift {major}.x ({exc}); "
            "reinstall sftctl (fix: pip install --force-reinstall sftctl)"
        ) from None
    return Catalog(
        major=int(raw["major"]), swift_version=str(raw["swift_version"]), arguments=raw["arguments"]
    )


@cache
def version_diff() -> dict[str, Any]:
    """Names found in only one of the 3.x and 4.x catalogs: renamed, removed, new."""
    path = resources.files("sftctl.swift.data").joinpath("diff_3_4.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
