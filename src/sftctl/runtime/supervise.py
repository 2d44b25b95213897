"""Run one command and keep its whole process tree under control.

The launcher layer uses this to start `swift sft ...` or `torchrun ...`: the
child gets its own session, its output is logged line by line, every process
it (transitively) starts is recorded from /proc, signals sent to sftctl are
forwarded to all of them, and nothing of the tree is left running when
:func:`run_supervised` returns. Linux only (reads /proc); stdlib only.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, NamedTuple

__all__ = [
    "FORWARDED_SIGNALS",
    "Outcome",
    "ProcRef",
    "StartError",
    "find_free_port",
    "port_in_use",
    "proc_ref",
    "run_supervised",
    "stop_tree",
]

FORWARDED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# After SIGKILL a process in uninterruptible sleep (D state, e.g. stuck on NFS or a
# GPU driver call) can linger; we wait this long for such stragglers, then give up on them.
_KILL_WAIT = 10.0
# Once the whole tree is gone, a process that escaped tracking may still hold the
# output pipe open; do not wait for its EOF longer than this.
_DRAIN_WAIT = 1.0
_NEWLINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Outcome:
    """What happened to a supervised command."""

    returncode: int
    """The command's own exit code, 128+N if it died of signal N, or 128+N when
    sftctl forwarded signal N (that takes precedence)."""
    signal: int | None
    """The signal sftctl received and forwarded, if any."""
    killed: bool
    """True if a grace period ran out and survivors got SIGKILL."""
    descendants: list[int]
    """Every pid seen in the tree during the run, the leader first."""
    started_at: float
    ended_at: float
    leftovers: list[int]
    """Descendants still running when the leader exited on its own (then stopped)."""
    peak_rss: int = 0
    """The largest sampled sum of Pss_Anon over the tree's processes, in bytes."""
    peak_rss_process: int = 0
    """The largest sampled RssAnon of one process of the tree, in bytes."""
    reason: str | None = None
    """Why sftctl stopped the tree itself (a rendezvous that timed out), if it did."""


class StartError(OSError):
    """The command could not be started at all (as opposed to any later I/O error)."""


class ProcRef(NamedTuple):
    """A process identity that survives pid reuse: pid plus start time.

    `start` is field 22 of /proc/PID/stat (clock ticks after boot); a pid whose
    start differs is a different process. A NamedTuple so it serialises as
    `[pid, start]` in a manifest and reads back with `ProcRef(*pair)`.
    """

    pid: int
    start: int


class _Stat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    session: int
    start: int


def _read_stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return _Stat(
            state=fields[0].decode(),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            start=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def _proc_table() -> dict[int, _Stat]:
    table: dict[int, _Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(int(name))
            if st is not None:
                table[int(name)] = st
    return table


def _is_running(st: _Stat | None) -> bool:
    # A zombie has exited; its parent (or init) reaps it, signals are moot.
    return st is not None and st.state not in ("Z", "X", "x")


def proc_ref(pid: int) -> ProcRef | None:
    """The identity of a running process, or None if there is none."""
    st = _read_stat(pid)
    return ProcRef(pid, st.start) if _is_running(st) and st is not None else None


def _children_map(table: dict[int, _Stat]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st.ppid, []).append(pid)
    return children


def _walk(roots: Iterable[int], children: dict[int, list[int]]) -> Iterator[int]:
    stack = list(roots)
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        for child in children.get(pid, ()):
            if child not in seen:
                seen.add(child)
                yield child
                stack.append(child)


class _Tree:
    """The set of processes that belong to a run, identified by (pid, start time)."""

    def __init__(self, roots: Iterable[ProcRef], leader: ProcRef | None = None) -> None:
        self.tracked: dict[int, int] = {}  # pid -> start; insertion order = first seen
        for ref in roots:
            self.tracked.setdefault(ref.pid, ref.start)
        self.leader = leader
        # Pids examined and found not ours, kept while they stay listed: a process
        # outside the tree never joins it later (descent comes only from fork), so
        # each poll reads the stat of tracked and new pids only, not of every process.
        self.foreign: set[int] = set()
        self.peak_rss = 0  # bytes: the largest sum of Pss_Anon over the tree
        self.peak_rss_process = 0  # bytes: the largest RssAnon of one process

    def sample_memory(self) -> None:
        """Note the tree's anonymous memory now (the heap, not mapped files). The sum counts
        each process's proportional share (Pss_Anon): pages a forked child still shares
        with its parent count once, not once per process."""
        total = 0
        for pid in self.live():  # start times checked: never a reused pid's memory
            rss = _rss_anon(pid)
            total += _pss_anon(pid, rss)
            self.peak_rss_process = max(self.peak_rss_process, rss)
        self.peak_rss = max(self.peak_rss, total)

    def scan(self) -> None:
        """Record every process now reachable from a live tracked one.

        Parent links break as soon as a middle process dies (its children move to
        init), so we walk from every tracked process still alive, not only the
        leader. Members of the leader's process group or session also count even
        if we never saw their parent: that covers a fork-and-exit between two polls.
        Children started with setsid() (torch elastic ranks) are found by parent link.
        """
        listed = {int(n) for n in os.listdir("/proc") if n.isdigit()}
        self.foreign &= listed  # a pid that went away may come back as anyone
        table: dict[int, _Stat] = {}
        for pid in listed - self.foreign:
            if (st := _read_stat(pid)) is not None:
                table[pid] = st
        roots = [p for p, s in self.tracked.items() if p in table and table[p].start == s]
        for pid in _walk(roots, _children_map(table)):
            self.tracked.setdefault(pid, table[pid].start)
        if self.leader is not None:
            lp, ls = self.leader
            for pid, st in table.items():
                if (st.pgrp == lp or st.session == lp) and st.start >= ls and _is_running(st):
                    self.tracked.setdefault(pid, st.start)
        self.foreign.update(p for p, st in table.items() if self.tracked.get(p) != st.start)

    def live(self) -> dict[int, _Stat]:
        """Tracked processes still running (start time verified, zombies excluded)."""
        out: dict[int, _Stat] = {}
        for pid, start in self.tracked.items():
            st = _read_stat(pid)
            if _is_running(st) and st is not None and st.start == start:
                out[pid] = st
        return out

    def signal(self, sig: int) -> list[int]:
        """Send `sig` to every live tracked process and the groups they lead; return them."""
        self.scan()
        live = self.live()
        # killpg also reaches a process forked since the last scan. Only groups led
        # by a tracked process, and only while a verified live member holds the id:
        # Linux does not reuse a pid that is still some group's id.
        for pgid in {st.pgrp for st in live.values() if st.pgrp in self.tracked}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return list(live)


def _kib_field(path: str, key: bytes) -> int | None:
    """A ``Key:   N kB`` line of a /proc file, in bytes; None when it is not there."""
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rss_anon(pid: int) -> int:
    """A process's RssAnon in bytes (0 when it is gone or a zombie)."""
    return _kib_field(f"/proc/{pid}/status", b"RssAnon:") or 0


def is_worker(pid: int) -> bool:
    """``pid`` is a rank torchrun started (its environment holds LOCAL_RANK): the nodes
    have met, since torchrun starts ranks only after the rendezvous."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            names = {item.partition(b"=")[0] for item in fh.read(1 << 20).split(b"\0")}
    except OSError:
        return False
    return b"LOCAL_RANK" in names and b"TORCHELASTIC_RUN_ID" in names


def _pss_anon(pid: int, fallback: int) -> int:
    """A process's proportional share of its anonymous memory in bytes (Pss_Anon of
    smaps_rollup, Linux 5.x); ``fallback`` where the kernel does not give it."""
    found = _kib_field(f"/proc/{pid}/smaps_rollup", b"Pss_Anon:")
    return fallback if found is None else found


def _wait_gone(tree: _Tree, timeout: float, poll_interval: float) -> bool:
    """Poll until no tracked process runs or `timeout` passes; True if all are gone."""
    deadline = time.monotonic() + timeout
    while True:
        tree.scan()
        if not tree.live():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(poll_interval, remaining))


def stop_tree(
    pids: Iterable[int | ProcRef],
    sig: int = signal.SIGTERM,
    grace: float = 30.0,
    *,
    poll_interval: float = 0.2,
) -> bool:
    """Stop the processes `pids` and all their descendants; True if SIGKILL was needed.

    Sends `sig`, waits up to `grace` seconds (still discovering new descendants),
    then SIGKILLs survivors. Give `ProcRef`s (e.g. read back from a run manifest)
    to be safe against pid reuse; a bare int is taken to be whatever has that pid
    now. The processes need not be our children: exit is observed through /proc.
    """
    refs: list[ProcRef] = []
    for p in pids:
        ref = proc_ref(p) if isinstance(p, int) else ProcRef(*p)
        if ref is not None:
            refs.append(ref)
    # A supervised leader leads its own group and session: count their members too.
    leader = next((r for r in refs if (st := _read_stat(r.pid)) and st.pgrp == r.pid), None)
    return _stop(_Tree(refs, leader), sig, grace, poll_interval)


def _stop(tree: _Tree, sig: int, grace: float, poll_interval: float) -> bool:
    if not tree.signal(sig) or _wait_gone(tree, grace, poll_interval):
        return False
    tree.signal(signal.SIGKILL)
    _wait_gone(tree, _KILL_WAIT, poll_interval)
    return True


class _Output:
    """Splits the child's merged output into log bytes, echo text and lines."""

    def __init__(self, log: IO[bytes] | None, on_line: Callable[[str], None] | None, echo: bool) -> None:
        self.log = log
        self.on_line = on_line
        self.echo = echo
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""

    def feed(self, data: bytes, final: bool = False) -> None:
        if self.log is not None and data:
            try:
                self.log.write(data)  # raw bytes, unbuffered file: on disk at once
            except OSError as exc:
                # A full or failing disk stops the log, never the run it records.
                self.log = None
                with contextlib.suppress(OSError):
                    print(f"sftctl: cannot write the log any more ({exc.strerror}); supervision goes on",
                          file=sys.stderr, flush=True)  # fmt: skip
        text = self.decoder.decode(data, final=final)
        if self.echo and text:
            sys.stdout.write(text)
            sys.stdout.flush()
        if self.on_line is None:
            return
        # \r counts as a line end so progress bars (tqdm) reach on_line as they
        # update; a trailing \r waits in case the next chunk starts with \n.
        buf = self.pending + text
        hold = ""
        if not final and buf.endswith("\r"):
            buf, hold = buf[:-1], "\r"
        lines = _NEWLINE.split(buf)
        self.pending = lines.pop() + hold
        for line in lines:
            self.on_line(line)
        if final and self.pending:
            self.on_line(self.pending)
            self.pending = ""


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def run_supervised(
    argv: list[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    log_path: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    echo: bool = False,
    grace: float = 30.0,
    poll_interval: float = 0.2,
    on_start: Callable[[int], None] | None = None,
    leftover_grace: float = 5.0,
    pass_fds: tuple[int, ...] = (),
    on_scan: Callable[[set[int]], None] | None = None,
    stop_if: Callable[[set[int]], str | None] | None = None,
) -> Outcome:
    """Run `argv` with exactly `env` in a new session and supervise its process tree.

    Output (stdout and stderr merged) is appended to `log_path`, split into lines
    for `on_line` and, with `echo`, copied to our stdout. `on_start` gets the
    leader pid. SIGINT, SIGTERM and SIGHUP received meanwhile (main thread only;
    a signal already ignored, as under nohup, stays ignored) are forwarded to the
    whole tree; after `grace` seconds, or at a second signal, survivors get
    SIGKILL. If the leader exits on its own while descendants still run (the
    `swift` launcher orphans its child), those get SIGTERM, then SIGKILL after
    `leftover_grace`. `pass_fds` are handed to the command (locks it must hold while it
    lives). `on_scan` gets the tree's live pids about once a second (to sample their GPU
    memory). `stop_if` gets them at every poll; a reason it returns stops the tree as a
    signal would (SIGTERM, SIGKILL after `grace`) and is the outcome's `reason`. Raises
    StartError if the command cannot be started.
    """
    pending: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def handler(signum: int, frame: FrameType | None) -> None:
        # Only note it: the main loop acts, so the tree is never changed mid-scan.
        pending.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(wake_w, b"\0")  # wake the select() at once

    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    log: IO[bytes] | None = None
    proc: subprocess.Popen[bytes] | None = None
    tree: _Tree | None = None
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED_SIGNALS:
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN:
                    previous[sig] = signal.signal(sig, handler)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in finally
        started_at = time.time()
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            raise StartError(exc.errno, exc.strerror, exc.filename) from exc
        # Not reaped before we poll it, so the leader's /proc entry is there (maybe a zombie).
        st = _read_stat(proc.pid)
        leader = ProcRef(proc.pid, st.start if st is not None else 0)
        tree = _Tree([leader], leader)
        if on_start is not None:
            on_start(proc.pid)
        reasons: list[str] = []
        code, forwarded, killed, leftovers = _supervise(
            proc, tree, _Output(log, on_line, echo), pending, wake_r,
            grace=grace, poll_interval=poll_interval, leftover_grace=leftover_grace, on_scan=on_scan,
            stop_if=stop_if, reasons=reasons,
        )  # fmt: skip
        return Outcome(
            returncode=code,
            signal=forwarded,
            killed=killed,
            descendants=list(tree.tracked),
            started_at=started_at,
            ended_at=time.time(),
            leftovers=leftovers,
            peak_rss=tree.peak_rss,
            peak_rss_process=tree.peak_rss_process,
            reason=reasons[0] if reasons else None,
        )
    except BaseException:
        # Our own failure (a callback raised, ...): leave nothing running behind us.
        if tree is not None:
            _stop(tree, signal.SIGTERM, min(grace, leftover_grace), poll_interval)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_KILL_WAIT)
        raise
    finally:
        for signum, old_handler in previous.items():
            # getsignal() gives None for a handler set outside Python; default is closest.
            signal.signal(signum, signal.SIG_DFL if old_handler is None else old_handler)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if log is not None:
            log.close()
        os.close(wake_r)
        os.close(wake_w)


def _supervise(
    proc: subprocess.Popen[bytes],
    tree: _Tree,
    out: _Output,
    pending: list[int],
    wake_r: int,
    *,
    grace: float,
    poll_interval: float,
    leftover_grace: float,
    on_scan: Callable[[set[int]], None] | None = None,
    stop_if: Callable[[set[int]], str | None] | None = None,
    reasons: list[str] | None = None,
) -> tuple[int, int | None, bool, list[int]]:
    """The main loop; returns (returncode, forwarded signal, killed, leftovers)."""
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(out_fd, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    pipe_open = True
    # A pidfd turns readable when the leader exits: notice that at once rather
    # than at the next poll (Linux >= 5.3; otherwise polling alone does it).
    pidfd: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)

    rc: int | None = None
    forwarded: int | None = None
    killed = False
    leftovers: list[int] = []
    term_deadline: float | None = None  # when survivors get SIGKILL
    kill_deadline: float | None = None  # when we stop waiting after SIGKILL
    next_scan = time.monotonic()
    next_report = next_scan
    try:
        while True:
            now = time.monotonic()
            wait = next_scan - now
            if term_deadline is not None and kill_deadline is None:
                wait = min(wait, term_deadline - now)
            for key, _ in sel.select(max(0.0, wait)):
                if key.fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    continue
                if key.fd == pidfd:
                    sel.unregister(pidfd)  # stays readable from now on
                    continue
                data = os.read(out_fd, 65536)
                if data:
                    out.feed(data)
                else:
                    sel.unregister(out_fd)
                    pipe_open = False

            now = time.monotonic()
            if now >= next_scan:
                tree.scan()
                tree.sample_memory()
                next_scan = now + poll_interval
                if on_scan is not None and now >= next_report:
                    on_scan(set(tree.live()))
                    next_report = now + 1.0
                if stop_if is not None and term_deadline is None and rc is None:
                    why = stop_if(set(tree.live()))
                    if why is not None:
                        if reasons is not None:
                            reasons.append(why)
                        tree.signal(signal.SIGTERM)
                        term_deadline = now + grace
            if rc is None:
                rc = proc.poll()

            while pending:
                sig = pending.pop(0)
                if forwarded is None:
                    forwarded = sig
                if term_deadline is None:
                    tree.signal(sig)
                    term_deadline = now + grace
                else:  # a second signal: no more patience
                    term_deadline = now

            if rc is not None and term_deadline is None:
                # The leader finished on its own; anything of its tree still running
                # was orphaned and would hold GPUs or the master port.
                leftovers = tree.signal(signal.SIGTERM)
                if not leftovers:
                    break
                term_deadline = now + leftover_grace

            # Cheap test first: live() reads /proc for every tracked pid.
            if rc is not None and not tree.live():
                break
            if term_deadline is not None and kill_deadline is None and now >= term_deadline:
                tree.signal(signal.SIGKILL)
                killed = True
                kill_deadline = now + _KILL_WAIT
            if rc is not None and kill_deadline is not None and now >= kill_deadline:
                break  # stragglers in D state: give up waiting, the leader is reaped

        # Everything is gone; read what is left in the pipe unless something that
        # escaped tracking still holds it open.
        if pidfd is not None and pidfd in sel.get_map():
            sel.unregister(pidfd)  # readable for good now; would spin the drain loop
        drain_until = time.monotonic() + _DRAIN_WAIT
        while pipe_open and (left := drain_until - time.monotonic()) > 0:
            if any(key.fd == out_fd for key, _ in sel.select(left)):
                data = os.read(out_fd, 65536)
                if not data:
                    break
                out.feed(data)
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
        out.feed(b"", final=True)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)

    assert rc is not None
    code = 128 + forwarded if forwarded is not None else _exit_code(rc)
    return code, forwarded, killed, leftovers


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now (the kernel picks it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if a socket is bound/listening on `host:port`, so a new listener would fail."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        # SO_REUSEADDR like torch's TCPStore: a port in TIME_WAIT is usable, a
        # listening one is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
        return False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
