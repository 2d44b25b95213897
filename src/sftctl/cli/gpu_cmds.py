"""`sftctl gpus`: what NVML says about this machine's GPUs, and which runs lease them."""

import json
import os
import sys
from typing import Any

import typer

from sftctl.cli.boundary import boundary
from sftctl.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(gpus)


def gpus(as_json: JsonOpt = False) -> None:
    """List this machine's GPUs: memory, utilization, processes and their users (NVML)."""
    from sftctl.resources.gpus import host_view
    from sftctl.resources.leases import LeaseDirError, describe_holder, holders
    from sftctl.resources.nvml import inventory, visible
    from sftctl.resources.params import human
    from sftctl.util.text import one_line

    with boundary():
        # NVML is asked once: everything, then what this environment's CUDA_VISIBLE_DEVICES shows.
        everything = inventory({k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"})
        found = visible(everything, os.environ)
        shown = {g.index for g in found.gpus}
        hidden = [g.index for g in everything.gpus if not g.mig and g.index not in shown]
        limit = one_line(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        if hidden and found.gpus:
            print(f"sftctl: CUDA_VISIBLE_DEVICES={limit!r} hides GPU(s) {', '.join(hidden)}", file=sys.stderr)
        leased: dict[int, dict[str, Any]] = {}
        if found.gpus:
            try:
                # Leases are by physical GPU, among the ones this environment may use.
                leased = holders(os.environ, host_view(os.environ, everything))
            except LeaseDirError as exc:
                print(f"sftctl: leases unknown: {one_line(str(exc))} (SFTCTL_LEASE_DIR)", file=sys.stderr)

        def lease_of(index: str) -> dict[str, Any] | None:
            return None if ":" in index else leased.get(int(index))

        if as_json:
            print(json.dumps([{**g.as_dict(), "lease": lease_of(g.index)} for g in found.gpus], indent=2))
            return
        if not found.gpus:
            if everything.gpus:
                print(
                    f"no GPU visible: CUDA_VISIBLE_DEVICES={limit!r} hides all {len(hidden)}", file=sys.stderr
                )
            else:
                why = f" ({found.note})" if found.note else ""
                print(f"no NVIDIA GPU here{why}", file=sys.stderr)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for col in ("gpu", "name", "uuid", "memory used / total", "util", "processes", "leased by"):
            table.add_column(col, no_wrap=col in ("gpu", "uuid"))
        for g in found.gpus:
            procs = ", ".join(f"{p.pid} {p.user or '?'}" for p in g.processes) or "-"
            util = "-" if g.utilization is None else f"{g.utilization}%"
            memory = f"{human(g.used_bytes)} / {human(g.total_bytes)}"
            who = lease_of(g.index)
            lease = "-" if who is None else describe_holder(who)
            cells = (g.index, g.name, g.uuid, memory, util, procs, lease)
            table.add_row(*(one_line(c) for c in cells))
        Console(width=max(120, Console().width)).print(table)
