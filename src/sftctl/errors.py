"""One error family for everything sftctl reports to a user.

Library code raises these; ``cli.py`` is the only place that prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Problem:
    """One finding: where it is, what is wrong, and how to fix it."""

    location: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f" (fix: {self.hint})"
        return text

    def as_dict(self) -> dict[str, str | None]:
        return {"location": self.location, "message": self.message, "hint": self.hint}


class SftctlError(Exception):
    """Base of every error sftctl shows to a user; carries its exit code."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        self.problems: list[Problem] = list(problems or [])
        if not message and self.problems:
            message = "\n".join(p.render() for p in self.problems)
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(SftctlError):
    """The config (file, preset, override) is invalid: exit 1."""


class UsageError(SftctlError):
    """The command line itself is wrong, or the ms-swift version is unsupported: exit 2."""

    exit_code = EXIT_USAGE


class RefusedError(SftctlError):
    """`run` refused before launch; nothing was started: exit 1."""

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        super().__init__(message, problems)
        self.refusal = True


class LaunchError(SftctlError):
    """The training command could not be started at all."""


@dataclass
class ProblemList:
    """Collects problems so validation reports all of them, not just the first."""

    items: list[Problem] = field(default_factory=list)

    def add(self, location: str, message: str, hint: str | None = None) -> None:
        self.items.append(Problem(location, message, hint))

    def extend(self, problems: list[Problem]) -> None:
        self.items.extend(problems)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(problems=self.items)

    def __bool__(self) -> bool:
        return bool(self.items)
