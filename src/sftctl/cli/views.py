"""Human-readable views: the preset table and the resolved config with provenance."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from sftctl.config.presets import PresetInfo
from sftctl.config.resolve import Overrides, Resolved, resolve
from sftctl.config.yamlio import dump
from sftctl.resources.memory import Estimate
from sftctl.resources.params import count, human
from sftctl.resources.planner import Plan
from sftctl.swift.dialect import RENAMED_3_TO_4
from sftctl.util.text import one_line


def preset_table(items: list[PresetInfo]) -> None:
    """Print the presets as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("preset")
    table.add_column("origin")
    table.add_column("description", overflow="fold")
    for item in items:
        table.add_row(one_line(item.name), item.origin, one_line(item.description))
    Console(width=max(100, Console().width)).print(table)


def _with_origin(resolved: Resolved) -> list[str]:
    data = resolved.document()
    origin = resolved.loaded.origin
    lines = []
    for section, value in data.items():
        if isinstance(value, dict):
            if not value:
                continue
            lines.append(f"{section}:")
            for key, sub in value.items():
                text = dump({key: sub}, for_people=True).rstrip("\n").replace("\n", "\n  ")
                src = _origin_of(origin, section, key)
                lines.append(f"  {text}  # {src}")
        else:
            text = dump({section: value}, for_people=True).rstrip("\n")
            lines.append(f"{text}  # {origin.get(section, 'default')}")
    return lines


def _origin_of(origin: dict[str, str], section: str, key: str) -> str:
    """Which layer set ``section.key``, under any version's spelling of the name."""
    for name in (
        key,
        *[old for old, new in RENAMED_3_TO_4.items() if new == key],
        RENAMED_3_TO_4.get(key, key),
    ):
        if f"{section}.{name}" in origin:
            return origin[f"{section}.{name}"]
    return "default"


def summary_lines(resolved: Resolved) -> list[str]:
    """Effective batch and layout, the figures a reader of a launch script gets wrong."""
    lines = [
        f"ms-swift target: {resolved.major}.x ({resolved.version_source})",
        f"layout: {resolved.layout.description}",
    ]
    bs = resolved.args.get("per_device_train_batch_size")
    ga = resolved.args.get("gradient_accumulation_steps")
    lay = resolved.layout
    if resolved.effective_batch is not None:
        lines.append(
            f"effective batch: {bs} per device x {lay.nproc} process(es) x {ga} accumulation "
            f"x {lay.nnodes} node(s) = {resolved.effective_batch}"
        )
    else:
        lines.append(
            "effective batch: unknown (ms-swift 4.x picks gradient_accumulation_steps itself "
            "when it is not given; set per_device_train_batch_size and "
            "gradient_accumulation_steps to fix it)"
        )
    lines += resolved.notes
    chain = " -> ".join(layer.label for layer in resolved.loaded.layers)
    lines.append(f"files: {chain} (hash {resolved.loaded.digest})")
    return lines


def show_target(target: str, overrides: Overrides) -> None:
    """Print the resolved config, with the file that set each key, then the summary."""
    resolved = resolve(target, overrides)
    out = _with_origin(resolved) + [""] + [f"# {line}" for line in summary_lines(resolved)]
    sys.stdout.write("\n".join(out) + "\n")


def _peak_gpu(record: dict[str, Any]) -> str:
    """ms-swift's logged memory(GiB) of rank 0, else NVML's busiest process."""
    logged = record.get("peak_gpu_memory_gib")
    if isinstance(logged, (int, float)) and not isinstance(logged, bool):
        return f"{logged:.1f} GiB"
    sampled = record.get("peak_gpu_bytes")
    return human(sampled) if isinstance(sampled, int) and not isinstance(sampled, bool) else ""


def runs_table(output_dir: Path, as_json: bool) -> None:
    """The runs recorded under ``output_dir``."""
    from sftctl.runtime.record import effective_status, list_runs

    if not output_dir.is_dir():
        from sftctl.checks.registry import report
        from sftctl.errors import ConfigError

        raise ConfigError(
            problems=[
                report(
                    "R002",
                    str(output_dir),
                    "no such folder",
                    "give the output_dir of the runs (e.g. output/cpu-smoke), as the config sets it",
                )
            ]
        )
    broken: list[str] = []
    rows = list_runs(output_dir, broken)
    for line in broken:
        print(f"sftctl: skipped {one_line(line)}", file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0))
    columns = (
        "run",
        "id",
        "target",
        "status",
        "started",
        "wall s",
        "loss",
        "peak RSS",
        "peak GPU",
        "last checkpoint",
    )
    for col in columns:
        # Folder names and ids are copied into other commands: never broken across lines.
        table.add_column(col, overflow="fold", no_wrap=col not in ("target",))
    for r in rows:
        loss = (
            f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}"
            if r.get("first_loss") is not None and r.get("last_loss") is not None
            else ""
        )
        folder = r.get("run_dir") or r.get("staging_dir") or ""
        status = effective_status(r)
        if r.get("exit_code") not in (None, 0):
            status += f" (exit {r['exit_code']})"
        node_status = r.get("node_status")
        if isinstance(node_status, dict) and len(node_status) > 0:
            status += " [" + ", ".join(f"node {k}: {v}" for k, v in sorted(node_status.items())) + "]"
        attempts = r.get("attempts")
        if isinstance(attempts, list) and len(attempts) > 1:
            status += f" ({len(attempts)} attempts)"
        cells = [
            Path(folder).name,
            # Runs of one add_version: false folder share it; the id tells them apart.
            str(r.get("run_id", "")),
            str(r.get("target", "")),
            status,
            str(r.get("started_at", ""))[:19].replace("T", " "),
            str(r.get("wall_seconds", "")),
            loss,
            human(r["peak_rss_bytes"]) if isinstance(r.get("peak_rss_bytes"), int) else "",
            _peak_gpu(r),
            Path(str(r.get("last_checkpoint") or "")).name,
        ]
        table.add_row(*(one_line(c) for c in cells))  # a record's text never drives the terminal
    Console(width=max(140, Console().width)).print(table)
    if not rows:
        print(f"no runs recorded under {output_dir}")


def show_run(folder: Path) -> None:
    """A run's manifest, for a reader."""
    from sftctl.runtime.record import effective_status, read_manifest

    path, data = read_manifest(folder)
    keys = (
        "target",
        "preset",
        "preset_hash",
        "status",
        "exit_code",
        "signal",
        "started_at",
        "ended_at",
        "wall_seconds",
        "host",
        "gpus",
        "layout",
        "run_dir",
        "log",
        "last_checkpoint",
        "first_loss",
        "last_loss",
        "peak_rss_bytes",
        "peak_process_rss_bytes",
        "peak_gpu_memory_gib",
        "peak_gpu_bytes",
        "estimate",
        "versions",
    )
    brief = {k: data[k] for k in keys if data.get(k) is not None}
    brief["status"] = effective_status(data)
    attempts = data.get("attempts") or []
    out = [
        f"# manifest: {path}",
        dump(brief, for_people=True).rstrip("\n"),
    ]
    if attempts:
        from sftctl.runtime.recover import history

        out += ["attempts:", *history(attempts)]
    out += [
        "env:",
        *[f"  {k}={v}" for k, v in (data.get("env") or {}).items()],
        "argv:",
        "  " + " ".join(shlex.quote(a) for a in data.get("argv") or []),
        "config:",
        *["  " + line for line in str(data.get("config_yaml") or "").splitlines()],
    ]
    sys.stdout.write("\n".join(out) + "\n")


def estimate_table(result: Estimate) -> None:
    """An estimate as a table a person can check, term by term."""
    from rich.console import Console
    from rich.table import Table

    where = "process" if result.quantity.startswith("RssAnon") else "GPU"
    print(f"{one_line(result.model)}: {count(result.params)} parameters, {count(result.trainable)} trained")
    print(f"  shape from {one_line(result.shape_source)}")
    print(f"  layout: {result.layout}")
    print(f"  predicts: {result.quantity}")
    table = Table(box=None, header_style="bold", padding=(0, 2, 0, 0))
    table.add_column("term")
    table.add_column("memory", justify="right")
    table.add_column("why")
    for term in result.terms:
        table.add_row(term.name, human(term.bytes) if term.bytes else "0", one_line(term.why))
    table.add_row(f"[bold]peak per {where}[/bold]", f"[bold]{human(result.peak_bytes)}[/bold]", "")
    Console(width=max(120, Console().width)).print(table)
    print(f"host RAM: {human(result.host_bytes)} for the node's training processes")
    what = "weights or adapters, and the optimizer state"
    print(f"checkpoint: {human(result.checkpoint_bytes)} on disk each ({what})")
    for note in result.notes:
        print(f"note: {one_line(note)}")


def plan_table(result: Plan) -> None:
    """Every layout with its estimated peak, or why it does not fit; the pick first."""
    from rich.console import Console
    from rich.table import Table

    print(
        f"{one_line(result.model)} {result.tuner} on {result.gpus} x {result.gpu_gib} GiB, "
        f"max_length {result.max_length}, effective batch {result.effective_batch}"
    )
    table = Table(box=None, header_style="bold", padding=(0, 2, 0, 0))
    for col in ("layout", "fits", "batch x accum", "GiB per GPU*", "comm GiB/step", "why"):
        table.add_column(col)
    ordered = sorted(result.options, key=lambda o: (not o.fits, o.rank() if o.fits else (9, 9, 9, 0.0, 0)))
    for o in ordered:
        mark = "pick" if o is result.pick else ("yes" if o.fits else "no")
        shape = f"{o.per_device_batch} x {o.grad_accum}" if o.fits else "-"
        peak = "-" if o.peak_gib is None else f"{o.peak_gib:.1f}"
        comm = f"{o.comm_gib:.1f}" if o.fits else "-"
        table.add_row(o.layout.name, mark, shape, peak, comm, "" if o.fits else one_line(o.why))
    Console(width=max(140, Console().width)).print(table)
    print("* the estimated peak plus the CUDA context (0.5 GiB), as nvidia-smi shows a run")
    if result.pick is None:
        print("no layout fits: more or larger GPUs, a shorter max_length, or LoRA")
    else:
        print(f"pick: {result.pick.layout.name} (no offload before offload, full precision before 4-bit,")
        print("  LoRA: a whole base per GPU before ZeRO-3; data parallel before device_map, then")
        print("  fewer bytes communicated, then a larger batch)")
    print(f"learning rate: {result.learning_rate:g} ({result.learning_rate_why})")
    for note in result.notes:
        print(f"note: {note}")
