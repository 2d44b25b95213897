"""Which GPUs this machine makes visible, found without importing torch."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

from sftctl.config.schema import parse_gpus


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


def host_gpus(env: Mapping[str, str]) -> list[int] | None:
    """The GPU indices that exist for this run: inside a Slurm job the job's GPUs, else the
    ones nvidia-smi lists ([] when there is none); None when that cannot be known."""
    if env.get("SLURM_JOB_ID") and "CUDA_VISIBLE_DEVICES" in env:
        try:
            return parse_gpus(env["CUDA_VISIBLE_DEVICES"])
        except ValueError:
            return None
    from sftctl.resources.nvml import inventory

    found = inventory({k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"})
    if found.gpus:
        return sorted({int(g.index.split(":")[0]) for g in found.gpus})
    # No NVML answer (no driver library, or an old driver): ask nvidia-smi.
    return visible_gpus({k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"})
