"""GPU leases: which sftctl run trains on which GPU, shared by every user of the machine.

A lease is an ``flock`` on ``<lease dir>/gpu-<uuid>.lock``, taken exclusively by a run's
supervisor and held for the run's whole life; the kernel releases it when the supervisor
exits, even by SIGKILL, so a lease never outlives its run. The folder is shared by all
users of the host (default ``/tmp/sftctl-gpu-leases``, created mode 1777;
``SFTCTL_LEASE_DIR`` overrides it). The holder writes who it is (run id, pid, user,
output_dir) into the file; the lock, not the text, says whether a GPU is leased.

GPUs are named by UUID where NVML gives one: indices change with CUDA_VISIBLE_DEVICES
and inside containers, UUIDs do not.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftctl.checks.registry import report
from sftctl.errors import RefusedError
from sftctl.resources.gpus import HostGpus

LEASE_DIR_ENV = "SFTCTL_LEASE_DIR"
DEFAULT_DIR = Path("/tmp/sftctl-gpu-leases")
POLL_SECONDS = 2.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# What a holder may say about itself; anything else in a lease file is ignored.
_HOLDER_FIELDS = {"run_id": str, "pid": int, "user": str, "output_dir": str, "started_at": str}


class LeaseDirError(Exception):
    """The lease folder cannot be used (not a folder, not writable, not safe to share)."""


def lease_dir(env: Mapping[str, str]) -> Path:
    """The folder holding the lease files."""
    return Path(env.get(LEASE_DIR_ENV) or DEFAULT_DIR)


def _ready(path: Path, default: bool) -> Path:
    """The lease folder, created shared (1777) if missing, refused when it is unsafe."""
    if not path.is_absolute():
        # Each working folder would get a lease folder of its own: no exclusion at all.
        raise LeaseDirError(f"{str(path)!r} is a relative path; use an absolute path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o1777)
        os.chmod(path, 0o1777)  # mkdir's mode is cut by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise LeaseDirError(f"cannot create {path}: {exc.strerror}") from None
    try:
        st = os.lstat(path) if default else os.stat(path)
    except OSError as exc:
        raise LeaseDirError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise LeaseDirError(f"{path} is not a folder")
    # In /tmp anyone can create the shared folder first, and a folder's owner may delete any
    # file in it, sticky or not: the default folder must be root's or this user's.
    if st.st_uid not in (0, os.geteuid()) and (default or not st.st_mode & stat.S_ISVTX):
        mode = f"{st.st_mode & 0o7777:o}"
        raise LeaseDirError(
            f"{path} belongs to another user (uid {st.st_uid}, mode {mode}), who could delete the leases "
            f"in it; let root create it (mkdir -m 1777 {path})"
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        # Writable by all without the sticky bit: any user could delete another's lease.
        raise LeaseDirError(
            f"{path} is writable by every user but not sticky (mode {st.st_mode & 0o7777:o}): anyone "
            f"could delete another run's lease; chmod 1777 {path}"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise LeaseDirError(f"{path} is not writable by this user")
    return path


def key_of(index: int, view: HostGpus) -> str:
    """The lease name of GPU ``index``: its UUID when known, else its index."""
    gpu = view.described.get(index)
    if not (gpu and gpu.uuid):
        return f"index-{index}"
    key = _UNSAFE.sub("_", gpu.uuid)
    return key if len(key) <= 80 else "uuid-" + hashlib.sha256(gpu.uuid.encode()).hexdigest()[:32]


def _path(folder: Path, key: str) -> Path:
    return folder / f"gpu-{key}.lock"


@dataclass
class Lease:
    """One GPU leased by this process; closing the descriptor releases it."""

    gpu: int
    fd: int


@dataclass
class Leases:
    """The leases this run holds."""

    held: list[Lease] = field(default_factory=list)

    @property
    def gpus(self) -> list[int]:
        return [lease.gpu for lease in self.held]

    def record(self, info: Mapping[str, Any]) -> None:
        """Name the holder in each lease file, so `sftctl gpus` can say who uses the GPU."""
        text = (json.dumps(dict(info)) + "\n").encode()
        for lease in self.held:
            with contextlib.suppress(OSError):
                os.ftruncate(lease.fd, 0)
                os.pwrite(lease.fd, text, 0)

    def fds(self) -> tuple[int, ...]:
        """The descriptors, for a child process that must hold the leases too."""
        return tuple(lease.fd for lease in self.held)

    def handed_down(self) -> str:
        """``gpu=fd,...``: how a detached run's background supervisor is told what it inherits."""
        return ",".join(f"{lease.gpu}={lease.fd}" for lease in self.held)

    def release(self) -> None:
        """Release every lease; a second call does nothing."""
        held, self.held = self.held, []
        for lease in held:
            with contextlib.suppress(OSError):
                os.close(lease.fd)


def inherited(spec: str) -> Leases:
    """The leases a detached run's parent took and passed down as ``gpu=fd,...``."""
    out = Leases()
    for item in filter(None, spec.split(",")):
        gpu, _, fd = item.partition("=")
        out.held.append(Lease(int(gpu), int(fd)))
    return out


def _open(path: Path, flags: int) -> int:
    """A lease file, opened without following links or blocking (a planted FIFO would
    hang the open); anything but a regular file is refused."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise LeaseDirError(f"cannot open {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LeaseDirError(f"{path} is not a regular file")
    return fd


def _share(fd: int) -> None:
    """Make a file this user created lockable and writable by every user of the host: they
    all lease through the same files."""
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)


def _take(folder: Path, gpu: int, key: str) -> Lease | None:
    """Lease GPU ``gpu`` now, or None when another run holds it."""
    path = _path(folder, key)
    for attempt in range(5):
        try:
            fd = _open(path, os.O_RDWR | os.O_CREAT)
        except FileNotFoundError:
            raise LeaseDirError(f"{folder} disappeared") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            # `sftctl gpus` and the pickers look with a shared lock held for a moment:
            # only a lock that stays is a lease.
            if attempt == 4:
                return None
            time.sleep(0.02)
            continue
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if not same:  # the file was removed or replaced after we opened it: lock the new one
            os.close(fd)
            continue
        _share(fd)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # the previous holder's name is not this run's
        return Lease(gpu, fd)
    raise LeaseDirError(f"{path} keeps being replaced while it is locked")


def holder(folder: Path, key: str) -> dict[str, Any] | None:
    """Who leases GPU ``key`` (the fields it wrote; {} if unreadable), or None when it is free."""
    try:
        fd = _open(_path(folder, key), os.O_RDONLY)
    except FileNotFoundError:
        return None  # never leased
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            try:
                # Free unless someone else keeps a shared lock on it (a viewer holds one
                # only for a moment; anything longer blocks every lease): try for a moment.
                for _ in range(5):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return None
                    except BlockingIOError:
                        time.sleep(0.02)
                return {}
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", errors="replace"))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            k: v
            for k, want in _HOLDER_FIELDS.items()
            if isinstance(v := data.get(k), want) and not isinstance(v, bool)
        }
    finally:
        os.close(fd)


def describe_holder(who: Mapping[str, Any]) -> str:
    """``run ID (pid P, user U, output_dir D)``, from what the holder wrote."""
    if not who.get("run_id"):
        return "a run that is starting (or a lease file with no holder record)"
    details = [f"{k} {who[k]}" for k in ("pid", "user") if k in who]
    pid = who.get("pid")
    if isinstance(pid, int) and 0 < pid < 2**22 and not Path(f"/proc/{pid}").exists():
        details[0] += " gone: its training still holds the GPU"  # the supervisor was killed hard
    if "output_dir" in who:
        details.append(str(who["output_dir"]))
    return f"run {who['run_id']}" + (f" ({', '.join(details)})" if details else "")


PICK_TIMEOUT = 60.0


@contextlib.contextmanager
def _picking(folder: Path) -> Iterator[None]:
    """One run at a time chooses GPUs, so two runs started together get disjoint ones.
    Choosing takes milliseconds: a pick lock held for a minute is held by something else."""
    path = folder / ".pick"
    fd = _open(path, os.O_RDWR | os.O_CREAT)
    try:
        _share(fd)
        deadline = time.monotonic() + PICK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LeaseDirError(
                        f"{path} has been locked for {PICK_TIMEOUT:.0f} s by a process that is not "
                        "choosing GPUs"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _ids(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)


def _no_lease_dir(exc: LeaseDirError) -> RefusedError:
    return RefusedError(
        problems=[
            report(
                "H020",
                LEASE_DIR_ENV,
                f"GPU leases cannot be taken: {exc}",
                f"set {LEASE_DIR_ENV} to an absolute path of a folder every user of this machine "
                "can write (mode 1777)",
            )
        ]
    )


def _too_few(asked: str, why: str, fix: str) -> RefusedError:
    return RefusedError(problems=[report("H019", "launch.gpus", f"{asked}: {why}", fix)])


class Picker:
    """Chooses GPUs for ``--gpus auto[:N]`` and leases a run's GPUs.

    ``take`` false (``run --dry-run``, ``validate --host``) only looks: nothing is leased.
    ``wait`` polls until the GPUs are free instead of refusing. ``given`` holds the leases a
    detached run's parent took for it."""

    def __init__(
        self,
        env: Mapping[str, str],
        view_of: Callable[[Mapping[str, str]], HostGpus],
        *,
        take: bool = True,
        wait: bool = False,
        say: Callable[[str], None] = lambda _text: None,
        given: str | None = None,
    ) -> None:
        self._env = env
        self._view_of = view_of
        self.take = take
        self.wait = wait
        self.say = say
        self._default = not env.get(LEASE_DIR_ENV)
        self.folder = lease_dir(env)
        self.leases = inherited(given) if given else Leases()
        self.how = "picked free GPUs, leased for this run" if take else "free GPUs now (nothing leased)"

    @functools.cached_property
    def view(self) -> HostGpus:
        """This machine's GPUs, asked once and only when a GPU is needed."""
        return self._view_of(self._env)

    # The GpuPicker protocol of config.resolve.
    def __call__(self, count: int | None, multiple: int) -> list[int]:
        if self.leases.held:
            return self.leases.gpus  # a detached run's parent picked them
        asked = f"--gpus auto:{count}" if count else "--gpus auto"
        ids = self.view.ids
        if not ids:
            none = (
                "the GPU list cannot be known"
                if ids is None
                else f"CUDA_VISIBLE_DEVICES={self.view.limited_by!r} makes no GPU visible"
                if self.view.limited_by is not None
                else "this machine has no NVIDIA GPU"
            )
            raise _too_few(
                asked,
                f"no GPU to pick ({none})",
                "run it on a GPU node; on the CPU, drop --gpus auto (use_cpu: true and "
                "launch.gpus: '', as the cpu-smoke presets have)",
            )
        whole = [i for i in ids if i not in self.view.mig]
        if count and count > len(whole):
            raise _too_few(
                asked,
                f"this run may use {len(whole)} whole GPU(s){self.view.where()}, never {count}",
                f"ask for at most auto:{len(whole)}",
            )
        told = False
        while True:
            try:
                picked, why_not = self._try_pick(ids, count, multiple)
            except LeaseDirError as exc:
                raise _no_lease_dir(exc) from None
            if picked:
                return picked
            if not self.wait:
                raise _too_few(
                    asked,
                    why_not,
                    "wait for them with --wait, ask for fewer (auto:N), or name GPUs with --gpus",
                )
            if not told:
                self.say(f"sftctl: {asked}: waiting, {why_not}")
                told = True
            time.sleep(POLL_SECONDS)

    def _try_pick(self, ids: list[int], count: int | None, multiple: int) -> tuple[list[int], str]:
        """The GPUs picked (and leased when ``take``), or [] and why not."""
        folder = _ready(self.folder, self._default)
        reasons: list[str] = []
        with _picking(folder) if self.take else contextlib.nullcontext():
            free: list[int] = []
            for i in ids:
                why = self._unusable(folder, i)
                if why:
                    reasons.append(f"GPU {i} {why}")
                else:
                    free.append(i)
            want = count if count else len(free) - len(free) % max(multiple, 1)
            if want <= 0 or len(free) < want:
                need = f"{count} free GPU(s) needed" if count else "no free GPU"
                if not count and free:
                    need = f"a multiple of {multiple} free GPUs needed (one process per {multiple})"
                return [], "; ".join([f"{need}, {len(free)} of {len(ids)} free", *reasons])
            if not self.take:
                return free[:want], ""
            for i in free:
                if len(self.leases.held) == want:
                    break
                lease = _take(folder, i, key_of(i, self.view))
                if lease is None:  # taken a moment ago by a run that did not pick (explicit ids)
                    reasons.append(f"GPU {i} was leased a moment ago")
                    continue
                self.leases.held.append(lease)
            if len(self.leases.held) < want:
                self.leases.release()
                return [], "; ".join([f"{want} free GPU(s) needed", *reasons])
        return self.leases.gpus, ""

    def _unusable(self, folder: Path, i: int) -> str | None:
        if i in self.view.mig:
            return "is split into MIG devices"
        who = holder(folder, key_of(i, self.view))
        if who is not None:
            return f"is leased by {describe_holder(who)}"
        busy = self.view.busy(i)
        return f"is busy: {busy}" if busy else None

    def lease(self, ids: list[int]) -> None:
        """Lease the GPUs a config lists, or refuse naming the runs that hold them."""
        if not self.take or self.leases.held or not ids:
            return
        told = False
        while True:
            held: list[str] = []
            try:
                folder = _ready(self.folder, self._default)
                for i in ids:
                    lease = _take(folder, i, key_of(i, self.view))
                    if lease is None:
                        who = holder(folder, key_of(i, self.view)) or {}
                        held.append(f"GPU {i} is leased by {describe_holder(who)}")
                    else:
                        self.leases.held.append(lease)
            except LeaseDirError as exc:
                self.leases.release()
                raise _no_lease_dir(exc) from None
            if not held:
                return
            self.leases.release()
            if not self.wait:
                raise RefusedError(
                    problems=[
                        report(
                            "H018",
                            "launch.gpus",
                            "; ".join(held),
                            "wait with --wait, stop that run, or take free GPUs "
                            "(sftctl run ... --gpus auto:N)",
                        )
                    ]
                )
            if not told:
                self.say(f"sftctl: waiting for GPUs {_ids(ids)}: {'; '.join(held)}")
                told = True
            time.sleep(POLL_SECONDS)


def holders(env: Mapping[str, str], view: HostGpus) -> dict[int, dict[str, Any]]:
    """Who leases each of this machine's GPUs (only the leased ones). A lease file that
    cannot be read as one is reported as held by an unknown holder: never as free. Raises
    LeaseDirError for a lease folder that cannot be one."""
    folder = lease_dir(env)
    if not folder.is_absolute():
        raise LeaseDirError(f"{str(folder)!r} is a relative path; use an absolute path")
    out: dict[int, dict[str, Any]] = {}
    for i in view.ids or []:
        try:
            who = holder(folder, key_of(i, view))
        except LeaseDirError:
            who = {}
        if who is not None:
            out[i] = who
    return out
