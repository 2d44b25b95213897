"""Commands that size a run before it starts: estimate, plan."""

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from sftctl.cli.boundary import boundary
from sftctl.cli.options import JsonOpt, TargetSpec, target_command


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(estimate)
    app.command()(plan)


SeqLenOpt = Annotated[
    int | None,
    typer.Option(
        "--seq-len",
        min=1,
        help="The longest row of your data, in tokens (default: max_length).",
        show_default=False,
    ),
]


@target_command()
def estimate(spec: TargetSpec, seq_len: SeqLenOpt = None, as_json: JsonOpt = False) -> None:
    """Peak memory per GPU of a run, term by term; host RAM and checkpoint size."""
    from sftctl.cli import views
    from sftctl.config.resolve import resolve
    from sftctl.resources.memory import for_resolved

    with boundary():
        resolved = resolve(spec.one(), spec.overrides())
        result = for_resolved(resolved, seq_len=seq_len)
        launch = resolved.loaded.data.get("launch")
        asked = spec.gpus or (launch.get("gpus") if isinstance(launch, dict) else None)
        if isinstance(asked, str) and asked.strip().lower().startswith("auto"):
            count = len(resolved.config.launch.gpus or [])
            result.notes.append(
                f"--gpus {asked.strip()}: estimated for {count} GPU(s); sftctl run picks free ones at launch"
            )
        if as_json:
            sys.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
            return
        views.estimate_table(result)


def _gib(value: str, hint: str = "--gpu-mem") -> float:
    """'80GiB', '80G', '24 GB', '81920MiB' as bytes (GB read as GiB: cards are sold that way)."""
    text = value.strip().lower().replace(" ", "")
    units = (
        ("tib", 2**40),
        ("tb", 2**40),
        ("gib", 2**30),
        ("gb", 2**30),
        ("g", 2**30),
        ("mib", 2**20),
        ("mb", 2**20),
    )
    for suffix, scale in units:
        if text.endswith(suffix):
            text, factor = text[: -len(suffix)], scale
            break
    else:
        factor = 2**30
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and 0 < number <= 1e6):
        raise typer.BadParameter(f"{value!r} is not a memory size (give e.g. 80GiB)", param_hint=hint)
    return number * factor


def plan(
    model: Annotated[str, typer.Option("--model", help="The model id or local path.")],
    tuner: Annotated[str, typer.Option("--tuner", help="full or lora.")] = "full",
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="auto or auto:N (the free GPUs here), or ids (0,1,2,3).")
    ] = None,
    gpu_count: Annotated[
        int | None,
        typer.Option("--gpu-count", min=1, max=4096, help="Plan for N GPUs of a machine you are not on."),
    ] = None,
    gpu_mem: Annotated[
        str | None, typer.Option("--gpu-mem", help="Memory per GPU, e.g. 80GiB (default: what is free here).")
    ] = None,
    host_mem: Annotated[
        str | None,
        typer.Option(
            "--host-mem", help="RAM of a node (offload lives there; default: this machine's for --gpus)."
        ),
    ] = None,
    max_length: Annotated[
        int, typer.Option("--max-length", min=1, max=1 << 24, help="Tokens per row.")
    ] = 2048,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=1 << 24, help="The effective batch to keep.")
    ] = 32,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the pick as a config.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the -o file if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every layout that fits, why the others do not, and the best pick as a config."""
    from sftctl.cli import views
    from sftctl.resources.planner import plan_config, plan_for

    with boundary():
        if tuner not in ("full", "lora"):
            raise typer.BadParameter(f"{tuner!r}: give full or lora", param_hint="--tuner")
        if gpus is not None and gpu_count is not None:
            raise typer.BadParameter("give --gpus or --gpu-count, not both", param_hint="--gpu-count")
        if output is not None and (output.exists() or output.is_symlink()) and not force:
            raise typer.BadParameter(f"{output} exists; --force overwrites it", param_hint="-o")
        memory = _gib(gpu_mem) if gpu_mem else None
        host = _gib(host_mem, "--host-mem") if host_mem else None
        result, ids = plan_for(model, tuner, gpus, gpu_count, memory, max_length, batch, host)
        if output is not None:
            from sftctl.util.fs import write_new, write_new_or_regular

            try:
                (write_new_or_regular if force else write_new)(output, plan_config(result, ids))
            except FileExistsError:
                raise typer.BadParameter(
                    f"{output} appeared while planning; --force overwrites it", param_hint="-o"
                ) from None
            except OSError as exc:
                raise typer.BadParameter(
                    f"cannot write {output}: {exc.strerror or exc}", param_hint="-o"
                ) from None
        if as_json:
            sys.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
        else:
            views.plan_table(result)
        if output is not None:
            print(f"wrote {output}: sftctl validate {output}; sftctl run {output}", file=sys.stderr)
