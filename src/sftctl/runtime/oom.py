"""Did a rank run out of memory? From its own output and from the kernel's counters.

Three kinds count: a CUDA out-of-memory error (``torch.OutOfMemoryError``, "CUDA out of
memory"), the CPU allocator's failure ("can't allocate memory"), and a kernel OOM kill
of a process of the run, read from the memory cgroup the run lives in (cgroup v1:
``memory.oom_control``'s ``oom_kill``; v2: ``memory.events``' ``oom_kill``), counted before
and after the run, for its cgroup and every cgroup above it (a limit set higher up kills
below it). Anything else, a rank killed by hand with SIGKILL included, is not
out-of-memory: the counters do not move for it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# What torch, the CUDA caching allocator and the CPU allocator print.
PATTERNS = (
    (re.compile(r"CUDA out of memory|torch\.(?:cuda\.)?OutOfMemoryError"), "CUDA out of memory"),
    (re.compile(r"NPU out of memory|XPU out of memory|MPS backend out of memory"), "device out of memory"),
    (
        re.compile(r"DefaultCPUAllocator: (?:can't allocate memory|not enough memory)"),
        "CPU allocator out of memory",
    ),
)
TAIL_BYTES = 1 << 20  # the end of the log is where a crash is; logs can be gigabytes
CGROUP_ROOT = Path("/sys/fs/cgroup")


def in_output(log: Path) -> str | None:
    """The out-of-memory error the end of ``log`` shows, or None."""
    try:
        with open(log, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - TAIL_BYTES))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    for pattern, what in PATTERNS:
        if pattern.search(text):
            return what
    return None


def _memory_cgroups(proc_cgroup: str, root: Path) -> list[Path]:
    """The memory cgroup folders of the process described by ``proc_cgroup`` (the text of
    /proc/PID/cgroup), innermost first, up to the hierarchy's mount."""
    v1, v2 = None, None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if "memory" in parts[1].split(","):
            v1 = root / "memory", parts[2]
        elif parts[0] == "0" and parts[1] == "":
            v2 = root, parts[2]
    chosen = v1 if v1 is not None and v1[0].is_dir() else v2
    if chosen is None:
        return []
    mount, rel = chosen
    folder = mount / rel.strip("/") if rel.strip("/") else mount
    out = []
    while True:
        if folder.is_dir():
            out.append(folder)
        if folder == mount or mount not in folder.parents:
            return out
        folder = folder.parent


def _oom_kills(folder: Path) -> int:
    """The kernel's OOM-kill count of one memory cgroup (0 where it keeps none)."""
    for name in ("memory.oom_control", "memory.events"):
        try:
            text = (folder / name).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return 0


@dataclass(frozen=True)
class Counters:
    """OOM-kill counts of a process's memory cgroups at one moment."""

    kills: tuple[tuple[str, int], ...]

    @classmethod
    def now(cls, pid: int | str = "self", root: Path = CGROUP_ROOT) -> Counters:
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return cls(())
        return cls.of(text, root)

    @classmethod
    def of(cls, proc_cgroup: str, root: Path) -> Counters:
        """The counts of the cgroups named by ``proc_cgroup`` (text of /proc/PID/cgroup)."""
        return cls(tuple((str(f), _oom_kills(f)) for f in _memory_cgroups(proc_cgroup, root)))

    def killed_since(self, before: Counters) -> bool:
        """The kernel OOM-killed a process in one of these cgroups since ``before``."""
        earlier = dict(before.kills)
        return any(count > earlier.get(name, count) for name, count in self.kills)


def cause(log: Path, before: Counters, after: Counters, signalled: bool) -> str | None:
    """Why the run's training failed, if it was out of memory; None otherwise. A run that
    sftctl's supervisor was asked to stop (a signal from the user) never counts."""
    if signalled:
        return None
    if after.killed_since(before):
        return "kernel OOM kill (memory cgroup limit)"
    return in_output(log)
