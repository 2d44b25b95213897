"""Compare sftctl's memory estimate with published measurements (tests/data/memory_reference.json).

Prints one row per entry: the estimate, the published value and the signed error. Run with
the project's environment: python scripts/memory_reference.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sftctl.config.schema import Launch
from sftctl.resources import memory, shapes
from sftctl.resources.layout import plan

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "memory_reference.json"
CONTEXT_GIB = 0.5  # what nvidia-smi adds to max_memory_reserved: the CUDA context


def estimate_gib(entry: dict[str, Any]) -> float:
    """The estimate for one reference entry, in the quantity the entry reports."""
    model = entry["model"]
    shape = (
        shapes.from_config(entry["config"], model, "reference entry")
        if "config" in entry
        else shapes.find(model, env={"HOME": "/nonexistent"})
    )
    gpus, nproc = entry["gpus"], entry["nproc_per_node"]
    summed = entry["quantity_kind"] == "reserved_sum"
    # A device_map process's sum over its GPUs: the process as if on one device, plus the
    # workspaces of its other GPUs.
    layout = plan(Launch(gpus=list(range(nproc if summed else gpus)), nproc_per_node=nproc), entry["args"])
    est = memory.estimate(
        shape, entry["args"], layout, seq_len=entry["longest_row"], label_tokens=entry["label_tokens"]
    )
    gib = float(est.peak_bytes) / 2**30
    if summed:
        gib += (gpus // nproc - 1) * memory.FIXED_BYTES / 2**30
    return gib + CONTEXT_GIB if entry["quantity_kind"] == "nvidia-smi" else gib


def main() -> int:
    entries = json.loads(REFERENCE.read_text(encoding="utf-8"))["entries"]
    print(f"{'entry':58s} {'estimate':>9s} {'published':>9s} {'error':>7s}")
    errors = []
    for entry in entries:
        got = estimate_gib(entry)
        error = (got / entry["memory_gib"] - 1) * 100
        scope = " (out of scope)" if entry.get("out_of_scope") else ""
        if not scope and entry["measured"]:
            errors.append(abs(error))
        print(f"{entry['id'][:58]:58s} {got:9.1f} {entry['memory_gib']:9.1f} {error:+6.1f}%{scope}")
    within = sum(e <= 20 for e in errors)
    print(f"in scope and measured: {within} of {len(errors)} within 20%; largest error {max(errors):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
