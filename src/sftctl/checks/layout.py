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


def _nodes(launch: Launch) -> list[Problem]:
    """Multi-node settings that cannot work."""
    problems = []
    if launch.nnodes > 1 and not launch.master_addr:
        problems.append(
            report(
                "L001",
                "launch.master_addr",
                f"{launch.nnodes} nodes need the address of node 0, where they meet",
                "set launch.master_addr to node 0's host name or IP address, reachable from every node",
            )
        )
    if launch.node_rank is not None and launch.node_rank >= launch.nnodes:
        problems.append(
            report(
                "L010",
                "launch.node_rank",
                f"node rank {launch.node_rank} with {launch.nnodes} node(s): "
                f"ranks run 0 to {launch.nnodes - 1}",
                f"give --node-rank 0..{launch.nnodes - 1}, or raise launch.nnodes",
            )
        )
    if launch.nnodes > 1 and launch.rdzv == "c10d" and launch.launcher == "swift":
        problems.append(
            report(
                "L011",
                "launch.rdzv",
                "ms-swift's launcher passes no rendezvous options to torchrun, so it cannot use c10d",
                "set launch.launcher: torchrun, or launch.rdzv: static",
            )
        )
    return problems


def needs_node_rank(launch: Launch) -> Problem | None:
    """A multi-node command is per node: which one (c10d assigns ranks itself)."""
    if launch.nnodes > 1 and launch.node_rank is None and launch.rdzv == "static":
        return report(
            "L012",
            "launch.node_rank",
            f"a run over {launch.nnodes} nodes is started once per node, each with its rank",
            f"give --node-rank K (0..{launch.nnodes - 1}) on each node; render --all-nodes -o DIR writes all",
        )
    return None


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
    problems += _nodes(launch)
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
