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
import time
from dataclasses import dataclass
from pathlib import Path

# The last line of the traceback torch prints (each rank's prefixed with "[rankN]:" under
# torchrun): the exception's name starts the line, so a data row or a prompt that merely
# contains the words never matches.
_START = r"^(?:\[rank\d+\]:\s*)?(?:\[[^\]]*\]\s*)?"
PATTERNS = tuple(
    (re.compile(_START + body, re.M), what)
    for body, what in (
        (
            r"(?:torch\.(?:cuda\.)?OutOfMemoryError|RuntimeError): (?:CUDA )?out of memory",
            "CUDA out of memory",
        ),
        (
            r"(?:torch\.\w+\.)?\w*(?:Error|Exception): (?:NPU|XPU|MPS backend) out of memory",
            "device out of memory",
        ),
        (
            r"RuntimeError: .*DefaultCPUAllocator: (?:can't allocate memory|not enough memory)",
            "CPU allocator out of memory",
        ),
    )
)
TAIL_BYTES = 1 << 20  # the end of the log is where a crash is; logs can be gigabytes
CGROUP_ROOT = Path("/sys/fs/cgroup")
KMSG = Path("/dev/kmsg")
KMSG_RECORDS = 1 << 18  # the kernel's ring buffer holds far fewer
_KILLED = re.compile(r"Killed process (\d+)")


def in_output(log: Path, start: int = 0) -> str | None:
    """The out-of-memory error that the output written to ``log`` from byte ``start`` on
    ends with (its last megabyte), or None."""
    try:
        with open(log, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(start, size - TAIL_BYTES))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    for pattern, what in PATTERNS:
        if any(_ends_a_traceback(text, m.start()) for m in pattern.finditer(text)):
            return what
    return None


_RANK = re.compile(r"^(?:\[rank\d+\]:)?")
_TRACEBACK = re.compile(r"^(?:\[rank\d+\]:\s*)?Traceback \(most recent call last\):", re.M)


def _ends_a_traceback(text: str, at: int) -> bool:
    """The exception line at ``at`` is the end of a Python traceback: the line before it
    is a frame's indented source line, and a ``Traceback`` header is not far above. A data
    row or a prompt that holds the same words is neither."""
    before = text[:at].rstrip("\n").rsplit("\n", 1)[-1]
    frame = before[_RANK.match(before).end() :]  # type: ignore[union-attr]
    if not frame.startswith((" ", "\t")):
        return False
    window = text[max(0, at - 64 * 1024) : at]
    return _TRACEBACK.search(window) is not None


def monotonic_us() -> int:
    """Now on the kernel log's clock (microseconds since boot)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def killed_by_kernel(since_us: int, kmsg: Path = KMSG) -> set[int] | None:
    """The pids the kernel's OOM killer ended since ``since_us`` (its log's clock), or None
    where its log cannot be read (not root, or a container without it)."""
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    killed: set[int] = set()
    try:
        for _ in range(KMSG_RECORDS):
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # read to the end
            except BrokenPipeError:
                continue  # records overwritten while reading: go on with the next
            if not record:
                break
            # One record per read from /dev/kmsg; continuation lines start with a space.
            for line in record.decode("utf-8", "replace").splitlines():
                head, _, message = line.partition(";")
                fields = head.split(",")
                if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) < since_us:
                    continue
                match = _KILLED.search(message)
                if match:
                    killed.add(int(match.group(1)))
    except OSError:
        return None
    finally:
        os.close(fd)
    return killed


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


@dataclass(frozen=True)
class Watch:
    """What is known at the start of an attempt: the cgroup counts, the kernel log's clock
    and how much of the log came before."""

    counters: Counters
    since_us: int
    log_offset: int

    @classmethod
    def start(cls, log: Path) -> Watch:
        try:
            offset = log.stat().st_size
        except OSError:
            offset = 0
        # A little before: the kernel's clock and ours are read a moment apart.
        return cls(Counters.now(), monotonic_us() - 2_000_000, offset)


def cause(log: Path, watch: Watch, pids: list[int], signalled: bool, kmsg: Path = KMSG) -> str | None:
    """Why the attempt's training failed, if it was out of memory; None otherwise.

    A kernel OOM kill counts when the kernel's log names a process of the run (``pids``)
    as killed; where that log cannot be read, when the OOM-kill count of the run's memory
    cgroups moved. An attempt sftctl was asked to stop (a signal from the user) never
    counts; nor does an error printed by an earlier attempt."""
    if signalled:
        return None
    killed = killed_by_kernel(watch.since_us, kmsg)
    in_cgroup = Counters.now().killed_since(watch.counters)
    if killed is not None:
        if killed & set(pids):
            return "kernel OOM kill (memory cgroup limit)" if in_cgroup else "kernel OOM kill"
    elif in_cgroup:
        return "kernel OOM kill (memory cgroup limit)"
    return in_output(log, watch.log_offset)
