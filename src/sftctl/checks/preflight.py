"""Refusals before launch, so nothing is lost: checkpoints of another run, a busy
port, a disk too small for the checkpoints the run will keep."""

from __future__ import annotations

import json
import math
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftctl.config.resolve import Resolved
from sftctl.errors import Problem
from sftctl.swift.outputs import checkpoint_dirs

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# AdamW keeps an fp32 master copy and two fp32 moments per trainable parameter.
OPTIMIZER_BYTES = 12
GIB = 1024**3


def human(n: float) -> str:
    """Bytes for a reader: GiB, MiB or KiB."""
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def count_parameters(model_dir: Path) -> int | None:
    """Exact parameter count from the safetensors headers of a local model, else None."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total


def _lora_parameters(model_dir: Path, rank: int) -> int | None:
    """LoRA adapter size on every linear layer of a decoder (all-linear), from config.json."""
    try:
        cfg: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
        h = int(cfg["hidden_size"])
        inter = int(cfg["intermediate_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads", heads))
        hd = int(cfg.get("head_dim") or h // heads)
    except (OSError, KeyError, ValueError, TypeError):
        return None
    dims = [
        (h, heads * hd),
        (h, kv * hd),
        (h, kv * hd),
        (heads * hd, h),
        (h, inter),
        (h, inter),
        (inter, h),
    ]
    return layers * rank * sum(a + b for a, b in dims)


@dataclass(frozen=True)
class DiskPlan:
    """What the kept checkpoints need against what the disk has."""

    per_checkpoint: int | None
    count: int | None
    free: int
    where: Path

    @property
    def needed(self) -> int | None:
        if self.per_checkpoint is None or self.count is None:
            return None
        return self.per_checkpoint * self.count


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_plan(resolved: Resolved, output_dir: Path, model_dir: Path | None) -> DiskPlan:
    """Size of one checkpoint x (save_total_limit + 1), and the free space there."""
    where = _existing_parent(output_dir)
    free = shutil.disk_usage(where).free
    params = count_parameters(model_dir) if model_dir else None
    per: int | None = None
    if params is not None:
        tuner = resolved.args.get("tuner_type", resolved.args.get("train_type", "lora"))
        if tuner == "full":
            dtype = DTYPE_BYTES.get(str(resolved.args.get("torch_dtype")), 4)
            # ZeRO splits the optimizer state over ranks; the files add up to the same total.
            per = params * (dtype + OPTIMIZER_BYTES)
        elif model_dir is not None:
            lora = _lora_parameters(model_dir, int(resolved.args.get("lora_rank") or 8))
            per = None if lora is None else lora * (4 + OPTIMIZER_BYTES)
    limit = resolved.args.get("save_total_limit")
    count = int(limit) + 1 if isinstance(limit, int) and limit > 0 else None
    return DiskPlan(per, count, free, where)


def check_disk(plan: DiskPlan) -> tuple[list[Problem], list[str]]:
    """A refusal when the checkpoints cannot fit; warnings saying what is unknown."""
    warnings: list[str] = []
    if plan.per_checkpoint is None:
        warnings.append(
            "checkpoint size unknown (the model is not a local folder with safetensors): "
            "free disk was not checked"
        )
        return [], warnings
    if plan.count is None:
        warnings.append(
            f"save_total_limit is unset, so every checkpoint is kept "
            f"(about {human(plan.per_checkpoint)} each; {human(plan.free)} free "
            f"on {plan.where})"
        )
        return [], warnings
    needed = plan.needed or 0
    if needed > plan.free:
        return [
            Problem(
                "args.output_dir",
                f"not enough disk: {plan.count} checkpoints (save_total_limit + 1 being written) of about "
                f"{human(plan.per_checkpoint)} each need {human(needed)}, but {plan.where} has "
                f"{human(plan.free)} free",
                "free space, lower save_total_limit, or set output_dir on a larger disk",
            )
        ], warnings
    return [], warnings


def check_output_dir(resolved: Resolved, output_dir: Path, resume: bool) -> list[Problem]:
    """ms-swift with add_version false writes straight into output_dir: refuse to mix
    this run's checkpoints with another run's, unless resuming it."""
    if resolved.args.get("add_version", True) is not False or resume:
        return []
    existing = checkpoint_dirs(output_dir)
    if not existing:
        return []
    return [
        Problem(
            "args.output_dir",
            f"{output_dir} already holds checkpoints of another run "
            f"({', '.join(p.name for p in existing[-3:])}) "
            "and add_version is false, so this run would write over them",
            "choose a new output_dir, drop add_version: false, or continue that run with --resume",
        )
    ]


def check_port(port: int | None, in_use: bool) -> list[Problem]:
    """A fixed master port that is taken makes torchrun fail (or hang) after start-up."""
    if port is None or not in_use:
        return []
    return [
        Problem(
            "launch.master_port",
            f"port {port} is already in use on this machine (another training job?)",
            "pick a free port, e.g. --set launch.master_port=29501, or remove master_port "
            "and sftctl picks a free one",
        )
    ]
