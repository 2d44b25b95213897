"""Which GPUs this machine has and which of them are busy, found without importing torch."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from sftctl.config.schema import parse_gpus
from sftctl.resources.nvml import Gpu, Inventory
from sftctl.resources.params import GIB, human

# Memory in use on a GPU without a listed process (another container's, or a driver
# NVML cannot see into) above which the GPU counts as busy. An idle GPU shows well
# under this; one CUDA context alone is about 0.5 GiB.
BUSY_BYTES = 2 * GIB


def visible_gpus(env: Mapping[str, str]) -> list[int] | None:
    """CUDA_VISIBLE_DEVICES when set, else the GPUs nvidia-smi lists; [] when there is none.

    None means the visible set cannot be known (e.g. CUDA_VISIBLE_DEVICES holds UUIDs).
    """
    if "CUDA_VISIBLE_DEVICES" in env:
        try:
            return parse_gpus(env["CUDA_VISIBLE_DEVICES"])
        except ValueError:
            return None
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return []
    return [int(line) for line in out.stdout.split() if line.strip().isdigit()]


@dataclass(frozen=True)
class HostGpus:
    """The GPUs a run on this machine may use, with NVML's description where it has one."""

    ids: list[int] | None  # None: cannot be known; []: no NVIDIA GPU here (or none visible)
    described: dict[int, Gpu] = field(default_factory=dict)  # whole GPUs by index (NVML)
    mig: frozenset[int] = frozenset()  # GPUs split into MIG devices
    limited_by: str | None = None  # the inherited CUDA_VISIBLE_DEVICES that limits ids

    def where(self) -> str:
        """How the GPUs a run may use were limited, for messages."""
        return f" (CUDA_VISIBLE_DEVICES={self.limited_by!r})" if self.limited_by is not None else ""

    def busy(self, index: int) -> str | None:
        """Why GPU ``index`` is in use by someone already (processes, memory), or None."""
        gpu = self.described.get(index)
        if gpu is None:
            return None
        why = []
        if gpu.processes:
            procs = ", ".join(
                f"pid {p.pid} ({p.user or 'unknown user'}"
                + (f", {human(p.used_bytes)}" if p.used_bytes else "")
                + ")"
                for p in gpu.processes[:4]
            )
            more = f" and {len(gpu.processes) - 4} more" if len(gpu.processes) > 4 else ""
            why.append(f"processes {procs}{more}")
        if gpu.used_bytes >= BUSY_BYTES:
            why.append(f"{human(gpu.used_bytes)} of {human(gpu.total_bytes)} memory in use")
        return "; ".join(why) or None


def _named(value: str, described: dict[int, Gpu]) -> list[int] | None:
    """The GPU indices a CUDA_VISIBLE_DEVICES value names (indices or GPU- UUIDs), as CUDA
    reads it: the list ends at the first entry that names no GPU. None: cannot be told."""
    out: list[int] = []
    for item in (x.strip() for x in value.split(",")):
        if item.isdigit() and (not described or int(item) in described):
            index: int | None = int(item)
        elif item.startswith("GPU-") and described:
            index = next((i for i, g in described.items() if g.uuid.startswith(item)), None)
        elif not described and item.startswith(("GPU-", "MIG-")):
            return None  # UUIDs without NVML to resolve them
        else:
            index = None
        if index is None:
            break
        if index not in out:
            out.append(index)
    return out


def host_view(env: Mapping[str, str], everything: Inventory | None = None) -> HostGpus:
    """The GPUs a run on this machine may use: every GPU NVML (or, without NVML,
    nvidia-smi) lists, limited by an inherited CUDA_VISIBLE_DEVICES (inside a Slurm job,
    that is the job's GPUs). The ids are the machine's: the rendered CUDA_VISIBLE_DEVICES
    replaces the inherited one. ``everything``: NVML's whole inventory, when already asked."""
    from sftctl.resources.nvml import inventory

    bare = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    found = everything if everything is not None else inventory(bare)
    described = {int(g.index): g for g in found.gpus if not g.mig}
    mig = frozenset(int(g.index.split(":")[0]) for g in found.gpus if g.mig)
    limit = env.get("CUDA_VISIBLE_DEVICES")
    if limit is not None:
        return HostGpus(_named(limit, described), described, mig, limit)
    # No NVML answer (no driver library, or an old driver): ask nvidia-smi.
    ids = sorted(described) if described else visible_gpus(bare)
    return HostGpus(ids, described, mig)
