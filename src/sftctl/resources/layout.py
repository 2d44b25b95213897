"""GPU layout: which GPUs each process sees and which parallel mode ms-swift picks.

ms-swift (swift/utils/env.py, arguments/sft_args.py) turns on device_map (model
parallel) when visible GPUs / local world size >= 2, asserts that the GPUs divide
evenly, and refuses DeepSpeed or FSDP together with device_map. This module works out
what ms-swift will do; ``checks.layout`` says when that is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sftctl.config.schema import Launch


@dataclass(frozen=True)
class Layout:
    """What ms-swift will do with the processes and GPUs it is given."""

    gpus: tuple[int, ...] | None  # None: inherited from the environment, unknown here
    nproc: int
    nnodes: int
    use_cpu: bool
    shard: str | None  # 'deepspeed' or 'fsdp' when the run shards across processes
    mode: str  # cpu, inherited, single, ddp, device_map, ddp+device_map, deepspeed, fsdp, invalid
    description: str


def truthy(value: Any) -> bool:
    """A boolean argument's value as ms-swift reads it."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def sharding(args: dict[str, Any]) -> str | None:
    """'deepspeed' or 'fsdp' when the run shards across processes, else None."""
    if args.get("deepspeed") not in (None, "", "null"):
        return "deepspeed"
    if args.get("fsdp") not in (None, "", "null", []):
        return "fsdp"
    return None


def default_accumulation(batch: int, world: int) -> int:
    """ms-swift's gradient_accumulation_steps when none is given: 16 rows a step in all."""
    return max(1, math.ceil(16 / batch / max(world, 1)))


def effective_batch(args: dict[str, Any], layout: Layout) -> int | None:
    """per-device batch x processes x accumulation x nodes, where all are known."""
    bs = args.get("per_device_train_batch_size")
    ga = args.get("gradient_accumulation_steps")
    if not isinstance(bs, int) or not isinstance(ga, int):
        return None
    return bs * layout.nproc * ga * layout.nnodes


def _mode(gpus: list[int], nproc: int, use_cpu: bool, shard: str | None) -> tuple[str, str]:
    n = len(gpus)
    ids = ",".join(str(g) for g in gpus)
    if use_cpu:
        return "cpu", f"{nproc} CPU process(es) per node (use_cpu: GPUs are not used)"
    if n == 0:
        return "cpu", f"{nproc} process(es) on the CPU"
    if nproc > n or n % nproc:
        return "invalid", "invalid"
    per = n // nproc
    if per >= 2 and shard:
        return "invalid", "invalid"
    if per >= 2 and nproc == 1:
        return "device_map", f"1 process, model split over {n} GPUs ({ids}) with device_map"
    if per >= 2:
        return (
            "ddp+device_map",
            f"DDP over {nproc} processes, each splitting the model over {per} GPUs with device_map",
        )
    if shard:
        return shard, f"{shard} over {nproc} process(es), one per GPU ({ids})"
    if nproc > 1:
        return "ddp", f"DDP over {nproc} processes, one per GPU ({ids})"
    return "single", f"1 process on GPU {ids}"


def plan(launch: Launch, args: dict[str, Any], visible: list[int] | None = None) -> Layout:
    """The layout of ``launch``; ``visible`` is the inherited GPU list when ``launch.gpus`` is unset."""
    gpus = launch.gpus if launch.gpus is not None else visible
    nproc = launch.nproc_per_node
    use_cpu = truthy(args.get("use_cpu"))
    shard = sharding(args)
    if gpus is None:
        mode = "cpu" if use_cpu else "inherited"
        desc = (
            f"{nproc} CPU process(es) per node"
            if use_cpu
            else f"{nproc} process(es) per node on the GPUs the environment makes visible"
        )
        return Layout(None, nproc, launch.nnodes, use_cpu, shard, mode, desc)
    mode, desc = _mode(gpus, nproc, use_cpu, shard)
    return Layout(tuple(gpus), nproc, launch.nnodes, use_cpu, shard, mode, desc)
