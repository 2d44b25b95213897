"""Commands that start, follow or stop training: run, resume, stop, runs."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from sftctl.cli.boundary import boundary
from sftctl.cli.options import (
    GraceOpt,
    JsonOpt,
    NodeRankOpt,
    QuietOpt,
    TargetSpec,
    seconds_option,
    target_command,
)

WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for GPUs other runs hold instead of refusing.")]
RunDirArg = Annotated[Path, typer.Argument(help="A run folder (or its .sftctl staging folder).")]
OnOomOpt = Annotated[
    str | None,
    typer.Option(
        "--on-oom",
        help="stop (default) or recover: after out-of-memory, resume the last checkpoint "
        "with a smaller batch (same effective batch), then the rest of the ladder.",
    ),
]
AllowShorterOpt = Annotated[bool, typer.Option("--allow-shorter", help="Recovery may shorten max_length.")]
AllowResetOpt = Annotated[
    bool,
    typer.Option(
        "--allow-optimizer-reset",
        help="Recovery may resume the weights with a fresh optimizer where a rung changes "
        "the optimizer state's layout (DDP to ZeRO).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(run)
    app.command("resume")(resume_cmd)
    app.command()(stop)
    app.command()(runs)


@target_command()
def run(
    spec: TargetSpec,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the script; start nothing.")] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; survives the terminal.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue from the last complete checkpoint in output_dir."),
    ] = False,
    grace: GraceOpt = 30.0,
    quiet: QuietOpt = False,
    run_id: Annotated[str | None, typer.Option("--run-id", hidden=True)] = None,
    wait: WaitOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Launch even when the memory estimate says it will not fit.")
    ] = False,
    on_oom: OnOomOpt = None,
    allow_shorter: AllowShorterOpt = False,
    allow_optimizer_reset: AllowResetOpt = False,
    node_rank: NodeRankOpt = None,
    lock_fd: Annotated[int | None, typer.Option("--lock-fd", hidden=True)] = None,
    leases: Annotated[str | None, typer.Option("--leases", hidden=True)] = None,
) -> None:
    """Check the config and this machine, then launch and supervise the training command."""
    with boundary():
        name = spec.one()
        spec = spec.with_sets(*_recovery_sets(on_oom, allow_shorter, allow_optimizer_reset))
        spec = spec.with_node_rank(node_rank)
        from sftctl.runtime import launch

        opts = launch.RunOptions(
            detach=detach,
            resume=resume,
            grace=grace,
            quiet=quiet,
            run_id=run_id,
            lock_fd=lock_fd,
            wait=wait,
            leases=leases,
            force=force,
        )
        if dry_run:
            sys.stdout.write(launch.dry_run_text(name, spec.overrides(), opts))
            return
        code = launch.run(name, spec.overrides(), opts)
    raise typer.Exit(code)


def _recovery_sets(on_oom: str | None, shorter: bool, reset: bool) -> tuple[str, ...]:
    """The recovery flags as the config keys they override (launch.on_oom, ...), so the
    manifest records them and a detached run inherits them."""
    from sftctl.errors import UsageError

    if on_oom is not None and on_oom not in ("stop", "recover"):
        raise UsageError(f"--on-oom: unknown value '{on_oom}' (fix: use stop or recover)")
    sets = [f"launch.on_oom={on_oom}"] if on_oom else []
    sets += ["launch.allow_shorter=true"] if shorter else []
    sets += ["launch.allow_optimizer_reset=true"] if reset else []
    return tuple(sets)


def resume_cmd(
    run_dir: RunDirArg,
    grace: GraceOpt = 30.0,
    quiet: QuietOpt = False,
    wait: WaitOpt = False,
    on_oom: OnOomOpt = None,
    allow_shorter: AllowShorterOpt = False,
    allow_optimizer_reset: AllowResetOpt = False,
    node_rank: NodeRankOpt = None,
) -> None:
    """Continue a recorded run from its last complete checkpoint (after out-of-memory, with
    --on-oom recover: at the ladder's next rung; one node of a multi-node run: --node-rank)."""
    from sftctl.runtime import launch

    with boundary():
        sets = _recovery_sets(on_oom, allow_shorter, allow_optimizer_reset)
        code = launch.resume(run_dir, launch.RunOptions(grace=grace, quiet=quiet, wait=wait), sets, node_rank)
    raise typer.Exit(code)


def stop(
    run_dir: RunDirArg,
    grace: Annotated[
        float,
        typer.Option(
            "--grace", callback=seconds_option, help="Seconds before SIGKILL if the supervisor is gone."
        ),
    ] = 30.0,
) -> None:
    """Stop a running or detached run: SIGTERM to its whole process tree, then SIGKILL."""
    from sftctl.runtime import launch

    with boundary():
        code = launch.stop(run_dir, grace)
    raise typer.Exit(code)


def runs(
    output_dir: Annotated[Path, typer.Argument(help="The output_dir of the runs.")],
    as_json: JsonOpt = False,
) -> None:
    """List the runs sftctl recorded under OUTPUT_DIR."""
    from sftctl.cli import views

    with boundary():
        views.runs_table(output_dir, as_json)
