"""One error family for everything sftctl reports to a user.

Library code raises these; the CLI's boundary is the only place that prints them.
Problems are built by ``checks.registry.report`` with the id of the rule that found them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70


@dataclass(frozen=True)
class Problem:
    """One finding: which rule found it, where it is, what is wrong, and how to fix it."""

    rule_id: str
    severity: Literal["error", "warning"]
    location: str
    message: str
    fix: str | None = None

    def render(self) -> str:
        """``location: message (fix: ...)`` on one line: user text shows escaped."""
        from sftctl.util.text import one_line

        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return one_line(text)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "id": self.rule_id,
            "severity": self.severity,
            "location": self.location,
            "message": self.message,
            "fix": self.fix,
        }


def errors_of(problems: list[Problem]) -> list[Problem]:
    """The problems that stop a run (warnings do not)."""
    return [p for p in problems if p.severity == "error"]


class SftctlError(Exception):
    """Base of every error sftctl shows to a user; carries its exit code."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        self.problems: list[Problem] = list(problems or [])
        if not message and self.problems:
            message = "\n".join(p.render() for p in self.problems)
        super().__init__(message)


class ConfigError(SftctlError):
    """The config (file, preset, override) is invalid: exit 1."""


class UsageError(SftctlError):
    """The command line itself is wrong, or the ms-swift version is unsupported: exit 2."""

    exit_code = EXIT_USAGE


class RefusedError(SftctlError):
    """`run` refused before launch; nothing was started: exit 1."""

    epilogue = "refused before launch: nothing was started"


class LaunchError(SftctlError):
    """The training command could not be started at all."""
