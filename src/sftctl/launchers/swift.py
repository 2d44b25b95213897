"""ms-swift's own launcher: ``NPROC_PER_NODE=N swift sft ...``.

``swift`` starts torchrun itself when NPROC_PER_NODE (or NNODES) is set, passing
MASTER_PORT through; with one process it runs the trainer directly. On several nodes it
reads NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT and passes them to torchrun, with no
rendezvous timeout of its own: sftctl's supervisor enforces ``rdzv_timeout`` instead.
"""

from __future__ import annotations

from sftctl.config.schema import Launch
from sftctl.launchers import Command


def command(launch: Launch, flags: list[str], port: int | None) -> Command:
    """The swift launcher's env, unset list and argv for ``flags``."""
    env: dict[str, str] = {}
    unset: list[str] = []
    if launch.nnodes > 1:
        env.update(
            NNODES=str(launch.nnodes),
            NODE_RANK=str(launch.node_rank or 0),
            MASTER_ADDR=str(launch.master_addr),
            MASTER_PORT=str(port),
            NPROC_PER_NODE=str(launch.nproc_per_node),
        )
    elif launch.nproc_per_node > 1:
        env["NPROC_PER_NODE"] = str(launch.nproc_per_node)
        if port:
            env["MASTER_PORT"] = str(port)
    else:
        # One process: an inherited NPROC_PER_NODE would switch ms-swift to torchrun.
        unset.append("NPROC_PER_NODE")
    if launch.nnodes == 1:
        unset.append("NNODES")
    return Command(env=env, argv=["swift", "sft", *flags], unset=unset)
