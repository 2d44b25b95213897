"""GPU layout: which GPUs each process sees and which parallel mode ms-swift picks.

ms-swift (swift/utils/env.py, arguments/sft_args.py) turns on device_map (model
parallel) when visible GPUs / local world size >= 2, asserts that the GPUs divide
evenly, and refuses DeepSpeed or FSDP together with device_map. These rules are
checked here before anything starts, each with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sftctl.config.schema import Launch
from sftctl.errors import Problem


@dataclass(frozen=True)
class Layout:
    """What ms-swift will do with the processes and GPUs it is given."""

    gpus: tuple[int, ...] | None  # None: inherited from the environment, unknown here
    nproc: int
    nnodes: int
    mode: str
    description: str

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def sharding(args: dict[str, Any]) -> str | None:
    """'deepspeed' or 'fsdp' when the run shards across processes, else None."""
    if args.get("deepspeed") not in (None, "", "null"):
        return "deepspeed"
    if args.get("fsdp") not in (None, "", "null", []):
        return "fsdp"
    return None


def plan(
    launch: Launch, args: dict[str, Any], visible: list[int] | None = None
) -> tuple[Layout, list[Problem]]:
    """Check the layout rules; ``visible`` is the inherited GPU list when ``launch.gpus`` is unset."""
    problems: list[Problem] = []
    gpus = launch.gpus if launch.gpus is not None else visible
    nproc = launch.nproc_per_node
    use_cpu = _truthy(args.get("use_cpu"))
    shard = sharding(args)

    if launch.nnodes > 1:
        problems.append(
            Problem(
                "launch.nnodes",
                f"{launch.nnodes} nodes: sftctl renders and launches single-node runs only so far",
                "run one node per machine with nnodes: 1, or use ms-swift's NNODES, "
                "NODE_RANK, MASTER_ADDR by hand",
            )
        )
    if launch.gpus is not None:
        negative = [g for g in launch.gpus if g < 0]
        if negative:
            problems.append(
                Problem(
                    "launch.gpus",
                    f"GPU ids cannot be negative: {negative}",
                    "list ids as nvidia-smi shows them, e.g. gpus: 0,1",
                )
            )
        dupes = sorted({g for g in launch.gpus if launch.gpus.count(g) > 1})
        if dupes:
            problems.append(Problem("launch.gpus", f"GPU ids listed twice: {dupes}", "list each GPU once"))

    if gpus is None:
        mode = "cpu" if use_cpu else "inherited"
        desc = (
            f"{nproc} process(es) per node on the GPUs the environment makes visible"
            if not use_cpu
            else f"{nproc} CPU process(es) per node"
        )
        return Layout(None, nproc, launch.nnodes, mode, desc), problems

    n = len(gpus)
    ids = ",".join(str(g) for g in gpus)
    if use_cpu:
        return Layout(
            tuple(gpus),
            nproc,
            launch.nnodes,
            "cpu",
            f"{nproc} CPU process(es) per node (use_cpu: GPUs are not used)",
        ), problems
    if n == 0:
        if nproc > 1:
            problems.append(
                Problem(
                    "launch.nproc_per_node",
                    f"{nproc} processes with no visible GPU and use_cpu unset: ms-swift would start "
                    f"{nproc} processes that each train their own copy of the model and exit 0",
                    "set args.use_cpu: true for real CPU data parallelism, or make GPUs visible",
                )
            )
        return Layout((), nproc, launch.nnodes, "cpu", f"{nproc} process(es) on the CPU"), problems
    if nproc > n:
        problems.append(
            Problem(
                "launch.nproc_per_node",
                f"{nproc} processes per node but only {n} visible GPU(s) ({ids}): each process needs a GPU",
                f"set launch.nproc_per_node to {n} or fewer, or list more GPUs",
            )
        )
        return Layout(tuple(gpus), nproc, launch.nnodes, "invalid", "invalid"), problems
    if n % nproc:
        problems.append(
            Problem(
                "launch.nproc_per_node",
                f"{n} GPUs ({ids}) cannot be split evenly over {nproc} processes "
                "(ms-swift asserts visible GPUs % processes == 0)",
                f"use a divisor of {n} processes, e.g. {_divisors(n)}",
            )
        )
        return Layout(tuple(gpus), nproc, launch.nnodes, "invalid", "invalid"), problems
    per = n // nproc
    if per >= 2 and shard:
        problems.append(
            Problem(
                "launch.nproc_per_node",
                f"{shard} needs exactly one process per visible GPU, but {nproc} process(es) share "
                f"{n} GPUs ({per} each): ms-swift turns on device_map, which is not compatible with {shard}",
                f"set launch.nproc_per_node to {n}, or list {nproc} GPU(s)",
            )
        )
        return Layout(tuple(gpus), nproc, launch.nnodes, "invalid", "invalid"), problems
    if per >= 2 and nproc == 1:
        mode, desc = "device_map", f"1 process, model split over {n} GPUs ({ids}) with device_map"
    elif per >= 2:
        mode = "ddp+device_map"
        desc = f"DDP over {nproc} processes, each splitting the model over {per} GPUs with device_map"
    elif shard:
        mode, desc = shard, f"{shard} over {nproc} process(es), one per GPU ({ids})"
    elif nproc > 1:
        mode, desc = "ddp", f"DDP over {nproc} processes, one per GPU ({ids})"
    else:
        mode, desc = "single", f"1 process on GPU {ids}"
    return Layout(tuple(gpus), nproc, launch.nnodes, mode, desc), problems


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
