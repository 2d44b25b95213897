"""Which ms-swift major version a run targets, and which one is installed."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from sftctl.swift.catalog import SUPPORTED_MAJORS

DEFAULT_MAJOR = 4


class VersionProblem(ValueError):
    """A version text that names no supported ms-swift major version."""


def parse_major(value: object) -> int:
    """The ms-swift major version in ``value`` ('4', '4.6.0', 3); VersionProblem if unsupported."""
    text = str(value).strip().lstrip("v")
    head = text.split(".", 1)[0]
    if not head.isdigit():
        raise VersionProblem(f"'{value}' is not an ms-swift version")
    major = int(head)
    if major not in SUPPORTED_MAJORS:
        extra = " (its flag names differ: sft_type)" if major < 3 else ""
        raise VersionProblem(
            f"ms-swift {major}.x is not supported{extra}; "
            f"sftctl targets {' and '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}"
        )
    return major


def installed_swift_version() -> str | None:
    """The ms-swift version installed beside sftctl, from its dist-info folder's name.

    Nothing is imported, and sys.path is listed directly: importlib.metadata would read
    every installed distribution's metadata (about 20 ms in an ms-swift environment)."""
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                for item in it:
                    name = item.name
                    if name.startswith("ms_swift-") and name.endswith(".dist-info"):
                        return name[len("ms_swift-") : -len(".dist-info")]
        except OSError:
            continue
    return None


def target_major(cli: str | None, env: Mapping[str, str]) -> tuple[int, str] | None:
    """--swift-version, else SFTCTL_SWIFT_VERSION: the user's choice for this call, or None.

    Raises VersionProblem (with the source named) when that choice is unsupported."""
    for source, value in (
        ("--swift-version", cli),
        ("SFTCTL_SWIFT_VERSION", env.get("SFTCTL_SWIFT_VERSION")),
    ):
        if value:
            try:
                return parse_major(value), source
            except VersionProblem as exc:
                raise VersionProblem(f"{source}: {exc}") from None
    return None


def fallback_major() -> tuple[int, str]:
    """The installed ms-swift's major version, else the default."""
    installed = installed_swift_version()
    if installed:
        try:
            return parse_major(installed), f"installed ms-swift {installed}"
        except VersionProblem:
            pass
    return DEFAULT_MAJOR, "default"
