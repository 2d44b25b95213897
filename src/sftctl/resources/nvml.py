"""The GPUs of this machine from NVML (nvidia-ml-py), imported only when asked.

Each GPU with its memory, utilization and compute processes (and who runs them); a
GPU split into MIG devices lists those. An inherited CUDA_VISIBLE_DEVICES (indices or
UUIDs) limits the list as CUDA would. No NVML library (a machine without an NVIDIA
driver) is an empty inventory, not an error.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU."""

    pid: int
    user: str | None
    used_bytes: int | None


@dataclass(frozen=True)
class Gpu:
    """One GPU (or MIG device: index ``parent:k``)."""

    index: str
    uuid: str
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    utilization: int | None
    processes: list[GpuProcess] = field(default_factory=list)
    mig: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Inventory:
    """What NVML said: the GPUs, or why there are none."""

    gpus: list[Gpu]
    note: str | None = None  # e.g. "NVML library not found": no NVIDIA driver here


def _user(pid: int) -> str | None:
    try:
        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _processes(nvml: Any, handle: Any) -> list[GpuProcess]:
    try:
        running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError:
        return []
    return [GpuProcess(int(p.pid), _user(int(p.pid)), getattr(p, "usedGpuMemory", None)) for p in running]


def _describe(nvml: Any, handle: Any, index: str, mig: bool) -> Gpu:
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        util: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml.NVMLError:
        util = None  # MIG devices report no utilization
    return Gpu(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        total_bytes=int(mem.total),
        used_bytes=int(mem.used),
        free_bytes=int(mem.free),
        utilization=util,
        processes=_processes(nvml, handle),
        mig=mig,
    )


def _mig_devices(nvml: Any, handle: Any, index: int) -> list[Gpu]:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        return []
    if current != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
        return []
    out = []
    for k in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)
        except nvml.NVMLError:
            continue
        out.append(_describe(nvml, mig, f"{index}:{k}", True))
    return out


def _visible(gpus: list[Gpu], env: Mapping[str, str]) -> list[Gpu]:
    """The devices CUDA_VISIBLE_DEVICES names, in its order (indices, GPU- or MIG- UUIDs)."""
    if "CUDA_VISIBLE_DEVICES" not in env:
        return gpus
    out: list[Gpu] = []
    for item in (x.strip() for x in env["CUDA_VISIBLE_DEVICES"].split(",") if x.strip()):
        match = [
            g
            for g in gpus
            if g.index == item or (item.startswith(("GPU-", "MIG-")) and g.uuid.startswith(item))
        ]
        out += [g for g in match if g not in out]
    return out


def visible(found: Inventory, env: Mapping[str, str]) -> Inventory:
    """``found`` limited by the CUDA_VISIBLE_DEVICES of ``env``, as CUDA would see it."""
    return Inventory(_visible(found.gpus, env), found.note)


def inventory(env: Mapping[str, str] | None = None) -> Inventory:
    """Every GPU (and MIG device) NVML sees, limited by an inherited CUDA_VISIBLE_DEVICES."""
    env = os.environ if env is None else env
    try:
        import pynvml as nvml  # type: ignore[import-untyped]
    except ImportError:
        return Inventory([], "nvidia-ml-py is not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return Inventory([], f"NVML: {exc}")
    try:
        gpus: list[Gpu] = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(_describe(nvml, handle, str(i), False))
            gpus += _mig_devices(nvml, handle, i)
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    return Inventory(_visible(gpus, env))


class Sampler:
    """GPU memory of given processes, sampled from NVML while a run trains (NVML is
    initialised once; without it, every sample is empty)."""

    def __init__(self) -> None:
        self.peak: dict[int, int] = {}  # pid -> the most GPU memory it held, over all GPUs
        self._nvml: Any = None
        try:
            import pynvml as nvml

            nvml.nvmlInit()
            self._nvml = nvml
        except Exception:  # noqa: BLE001 - no NVML (or a broken one): nothing to sample
            self._nvml = None

    def sample(self, pids: set[int]) -> None:
        """Note how much GPU memory each of ``pids`` holds now."""
        nvml = self._nvml
        if nvml is None or not pids:
            return
        now: dict[int, int] = {}
        try:
            for i in range(int(nvml.nvmlDeviceGetCount())):
                for p in nvml.nvmlDeviceGetComputeRunningProcesses(nvml.nvmlDeviceGetHandleByIndex(i)):
                    used = getattr(p, "usedGpuMemory", None)
                    if int(p.pid) in pids and isinstance(used, int):
                        now[int(p.pid)] = now.get(int(p.pid), 0) + used
        except nvml.NVMLError:
            return
        for pid, used in now.items():
            self.peak[pid] = max(self.peak.get(pid, 0), used)

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None
