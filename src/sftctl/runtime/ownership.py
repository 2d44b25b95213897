"""Which processes and folders belong to a run: the output-folder lock and the run marker.

Every process a run starts carries ``SFTCTL_RUN_ID=<run id>`` in its environment (the
marker); /proc/PID/environ reads it back, so a process is provably the run's only when it
carries the marker. The lock is an ``flock`` on ``<output_dir>/.sftctl/lock``, held by the
supervisor for the run's whole life and released by the kernel when it dies, even by
SIGKILL: an ``add_version: false`` run holds it exclusively (it writes into output_dir
itself), versioned runs share it (ms-swift gives each its own v<N>-... folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "SFTCTL_RUN_ID"
LOCK_NAME = "lock"


def marker_of(pid: int) -> str | None:
    """The run id a process carries, or None (no marker, gone, or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{MARKER}=".encode()
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def marked(run_id: str) -> list[int]:
    """Live processes (zombies excluded) carrying ``run_id``'s marker."""
    from sftctl.runtime.supervise import proc_ref

    return sorted(
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit() and marker_of(int(name)) == run_id and proc_ref(int(name)) is not None
    )


def is_sftctl(pid: int) -> bool:
    """The process runs sftctl (its command line says so): a recorded supervisor must."""
    try:
        return b"sftctl" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def owner_of(path: Path) -> int | None:
    """The uid owning ``path``, or None if it cannot be read."""
    try:
        return path.stat().st_uid
    except OSError:
        return None


def process_uid(pid: int) -> int | None:
    """The real uid of a process, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Held:
    """An output-folder lock this process holds; closing the descriptor releases it."""

    fd: int
    path: Path

    def record(self, run_id: str, info: dict[str, Any]) -> None:
        """Name the holder in the lock file (an exclusive holder; the lock must be held)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, (json.dumps({"run_id": run_id, **info}) + "\n").encode(), 0)

    def release(self) -> None:
        """Release the lock; a second call does nothing (the number may be reused by then)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class Busy(Exception):
    """The output folder is held by another run (its holder record, if readable)."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(str(holder))
        self.holder = holder


def _holder(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    return {}


def acquire(staging_root: Path, run_id: str, exclusive: bool, info: dict[str, Any]) -> Held:
    """Take the output folder's lock or raise Busy; an exclusive holder records who it is.

    A previous exclusive holder whose processes are still alive (its supervisor was killed,
    its training was not) keeps the folder busy although the kernel released its lock."""
    staging_root.mkdir(parents=True, exist_ok=True)
    path = staging_root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(_holder(path)) from None
    previous = _holder(path)
    survivors = (
        marked(str(previous["run_id"])) if previous.get("run_id") and previous["run_id"] != run_id else []
    )
    if survivors:
        os.close(fd)
        raise Busy({**previous, "survivors": survivors})
    lock = Held(fd, path)
    if exclusive:
        lock.record(run_id, info)
    return lock


@contextlib.contextmanager
def held(staging_root: Path, run_id: str, exclusive: bool, info: dict[str, Any]) -> Iterator[Held]:
    """:func:`acquire` for the length of a ``with`` block."""
    lock = acquire(staging_root, run_id, exclusive, info)
    try:
        yield lock
    finally:
        lock.release()
