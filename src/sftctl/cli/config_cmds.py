"""Commands that read configs and never start anything: presets, show, render, validate."""

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from sftctl.cli.boundary import boundary, err
from sftctl.cli.options import JsonOpt, NodeRankOpt, TargetSpec, target_command
from sftctl.errors import EXIT_INVALID, EXIT_USAGE, UsageError, errors_of


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(presets)
    app.command()(render)
    app.command()(validate)
    app.command()(show)
    app.command()(rules)


def presets(as_json: JsonOpt = False) -> None:
    """List the shipped presets and your own (in the user preset folder)."""
    from sftctl.config import presets as p

    with boundary():
        items = p.list_presets()
        if as_json:
            print(json.dumps([i.__dict__ for i in items], indent=2, ensure_ascii=False))
            return
        from sftctl.cli.views import preset_table

        preset_table(items)


def render_text(spec: TargetSpec, fmt: str) -> str:
    """Resolve the target and render it in ``fmt``."""
    from sftctl import render as r
    from sftctl.assets import builtin_paths
    from sftctl.config.resolve import Unpicked, resolve
    from sftctl.launchers import build

    if fmt not in r.FORMATS:
        raise UsageError(f"--format: unknown format '{fmt}' (fix: use one of {', '.join(r.FORMATS)})")
    name = spec.one()
    if Path(name).is_dir():
        # A run folder: the command of its last attempt, as its record holds it.
        from sftctl.config.resolve import resolve_loaded
        from sftctl.runtime.record import loaded_from_record

        resolved = resolve_loaded(
            loaded_from_record(Path(name)), spec.overrides(), picker=Unpicked(refuse=True)
        )
    else:
        resolved = resolve(name, spec.overrides(), picker=Unpicked(refuse=True))
    from sftctl.checks.layout import needs_node_rank
    from sftctl.errors import ConfigError

    missing = needs_node_rank(resolved.config.launch)
    if missing is not None:
        raise ConfigError(problems=[missing])
    return r.text(resolved, build(resolved, builtin_paths(resolved)), fmt)


def _all_nodes(spec: TargetSpec, fmt: str, folder: Path) -> None:
    """One file per node of a multi-node config in ``folder``: node-0.sh, node-1.sh, ..."""
    from sftctl.config.resolve import Unpicked, resolve
    from sftctl.util.fs import write_atomic

    nodes = resolve(spec.one(), spec.overrides(), picker=Unpicked(refuse=True)).config.launch.nnodes
    suffix = {"sh": "sh", "json": "json"}.get(fmt, "yaml")
    for k in range(nodes):
        text = render_text(spec.with_node_rank(k), fmt)
        try:
            write_atomic(folder / f"node-{k}.{suffix}", text, executable=fmt == "sh")
        except OSError as exc:
            raise UsageError(
                f"-o {folder}: cannot write it ({exc.strerror}) (fix: give a folder you can write)"
            ) from None
    print(f"wrote {nodes} file(s) in {folder}: node-0.{suffix} .. node-{nodes - 1}.{suffix}", file=sys.stderr)


@target_command()
def render(
    spec: TargetSpec,
    fmt: Annotated[str, typer.Option("--format", help="sh, json or swift-yaml.")] = "sh",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE.")] = None,
    check: Annotated[
        Path | None,
        typer.Option("--check", help="Exit 1 if FILE differs from the rendering (a CI drift check)."),
    ] = None,
    node_rank: NodeRankOpt = None,
    all_nodes: Annotated[
        bool, typer.Option("--all-nodes", help="Multi-node: write every node's script into -o DIR.")
    ] = False,
) -> None:
    """Print the exact launch command as a bash script, JSON, or an ms-swift YAML."""
    with boundary():
        spec = spec.with_node_rank(node_rank)
        if all_nodes:
            if output is None or node_rank is not None:
                raise UsageError("--all-nodes: give -o DIR (and no --node-rank) (fix: --all-nodes -o nodes/)")
            _all_nodes(spec, fmt, output)
            return
        text = render_text(spec, fmt)
        if check is not None:
            from sftctl.render import check_drift

            check_drift(check, text)
            return
        if output is not None:
            from sftctl.util.fs import write_atomic

            try:
                write_atomic(output, text, executable=fmt == "sh")
            except OSError as exc:
                raise UsageError(
                    f"-o {output}: cannot write it ({exc.strerror}) (fix: give a file path you can write)"
                ) from None
            return
        sys.stdout.write(text)


@target_command(many=True)
def validate(
    spec: TargetSpec,
    host: Annotated[
        bool,
        typer.Option("--host", help="Also check this machine: data and model paths, packages."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check configs; print every problem as 'location: message'. Exit 1 if any is an error."""
    from sftctl.checks.validate import validate_many

    with boundary():
        if not spec.targets:
            raise UsageError("give at least one TARGET: a preset name, --preset NAME or --config FILE")
        results = validate_many(spec.targets, spec.overrides(), host=host)
        bad = {t: errors_of(probs) for t, probs in results.items() if errors_of(probs)}
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
                    # A problem of the file itself is located at the file: name it once.
                    shown = replace(problem, location="") if problem.location == t else problem
                    label = "warning: " if problem.severity == "warning" else ""
                    err(f"{t}: {label}{shown.render()}")
        if bad:
            # One target whose ms-swift version is unsupported: the usage error it would be alone.
            only = next(iter(bad.values())) if len(results) == 1 else []
            raise typer.Exit(EXIT_USAGE if any(p.rule_id == "C006" for p in only) else EXIT_INVALID)


@target_command()
def show(spec: TargetSpec) -> None:
    """Show a resolved config (who set each key, effective batch, layout), or a run's manifest."""
    from sftctl.cli import views

    with boundary():
        name = spec.one()
        if Path(name).is_dir():
            views.show_run(Path(name))
            return
        views.show_target(name, spec.overrides())


def rules(as_json: JsonOpt = False) -> None:
    """List every check sftctl makes, with its id, phase and severity."""
    from sftctl.checks.registry import RULES

    if as_json:
        print(json.dumps([rule.__dict__ for rule in RULES.values()], indent=2))
        return
    for rule in RULES.values():
        print(f"{rule.id}  {rule.phase:<6}  {rule.severity:<7}  {rule.summary}")
