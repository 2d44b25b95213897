"""The sftctl command line: thin commands that wire the library together.

Commands live in one module per group (``config_cmds``: presets, show, render,
validate; ``run_cmds``: run, resume, stop, runs); ``boundary`` is the one place errors
are shown. ``--help``, ``render`` and ``validate`` must stay fast: nothing here
imports torch, transformers or ms-swift.
"""

import os
import sys
from typing import Annotated

from sftctl.util.envvars import quiet_pydantic_plugins

quiet_pydantic_plugins()

import typer  # noqa: E402 - after the environment tweak above

from sftctl.cli import config_cmds, gpu_cmds, plan_cmds, run_cmds  # noqa: E402
from sftctl.errors import SftctlError  # noqa: E402

app = typer.Typer(
    name="sftctl",
    help="Validated, reproducible ms-swift SFT runs from YAML presets.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from sftctl import __version__

        print(f"sftctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print sftctl's version and exit."),
    ] = False,
) -> None:
    """Validated, reproducible ms-swift SFT runs from YAML presets."""


config_cmds.register(app)
run_cmds.register(app)
gpu_cmds.register(app)
plan_cmds.register(app)


# Commands that supervise or signal training keep running when their reader goes away
# (their output is then dropped); the others end quietly, as `yes | head` does.
_OUTLIVE_THE_PIPE = ("run", "resume", "stop")


def main() -> None:
    """Console-script entry point: a bug in sftctl is one line and a log, never a traceback."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    if command not in _OUTLIVE_THE_PIPE:
        import signal

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        app(standalone_mode=True)
    except SftctlError as exc:  # pragma: no cover - commands catch their own
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        sys.exit(_internal_error(exc))


def _internal_error(exc: Exception) -> int:
    import tempfile
    import time
    import traceback
    from pathlib import Path

    from sftctl.errors import EXIT_INTERNAL

    text = "".join(traceback.format_exception(exc))
    log = Path(tempfile.gettempdir()) / f"sftctl-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        # A new file only: a name planted in a shared /tmp (a link) is never written through.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        where = f"; details in {log}"
    except OSError:
        where = ""
    print(f"sftctl: internal error: {type(exc).__name__}: {exc}{where}".replace("\n", " "), file=sys.stderr)
    return EXIT_INTERNAL


__all__ = ["app", "main"]
