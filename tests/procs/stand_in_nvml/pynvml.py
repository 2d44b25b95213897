"""A stand-in for nvidia-ml-py's ``pynvml`` (a process-boundary double: these machines have
no GPU). Put its folder first on PYTHONPATH of a child sftctl; it serves the machine that
the JSON file named by $STAND_IN_NVML describes:

{"missing": false, "gpus": [{"name": ..., "uuid": ..., "total": bytes, "used": bytes,
  "util": 0-100, "processes": [{"pid": P, "used": bytes}], "mig": [{...same keys...}]}]}

A process entry with pid "marked" lists every process carrying an sftctl run marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

NVML_DEVICE_MIG_ENABLE = 1


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's own name
    pass


def _machine() -> dict[str, Any]:
    with open(os.environ["STAND_IN_NVML"], encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def nvmlInit() -> None:  # noqa: N802 - pynvml's own names below
    if _machine().get("missing"):
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")


def nvmlShutdown() -> None:  # noqa: N802
    pass


def nvmlDeviceGetCount() -> int:  # noqa: N802
    return len(_machine()["gpus"])


def nvmlDeviceGetHandleByIndex(i: int) -> dict[str, Any]:  # noqa: N802
    gpu: dict[str, Any] = _machine()["gpus"][i]
    return gpu


def nvmlDeviceGetName(h: dict[str, Any]) -> str:  # noqa: N802
    return str(h["name"])


def nvmlDeviceGetUUID(h: dict[str, Any]) -> str:  # noqa: N802
    return str(h["uuid"])


def nvmlDeviceGetMemoryInfo(h: dict[str, Any]) -> SimpleNamespace:  # noqa: N802
    return SimpleNamespace(total=h["total"], used=h["used"], free=h["total"] - h["used"])


def nvmlDeviceGetUtilizationRates(h: dict[str, Any]) -> SimpleNamespace:  # noqa: N802
    if "util" not in h:
        raise NVMLError("Not Supported")
    return SimpleNamespace(gpu=h["util"], memory=0)


def _marked() -> list[int]:
    """Every process that carries an sftctl run marker (SFTCTL_RUN_ID in its environment)."""
    out = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and b"SFTCTL_RUN_ID=" in Path(f"/proc/{name}/environ").read_bytes():
                out.append(int(name))
        except OSError:
            continue
    return out


def nvmlDeviceGetComputeRunningProcesses(h: dict[str, Any]) -> list[SimpleNamespace]:  # noqa: N802
    """The configured processes; pid "marked" stands for every process of an sftctl run, as
    if the run's ranks were on this GPU."""
    out = []
    for p in h.get("processes", []):
        pids = _marked() if p["pid"] == "marked" else [p["pid"]]
        out += [SimpleNamespace(pid=pid, usedGpuMemory=p.get("used")) for pid in pids]
    return out


def nvmlDeviceGetMigMode(h: dict[str, Any]) -> tuple[int, int]:  # noqa: N802
    return (1, 1) if h.get("mig") else (0, 0)


def nvmlDeviceGetMaxMigDeviceCount(h: dict[str, Any]) -> int:  # noqa: N802
    return len(h.get("mig", []))


def nvmlDeviceGetMigDeviceHandleByIndex(h: dict[str, Any], k: int) -> dict[str, Any]:  # noqa: N802
    mig: dict[str, Any] = h["mig"][k]
    return mig
