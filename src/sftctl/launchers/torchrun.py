"""``torchrun --nproc_per_node=N --master_port=P --no_python swift sft ...``; on several
nodes with a static rendezvous (``--nnodes --node_rank --master_addr --master_port``) or
torchrun's c10d one (``--rdzv_backend c10d --rdzv_endpoint --rdzv_id``), always with a
finite rendezvous timeout and no restarts (a failed rank ends the run; sftctl's records,
not torchrun's retries, say what happened)."""

from __future__ import annotations

from sftctl.config.schema import Launch
from sftctl.launchers import Command

# Under torchrun, each rank runs `swift sft`; an inherited NPROC_PER_NODE or NNODES
# would make every rank start a nested torchrun.
UNSET = ("NPROC_PER_NODE", "NNODES")
# torchrun's own rendezvous timeout is the backstop of a script run without sftctl: under
# sftctl the node's watch ends it at rdzv_timeout, with one message for both launchers.
RDZV_MARGIN = 30


def command(launch: Launch, flags: list[str], port: int | None, run_id: str = "sftctl") -> Command:
    """torchrun's argv for ``flags``; the ranks must not inherit the swift launcher's variables."""
    argv = ["torchrun"]
    if launch.nnodes > 1:
        argv.append(f"--nnodes={launch.nnodes}")
        if launch.rdzv == "c10d":
            argv += [
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={launch.master_addr}:{port}",
                f"--rdzv_id={run_id}",
                f"--rdzv_conf=join_timeout={launch.rdzv_timeout + RDZV_MARGIN}",
            ]
        else:
            argv += [
                f"--node_rank={launch.node_rank or 0}",
                f"--master_addr={launch.master_addr}",
                f"--master_port={port}",
                f"--rdzv_conf=timeout={launch.rdzv_timeout + RDZV_MARGIN}",
            ]
        argv.append("--max_restarts=0")
    argv.append(f"--nproc_per_node={launch.nproc_per_node}")
    if port and launch.nnodes == 1:
        argv.append(f"--master_port={port}")
    argv += ["--no_python", "swift", "sft", *flags]
    return Command(env={}, argv=argv, unset=list(UNSET))
