"""Layout rules: processes, GPUs and nodes that ms-swift would refuse or silently misuse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sftctl.checks.registry import report
from sftctl.config.schema import Launch
from sftctl.errors import Problem
from sftctl.resources.layout import Layout


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _use_cpu_state(args: Mapping[str, Any]) -> str:
    return "unset" if args.get("use_cpu") is None else f"is {args['use_cpu']!s}".lower()


def check(launch: Launch, layout: Layout, launch_args: Mapping[str, Any]) -> list[Problem]:
    """Every layout rule that ``layout`` (planned from ``launch``) breaks, each with its fix."""
    problems: list[Problem] = []
    allowed = [k for k in ("allow_shorter", "allow_optimizer_reset") if getattr(launch, k)]
    if allowed and launch.on_oom != "recover":
        problems.append(
            report(
                "L009",
                f"launch.{allowed[0]}",
                f"{' and '.join(allowed)} {'only shape' if len(allowed) > 1 else 'only shapes'} "
                "out-of-memory recovery, which is off (on_oom: stop)",
                "add --on-oom recover (launch.on_oom: recover), or drop it",
            )
        )
    if launch.nnodes > 1:
        problems.append(
            report(
                "L001",
                "launch.nnodes",
                f"{launch.nnodes} nodes: sftctl renders and launches single-node runs only so far",
                "run one node per machine with nnodes: 1, "
                "or use ms-swift's NNODES, NODE_RANK, MASTER_ADDR by hand",
            )
        )
    if launch.gpus is not None:
        negative = [g for g in launch.gpus if g < 0]
        if negative:
            problems.append(
                report(
                    "L002",
                    "launch.gpus",
                    f"GPU ids cannot be negative: {negative}",
                    "list ids as nvidia-smi shows them, e.g. gpus: 0,1",
                )
            )
        dupes = sorted({g for g in launch.gpus if launch.gpus.count(g) > 1})
        if dupes:
            unique = ",".join(str(g) for g in dict.fromkeys(launch.gpus))
            problems.append(
                report(
                    "L003",
                    "launch.gpus",
                    f"GPU ids listed twice: {dupes}",
                    f"list each GPU once: gpus: {unique}",
                )
            )
            return problems  # counting processes against a list that is wrong anyway would mislead
    if layout.gpus is None or layout.use_cpu:
        return problems
    n, nproc = len(layout.gpus), layout.nproc
    ids = ",".join(str(g) for g in layout.gpus)
    if n == 0:
        if nproc > 1:
            problems.append(
                report(
                    "L007",
                    "launch.nproc_per_node",
                    f"{nproc} processes with no visible GPU and use_cpu {_use_cpu_state(launch_args)}: "
                    f"ms-swift would start "
                    f"{nproc} processes that each train their own copy of the model and exit 0",
                    "set args.use_cpu: true for real CPU data parallelism, or make GPUs visible",
                )
            )
    elif nproc > n:
        problems.append(
            report(
                "L004",
                "launch.nproc_per_node",
                f"{nproc} processes per node but only {n} visible GPU(s) ({ids}): each process needs a GPU",
                f"--set launch.nproc_per_node={n} (one process per GPU), or list {nproc} GPUs"
                if layout.shard
                else f"--set launch.nproc_per_node={n} (or a divisor of {n}: {_divisors(n)}), "
                f"or list {nproc} GPUs",
            )
        )
    elif n % nproc:
        problems.append(
            report(
                "L005",
                "launch.nproc_per_node",
                f"{n} GPUs ({ids}) cannot be split evenly over {nproc} processes "
                "(ms-swift asserts visible GPUs % processes == 0)",
                f"use a divisor of {n} processes, e.g. {_divisors(n)}",
            )
        )
    elif n // nproc >= 2 and layout.shard:
        shard = layout.shard
        problems.append(
            report(
                "L006",
                "launch.nproc_per_node",
                f"{shard} needs exactly one process per visible GPU, but {nproc} process(es) share "
                f"{n} GPUs ({n // nproc} each): "
                f"ms-swift turns on device_map, which is not compatible with {shard}",
                f"set launch.nproc_per_node to {n}, or list {nproc} GPU(s)",
            )
        )
    return problems
