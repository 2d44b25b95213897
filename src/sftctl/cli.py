"""The sftctl command line: thin commands that wire the library together.

This is the one place errors are shown. ``--help``, ``render`` and ``validate`` must
stay fast: nothing here imports torch, transformers or ms-swift.
"""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

from sftctl.envvars import quiet_pydantic_plugins

quiet_pydantic_plugins()

if TYPE_CHECKING:
    from sftctl.resolve import Overrides
# No `from __future__ import annotations` here: Typer would evaluate every string
# annotation of every command on each start-up.

import typer  # noqa: E402 - after the environment tweak above

from sftctl.errors import EXIT_INVALID, EXIT_USAGE, Problem, SftctlError, UsageError  # noqa: E402

app = typer.Typer(
    name="sftctl",
    help="Validated, reproducible ms-swift SFT runs from YAML presets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

TargetArg = Annotated[
    str | None, typer.Argument(help="A preset name or a path to a YAML config.", show_default=False)
]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="A shipped or user preset name.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A path to a YAML config.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE: an ms-swift argument (learning_rate=1e-4) or a dotted "
        "config path (launch.nproc_per_node=2). Repeatable.",
    ),
]
GpusOpt = Annotated[
    str | None, typer.Option("--gpus", help="GPU ids for CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3.")
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="The model id or local path.")]
VersionOpt = Annotated[
    str | None,
    typer.Option(
        "--swift-version",
        help="Target ms-swift major version (3 or 4); default: the installed one.",
    ),
]


def _color(stream: object) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def _err(text: str) -> None:
    if _color(sys.stderr):
        text = f"\x1b[31m{text}\x1b[0m"
    print(text, file=sys.stderr)


def _fail(exc: SftctlError) -> NoReturn:
    if exc.problems:
        for problem in exc.problems:
            _err(problem.render())
    else:
        _err(f"error: {exc}")
    raise typer.Exit(exc.exit_code)


@contextmanager
def boundary() -> Iterator[None]:
    """Show a library error once, as text, with its exit code; never a traceback."""
    try:
        yield
    except SftctlError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None


def _target(target: str | None, preset: str | None, config: Path | None) -> str:
    given = [t for t in (target, preset, str(config) if config else None) if t]
    if len(given) != 1:
        raise UsageError("give exactly one TARGET: a preset name, --preset NAME or --config FILE")
    if config is not None:
        return str(config)
    return given[0]


def _overrides(
    sets: list[str] | None, gpus: str | None, model: str | None, swift_version: str | None
) -> "Overrides":
    from sftctl.resolve import Overrides

    return Overrides(sets=tuple(sets or ()), gpus=gpus, model=model, swift_version=swift_version)


@app.command()
def presets(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the shipped presets and your own (in the user preset folder)."""
    from sftctl import presets as p

    with boundary():
        items = p.list_presets()
        if as_json:
            print(json.dumps([i.__dict__ for i in items], indent=2, ensure_ascii=False))
            return
        from sftctl.show import preset_table

        preset_table(items)


@app.command()
def render(
    target: TargetArg = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    gpus: GpusOpt = None,
    model: ModelOpt = None,
    swift_version: VersionOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="sh, json or swift-yaml.")] = "sh",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE.")] = None,
    check: Annotated[
        Path | None,
        typer.Option("--check", help="Exit 1 if FILE differs from the rendering (a CI drift check)."),
    ] = None,
) -> None:
    """Print the exact launch command as a bash script, JSON, or an ms-swift YAML."""
    from sftctl import service

    with boundary():
        text = service.render_text(
            _target(target, preset, config), _overrides(set_, gpus, model, swift_version), fmt
        )
        if check is not None:
            service.check_drift(check, text)
            return
        if output is not None:
            service.write_atomic(output, text, executable=fmt == "sh")
            return
        sys.stdout.write(text)


@app.command()
def validate(
    targets: Annotated[
        list[str] | None, typer.Argument(help="Presets or YAML files.", show_default=False)
    ] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    gpus: GpusOpt = None,
    model: ModelOpt = None,
    swift_version: VersionOpt = None,
    host: Annotated[
        bool,
        typer.Option("--host", help="Also check this machine: data and model paths, packages."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check configs; print every problem as 'location: message'. Exit 1 if any."""
    from sftctl import service

    with boundary():
        names = list(targets or []) + ([preset] if preset else []) + ([str(config)] if config else [])
        if not names:
            raise UsageError("give at least one TARGET: a preset name, --preset NAME or --config FILE")
        results = service.validate_many(names, _overrides(set_, gpus, model, swift_version), host=host)
        bad = {t: probs for t, probs in results.items() if probs}
        if as_json:
            print(
                json.dumps(
                    {t: [p.as_dict() for p in probs] for t, probs in results.items()},
                    indent=2,
                    ensure_ascii=False,
                )
            )
        else:
            for t, probs in results.items():
                if not probs:
                    print(f"{t}: ok")
                for problem in probs:
                    _err(f"{t}: {problem.render()}")
        if bad:
            raise typer.Exit(EXIT_INVALID)


@app.command()
def show(
    target: TargetArg = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    gpus: GpusOpt = None,
    model: ModelOpt = None,
    swift_version: VersionOpt = None,
) -> None:
    """Show a resolved config (who set each key, effective batch, layout), or a run's manifest."""
    from sftctl import show as show_mod

    with boundary():
        name = _target(target, preset, config)
        if Path(name).is_dir():
            show_mod.show_run(Path(name))
            return
        show_mod.show_target(name, _overrides(set_, gpus, model, swift_version))


@app.command()
def run(
    target: TargetArg = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    gpus: GpusOpt = None,
    model: ModelOpt = None,
    swift_version: VersionOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the script; start nothing.")] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; survives the terminal.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue from the last complete checkpoint in output_dir."),
    ] = False,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds between forwarding a signal and SIGKILL.")
    ] = 30.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
    run_id: Annotated[str | None, typer.Option("--run-id", hidden=True)] = None,
) -> None:
    """Check the config and this machine, then launch and supervise the training command."""
    from sftctl import service

    with boundary():
        name = _target(target, preset, config)
        ov = _overrides(set_, gpus, model, swift_version)
        if dry_run:
            sys.stdout.write(service.render_text(name, ov, "sh"))
            return
        from sftctl import launch

        opts = launch.RunOptions(detach=detach, resume=resume, grace=grace, quiet=quiet, run_id=run_id)
        code = launch.run(name, ov, opts)
    raise typer.Exit(code)


@app.command("resume")
def resume_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (or its .sftctl staging folder).")],
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds between forwarding a signal and SIGKILL.")
    ] = 30.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
) -> None:
    """Continue a recorded run from its last complete checkpoint."""
    from sftctl import launch

    with boundary():
        code = launch.resume(run_dir, launch.RunOptions(grace=grace, quiet=quiet))
    raise typer.Exit(code)


@app.command()
def stop(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (or its .sftctl staging folder).")],
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds before SIGKILL if the supervisor is gone.")
    ] = 30.0,
) -> None:
    """Stop a running or detached run: SIGTERM to its whole process tree, then SIGKILL."""
    from sftctl import launch

    with boundary():
        code = launch.stop(run_dir, grace)
    raise typer.Exit(code)


@app.command()
def runs(
    output_dir: Annotated[Path, typer.Argument(help="The output_dir of the runs.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the runs sftctl recorded under OUTPUT_DIR."""
    from sftctl import show as show_mod

    with boundary():
        show_mod.runs_table(output_dir, as_json)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SftctlError as exc:  # pragma: no cover - commands catch their own
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


__all__ = ["app", "main", "EXIT_USAGE", "Problem"]
