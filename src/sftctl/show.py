"""Human-readable views: the preset table and the resolved config with provenance."""

from __future__ import annotations

import sys
from typing import Any

from sftctl.dialect import RENAMED_3_TO_4
from sftctl.presets import PresetInfo
from sftctl.resolve import Overrides, Resolved, resolve
from sftctl.yamlio import dump


def preset_table(items: list[PresetInfo]) -> None:
    """Print the presets as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("preset")
    table.add_column("origin")
    table.add_column("description", overflow="fold")
    for item in items:
        table.add_row(item.name, item.origin, item.description)
    Console(width=max(100, Console().width)).print(table)


def _with_origin(resolved: Resolved) -> list[str]:
    data: dict[str, Any] = resolved.config.model_dump(exclude={"extends", "args"}, exclude_none=True)
    data["args"] = resolved.args
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
    for name in (key, *[old for old, new in RENAMED_3_TO_4.items() if new == key],
                 RENAMED_3_TO_4.get(key, key)):
        if f"{section}.{name}" in origin:
            return origin[f"{section}.{name}"]
    return "default"


def summary_lines(resolved: Resolved) -> list[str]:
    """Effective batch and layout, the figures a reader of a launch script gets wrong."""
    lines = [f"ms-swift target: {resolved.major}.x ({resolved.version_source})",
             f"layout: {resolved.layout.description}"]
    bs = resolved.args.get("per_device_train_batch_size")
    ga = resolved.args.get("gradient_accumulation_steps")
    lay = resolved.layout
    if resolved.effective_batch is not None:
        lines.append(f"effective batch: {bs} per device x {lay.nproc} process(es) x {ga} accumulation "
                     f"x {lay.nnodes} node(s) = {resolved.effective_batch}")
    else:
        lines.append("effective batch: unknown (ms-swift 4.x picks gradient_accumulation_steps itself "
                     "when it is not given; set per_device_train_batch_size and "
                     "gradient_accumulation_steps to fix it)")
    chain = " -> ".join(layer.label for layer in resolved.loaded.layers)
    lines.append(f"files: {chain} (hash {resolved.loaded.digest})")
    return lines


def show_target(target: str, overrides: Overrides) -> None:
    """Print the resolved config, with the file that set each key, then the summary."""
    resolved = resolve(target, overrides)
    out = _with_origin(resolved) + [""] + [f"# {line}" for line in summary_lines(resolved)]
    sys.stdout.write("\n".join(out) + "\n")
