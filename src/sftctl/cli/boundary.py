"""The one place sftctl shows errors: once, as text, with the error's exit code."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from sftctl.errors import RefusedError, SftctlError


def color(stream: object) -> bool:
    """Colour only on a terminal, and never under NO_COLOR."""
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def err(text: str) -> None:
    """One line (or block) to stderr, red on a terminal."""
    if color(sys.stderr):
        text = f"\x1b[31m{text}\x1b[0m"
    print(text, file=sys.stderr)


def say(text: str) -> None:
    """A status message to stderr, kept out of what a command prints on stdout."""
    print(text, file=sys.stderr, flush=True)


def fail(exc: SftctlError) -> NoReturn:
    """Show ``exc`` and exit with its code."""
    if exc.problems:
        for problem in exc.problems:
            err(problem.render())
    else:
        err(f"error: {exc}")
    if isinstance(exc, RefusedError):
        err(exc.epilogue)
    raise typer.Exit(exc.exit_code)


@contextmanager
def boundary() -> Iterator[None]:
    """Show a library error once, as text, with its exit code; never a traceback."""
    try:
        yield
    except SftctlError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err("interrupted")
        raise typer.Exit(130) from None
