"""``torchrun --nproc_per_node=N --master_port=P --no_python swift sft ...``."""

from __future__ import annotations

from sftctl.config.schema import Launch
from sftctl.launchers import Command

# Under torchrun, each rank runs `swift sft`; an inherited NPROC_PER_NODE or NNODES
# would make every rank start a nested torchrun.
UNSET = ("NPROC_PER_NODE", "NNODES")


def command(launch: Launch, flags: list[str], port: int | None) -> Command:
    """torchrun's argv for ``flags``; the ranks must not inherit the swift launcher's variables."""
    argv = ["torchrun", f"--nproc_per_node={launch.nproc_per_node}"]
    if port:
        argv.append(f"--master_port={port}")
    argv += ["--no_python", "swift", "sft", *flags]
    return Command(env={}, argv=argv, unset=list(UNSET))
