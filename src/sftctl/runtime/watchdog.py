"""A guard that outlives its supervisor: when sftctl dies without saying it is done (a
SIGKILL, an OOM kill), it ends every process that carries the run's marker, setsid'd
grandchildren included, and records the run as ``lost``.

sftctl starts it in a session of its own with the read end of a pipe as its stdin; only
sftctl holds the write end (not inherited by the training processes). sftctl writes
``done`` before it exits normally; an end of file without it means the supervisor is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DONE = b"done"


@dataclass
class Guard:
    """sftctl's end of the pipe to its watchdog."""

    fd: int
    proc: subprocess.Popen[bytes]

    def done(self) -> None:
        """The supervisor finished normally: the watchdog exits without acting."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(fd, DONE)
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def start(run_id: str, staging: Path, grace: float) -> Guard:
    """Start the watchdog of ``run_id`` (whose record starts in ``staging``)."""
    read, write = os.pipe()  # not inheritable (PEP 446): the training never holds it
    try:
        env = {k: v for k, v in os.environ.items() if k != "SFTCTL_RUN_ID"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "sftctl.runtime.watchdog", run_id, str(staging), str(grace)],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # signals to sftctl's terminal or group do not reach it
            env=env,
        )
    finally:
        os.close(read)
    return Guard(write, proc)


def _wait_for_supervisor() -> bool:
    """Block until the pipe closes; True if the supervisor said it was done."""
    said = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        except OSError:
            return False
        if not chunk:
            return DONE in said
        said += chunk


def main(argv: list[str]) -> int:
    run_id, staging, grace = argv[0], Path(argv[1]), float(argv[2])
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if _wait_for_supervisor():
        return 0
    from sftctl.runtime import ownership, supervise

    refs = [ref for pid in ownership.marked(run_id) if (ref := supervise.proc_ref(pid)) is not None]
    killed = supervise.stop_tree(refs, signal.SIGTERM, grace) if refs else False
    # Whatever was started since (a fork racing the first pass) carries the marker too.
    late = [ref for pid in ownership.marked(run_id) if (ref := supervise.proc_ref(pid)) is not None]
    if late:
        supervise.stop_tree(late, signal.SIGKILL, 0)
    with contextlib.suppress(Exception):  # the record is best effort: the processes matter
        from sftctl.runtime.record import now_iso, read_manifest
        from sftctl.util.fs import write_json_atomic

        path, data = read_manifest(staging)
        if data.get("status") in ("starting", "running"):
            data.update(
                status="lost",
                ended_at=now_iso(),
                error="the supervisor died; its watchdog stopped the run's processes"
                + (" (SIGKILL after the grace period)" if killed else ""),
            )
            write_json_atomic(path, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
