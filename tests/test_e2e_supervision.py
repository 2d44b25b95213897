"""End to end: signals, detach/stop, secrets and live progress of real `swift sft` runs.

Every test starts the installed `sftctl` console script in a subprocess (cwd a fresh
tmp dir, HOME a tmp dir, SFTCTL_CACHE one folder for the whole session so the tiny
built-in model is built once) and trains the built-in tiny Qwen3 with the real
ms-swift on the CPU. While a run goes, a sampler thread walks /proc under sftctl's
pid, so "nothing of the tree is left" is checked against what we saw ourselves, not
only against the `descendants` list sftctl records in its manifest.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, default_signals, hooked_processes, pause_hook, sftctl_exe

pytestmark = [
    pytest.mark.slow,
    pytest.mark.swift,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift"),
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
# sftctl's watchdog is its child too, beside the training command.
WATCHDOG = b"sftctl.runtime.watchdog"
# Plain progress line sftctl prints when stdout is not a terminal.
PROGRESS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)  step (\d+)/(\d+)\b")
# How long a run may take to reach its first logged step (imports dominate: ~20 s on
# an idle 2-core machine, ~60 s on a busy one).
FIRST_STEP_S = 150
# Long enough that a run is still training when we stop it.
LONG = ["--set", "num_train_epochs=20"]


# --------------------------------------------------------------------------- /proc


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in ticks) of a pid, or None if there is none."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    """That very process (pid and start time) still runs (zombies count as gone)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X", "x") and st[2] == start


def _now_ticks() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * CLK_TCK) + 1


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _table() -> dict[int, tuple[str, int, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            out[int(name)] = st
    return out


class TreeSampler(threading.Thread):
    """Samples the process tree under `root` from /proc until stopped.

    Keeps every (pid, start) seen, how often it was seen, and every distinct cmdline
    each one had (a process can exec after fork, same pid and start time).
    """

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name=f"sampler-{root}")
        self.root = root
        self.root_start = (_stat(root) or ("", 0, 0))[2]
        self.interval = interval
        self.seen: dict[tuple[int, int], int] = {}
        self.cmdlines: dict[tuple[int, int], set[bytes]] = {}
        self.current: set[tuple[int, int]] = set()
        self.parent: dict[tuple[int, int], int] = {}
        self.samples = 0
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        table = _table()
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found: set[tuple[int, int]] = set()
        stack = [self.root]
        while stack:
            for child in children.get(stack.pop(), ()):
                state, ppid, start = table[child]
                if state in ("Z", "X", "x"):
                    continue
                key = (child, start)
                if key not in found:
                    found.add(key)
                    stack.append(child)
                    self.parent.setdefault(key, ppid)
        with self._lock:
            for key in found:
                self.seen[key] = self.seen.get(key, 0) + 1
                line = _cmdline(key[0])
                if line and _alive(*key):
                    self.cmdlines.setdefault(key, set()).add(line)
            self.current = found
            self.samples += 1

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.sample()
            self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=10)

    def leader(self) -> tuple[int, int] | None:
        """sftctl's direct child: the training command it started."""
        with self._lock:
            kids = [
                k
                for k in self.seen
                if self.parent.get(k) == self.root
                and not any(WATCHDOG in ln for ln in self.cmdlines.get(k, ()))
            ]
        return min(kids, key=lambda k: k[1]) if kids else None

    def matching(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            return [k for k, lines in self.cmdlines.items() if any(text.encode() in ln for ln in lines)]

    def summary(self) -> str:
        """What was seen, for the captured output of a test: `pid:argv0,argv1 xN`."""
        with self._lock:
            out = []
            for (pid, _), count in sorted(self.seen.items()):
                argv = sorted(self.cmdlines.get((pid, _), {b"?"}))[-1].split(b"\0")
                words = [Path(a.decode(errors="replace")).name for a in argv[:3]]
                out.append(f"{pid}:{' '.join(words)} x{count}")
            return "; ".join(out)

    def all_cmdlines(self) -> list[bytes]:
        with self._lock:
            return [ln for lines in self.cmdlines.values() for ln in lines]

    def kill_all(self) -> None:
        """Last resort cleanup after a failed test: SIGKILL whatever we saw that still runs."""
        with self._lock:
            keys = list(self.seen)
        for pid, start in keys:
            if _alive(pid, start):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- runs


@dataclass
class Line:
    text: str
    read_at: float  # time.time() when we read it
    sftctl_running: bool
    leader_alive: bool | None


@dataclass
class Run:
    """A real `sftctl run ...` in a subprocess, its stdout read line by line."""

    proc: subprocess.Popen[str]
    cwd: Path
    stderr_path: Path
    sampler: TreeSampler
    lines: list[Line] = field(default_factory=list)
    start_ticks: int = 0
    end_ticks: int | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _eof: bool = False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            now = time.time()
            running = self.proc.poll() is None
            leader = self.sampler.leader()
            line = Line(text.rstrip("\n"), now, running, _alive(*leader) if leader else None)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def progress(self) -> list[tuple[Line, int, int]]:
        with self._cond:
            lines = list(self.lines)
        return [(ln, int(m[2]), int(m[3])) for ln in lines if (m := PROGRESS.match(ln.text))]

    def wait_stdout(self, pred: Callable[[Line], bool], timeout: float) -> Line:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((ln for ln in self.lines if pred(ln)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(
                        f"no such stdout line after {timeout} s (eof={self._eof}); "
                        f"stdout: {[ln.text for ln in self.lines][-20:]}\nstderr: {self.stderr()[-3000:]}"
                    )
                self._cond.wait(min(left, 1.0))

    def wait_step(self, timeout: float = FIRST_STEP_S) -> Line:
        return self.wait_stdout(lambda ln: PROGRESS.match(ln.text) is not None, timeout)

    def wait_exit(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.end_ticks = _now_ticks()
        return rc

    def stdout(self) -> str:
        with self._cond:
            return "\n".join(ln.text for ln in self.lines)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.sampler.stop()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sampler.kill_all()


def start_run(cwd: Path, env: dict[str, str], *args: str) -> Run:
    err = cwd / "sftctl.stderr"
    with open(err, "wb") as fh:
        proc = subprocess.Popen(
            [*sftctl_exe(), "run", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            bufsize=1,
            preexec_fn=default_signals,
        )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    run = Run(proc, cwd, err, sampler, start_ticks=_now_ticks() - CLK_TCK)
    threading.Thread(target=run._read, daemon=True).start()
    return run


def manifest_of(staging_or_output: Path) -> dict[str, Any]:
    """The manifest of the one run under an output dir or a staging dir (pointer followed)."""
    path = staging_or_output
    if not (path / "manifest.json").is_file():
        found = list(path.glob(".sftctl/*/manifest.json"))
        assert len(found) == 1, f"expected one staging manifest under {path}: {found}"
        path = found[0].parent
    data: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    if "moved_to" in data:
        data = json.loads((Path(data["moved_to"]) / "sftctl-manifest.json").read_text())
    return data


def assert_tree_gone(sampler: TreeSampler, recorded: list[int], since: int, until: int) -> None:
    """Nothing we sampled, and nothing sftctl recorded, still runs.

    A recorded pid only counts as "ours" if the process now holding it started between
    sftctl's start and its exit (`since`..`until`, clock ticks): anything later is an
    unrelated process that reused the pid.
    """
    alive = [
        (key, sorted(sampler.cmdlines.get(key, {b"?"}))[0][:200]) for key in sampler.seen if _alive(*key)
    ]
    assert not alive, f"processes of the run's tree still alive: {alive}"
    left = []
    for pid in recorded:
        st = _stat(pid)
        if st is not None and st[0] not in ("Z", "X", "x") and since <= st[2] <= until:
            left.append((pid, _cmdline(pid)[:200]))
    assert not left, f"recorded descendants still alive: {left}"


def recorded_of(data: dict[str, Any]) -> list[int]:
    """Every process the manifest names: the training tree and sftctl's watchdog."""
    return [*data["descendants"], *([data["watchdog"][0]] if data.get("watchdog") else [])]


def assert_recorded_complete(sampler: TreeSampler, recorded: list[int]) -> None:
    """Every process we saw in the tree for more than a blink is in sftctl's record."""
    missing = [
        (key, sorted(sampler.cmdlines.get(key, {b"?"}))[0][:160])
        for key, count in sampler.seen.items()
        if count >= 3 and key[0] not in recorded
    ]
    assert not missing, f"sftctl's manifest does not record these descendants: {missing}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def env(e2e_cache: Path, tmp_path: Path) -> dict[str, str]:
    """sftctl's environment: the session's shared cache (conftest's e2e_cache), a tmp HOME."""
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    return clean_env(
        SFTCTL_CACHE=str(e2e_cache), HOME=str(home), TMPDIR=str(home / "tmp"), HF_HUB_OFFLINE="1"
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Runs a test started; whatever they left is killed afterwards (pass or fail)."""
    started: list[Run] = []
    yield started
    for run in started:
        run.cleanup()


# --------------------------------------------------------------------------- 1. signals

SIGNAL_CASES = [
    pytest.param("swift", signal.SIGTERM, False, id="swift-SIGTERM"),
    pytest.param("swift", signal.SIGINT, False, id="swift-SIGINT"),
    pytest.param("torchrun", signal.SIGTERM, False, id="torchrun-SIGTERM"),
    # --quiet on this one: the first step is seen in logging.jsonl instead of stdout.
    pytest.param("torchrun", signal.SIGINT, True, id="torchrun-SIGINT-quiet"),
]


def _wait_logged_step(output_dir: Path, timeout: float, run: Run) -> dict[str, Any]:
    """The first training row of ms-swift's logging.jsonl under output_dir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in output_dir.glob("v*-*/logging.jsonl"):
            for raw in path.read_text(errors="replace").splitlines():
                try:
                    row: dict[str, Any] = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(row, dict) and "loss" in row and "global_step/max_steps" in row:
                    return row
        assert run.proc.poll() is None, f"sftctl exited early: {run.stderr()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no logged step under {output_dir} after {timeout} s: {run.stderr()[-3000:]}")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("launcher", "sig", "quiet"), SIGNAL_CASES)
def test_signal_ends_whole_ddp_tree(
    launcher: str,
    sig: signal.Signals,
    quiet: bool,
    env: dict[str, str],
    workdir: Path,
    runs: list[Run],
) -> None:
    args = ["cpu-smoke-ddp", *LONG]
    if launcher == "torchrun":
        # torchrun's agent gives its workers up to 30 s of its own after a SIGTERM: sftctl's
        # grace must be longer for the tree to end by itself ("signalled", not "killed").
        args += ["--set", "launch.launcher=torchrun", "--grace", "60"]
    if quiet:
        args.append("--quiet")
    run = start_run(workdir, env, *args)
    runs.append(run)
    output_dir = workdir / "output" / "cpu-smoke-ddp"
    if quiet:
        _wait_logged_step(output_dir, FIRST_STEP_S, run)
    else:
        first = run.wait_step()
        assert first.sftctl_running and first.leader_alive
    # The whole DDP tree is up: two ranks running ms-swift's sft.py.
    ranks = run.sampler.matching("swift/cli/sft.py")
    assert len([k for k in ranks if _alive(*k)]) >= 2, run.sampler.all_cmdlines()
    if launcher == "torchrun":
        assert run.sampler.matching("torchrun") or run.sampler.matching("torch.distributed.run")
    sent = time.monotonic()
    os.kill(run.proc.pid, sig)
    rc = run.wait_exit(90)
    took = time.monotonic() - sent
    time.sleep(0.3)  # a last sample can only add pids to check
    run.sampler.sample()
    run.sampler.stop()

    print(
        f"{launcher} {sig.name}: exit {rc} {took:.1f} s after the signal; "
        f"sampled {len(run.sampler.seen)} processes: {run.sampler.summary()}"
    )
    assert rc == 128 + sig, f"exit code {rc}; stderr: {run.stderr()[-3000:]}"
    data = manifest_of(output_dir)
    assert data["status"] == "signalled", data["status"]
    assert data["signal"] == sig
    assert data["exit_code"] == 128 + sig
    assert data["killed"] is False, f"SIGKILL was needed ({took:.1f} s)"
    recorded = recorded_of(data)
    leader = run.sampler.leader()
    assert leader is not None and recorded[0] == data["pid"] == leader[0]
    assert_recorded_complete(run.sampler, recorded)
    assert_tree_gone(run.sampler, recorded, run.start_ticks, run.end_ticks or _now_ticks())
    assert f"stopped by signal {int(sig)}" in run.stderr() or quiet

    if quiet:
        # --quiet: no progress on stdout (nothing at all, in fact); ms-swift's own
        # output still reaches the log file, which sits in the run folder.
        assert not run.progress(), run.stdout()
        assert run.stdout().strip() == ""
        log = Path(data["log"])
        assert log.parent == Path(data["run_dir"])
        text = log.read_text(errors="replace")
        assert "'global_step/max_steps': '1/" in text
        assert "[INFO:swift]" in text


@pytest.mark.timeout(240)
def test_grace_runs_out_and_sigkill_finishes(
    env: dict[str, str], workdir: Path, tmp_path: Path, runs: list[Run]
) -> None:
    """The ranks ignore SIGTERM (a trainer stuck in a collective does the same): after
    --grace seconds sftctl SIGKILLs what is left, and still reports 128+15."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import signal, sys\n"
        "if sys.argv and sys.argv[0].endswith('swift/cli/sft.py'):\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    )
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)}
    run = start_run(workdir, env, "cpu-smoke-ddp", *LONG, "--grace", "0.5")
    runs.append(run)
    run.wait_step()
    ranks = [k for k in run.sampler.matching("swift/cli/sft.py") if _alive(*k)]
    assert len(ranks) >= 2
    sent = time.monotonic()
    os.kill(run.proc.pid, signal.SIGTERM)
    rc = run.wait_exit(60)
    took = time.monotonic() - sent
    run.sampler.stop()

    print(f"grace 0.5: exit {rc} {took:.1f} s after SIGTERM")
    assert rc == 128 + signal.SIGTERM, run.stderr()[-3000:]
    # 0.5 s of grace, then SIGKILL: well before torchrun's own 30 s shutdown wait.
    assert took < 20, took
    data = manifest_of(workdir / "output" / "cpu-smoke-ddp")
    assert data["killed"] is True
    assert data["status"] == "killed"  # launch.py: killed wins over signalled
    assert data["signal"] == signal.SIGTERM
    assert data["exit_code"] == 128 + signal.SIGTERM
    assert "SIGKILL after the grace period" in run.stderr()
    assert_recorded_complete(run.sampler, recorded_of(data))
    assert_tree_gone(run.sampler, recorded_of(data), run.start_ticks, run.end_ticks or _now_ticks())


# --------------------------------------------------------------------------- 2. detach / stop


@pytest.mark.timeout(300)
def test_detach_then_stop(env: dict[str, str], workdir: Path) -> None:
    started = time.monotonic()
    res = subprocess.run(
        [*sftctl_exe(), "run", "cpu-smoke", "--detach", *LONG],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    msg = res.stdout + res.stderr
    sup = int(re.search(r"supervisor pid (\d+)", msg)[1])  # type: ignore[index]
    staging = Path(re.search(r"stop:\s+sftctl stop (\S+)", msg)[1])  # type: ignore[index]
    where = Path(re.search(r"manifest and log: (\S+)", msg)[1])  # type: ignore[index]
    assert where == staging and staging.is_dir()
    assert staging.parent.parent == workdir / "output" / "cpu-smoke"
    # "At once": the parent only checks and spawns; training is the child's business.
    assert took < 60, took
    st = _stat(sup)
    assert st is not None and st[0] not in ("Z", "X"), "the detached supervisor is not running"
    sampler = TreeSampler(sup)
    sampler.start()
    since = _now_ticks() - 60 * CLK_TCK
    try:
        # The manifest is where the message said; wait for the first logged step.
        deadline = time.monotonic() + FIRST_STEP_S
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            # The detached child writes the manifest once its own checks pass.
            data = manifest_of(staging) if (staging / "manifest.json").is_file() else {}
            rows = []
            if data.get("run_dir"):
                log = Path(data["run_dir"]) / "logging.jsonl"
                rows = [r for r in log.read_text().splitlines() if '"loss"' in r] if log.exists() else []
            if rows:
                break
            assert _stat(sup) is not None, (staging / "supervisor.log").read_text(errors="replace")
            time.sleep(0.3)
        else:
            raise AssertionError(f"no logged step: {data}")
        assert data["status"] == "running" and data["supervisor_pid"] == sup
        assert _alive(data["pid"], data["leader_start"])

        stop = subprocess.run(
            [*sftctl_exe(), "stop", str(staging)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        end = _now_ticks()
        print(f"detach returned in {took:.1f} s; stop: rc {stop.returncode}, {stop.stderr.strip()}")
        sampler.sample()
        sampler.stop()
        assert stop.returncode == 0, stop.stderr
        assert "status: signalled" in stop.stderr, stop.stderr
        data = manifest_of(staging)
        assert data["status"] == "signalled"
        assert data["signal"] == signal.SIGTERM and data["exit_code"] == 128 + signal.SIGTERM
        assert data["killed"] is False
        assert not _alive(sup, st[2]), "the sftctl supervisor is still running"
        assert_recorded_complete(sampler, recorded_of(data))
        assert_tree_gone(sampler, recorded_of(data), since, end)
        # The detached child runs --quiet: its own output holds no progress lines.
        sup_log = (staging / "supervisor.log").read_text(errors="replace")
        assert not [ln for ln in sup_log.splitlines() if PROGRESS.match(ln)], sup_log
    finally:
        sampler.stop()
        if _stat(sup) is not None and _alive(sup, st[2]):
            os.kill(sup, signal.SIGKILL)
        sampler.kill_all()


@pytest.mark.timeout(120)
def test_stop_right_after_detach(env: dict[str, str], workdir: Path, tmp_path: Path) -> None:
    """`sftctl stop <dir>`, the command `--detach` prints, works as soon as `--detach`
    returned, even when the background supervisor is slow to start (a busy machine:
    here its Python start-up is delayed by 3 s). It must not fail with "no sftctl
    manifest here" and leave the run going."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys, time\nif '--run-id' in sys.argv:  # the detached supervisor only\n    time.sleep(3)\n"
    )
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)}
    res = subprocess.run(
        [*sftctl_exe(), "run", "cpu-smoke", "--detach", *LONG],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    sup = int(re.search(r"supervisor pid (\d+)", res.stderr)[1])  # type: ignore[index]
    staging = Path(re.search(r"stop:\s+sftctl stop (\S+)", res.stderr)[1])  # type: ignore[index]
    st = _stat(sup)
    assert st is not None
    sampler = TreeSampler(sup)
    sampler.start()
    try:
        stop = subprocess.run(
            [*sftctl_exe(), "stop", str(staging)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert stop.returncode == 0, f"sftctl stop right after --detach: {stop.stderr.strip()}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (_alive(sup, st[2]) or any(_alive(*k) for k in sampler.seen)):
            time.sleep(0.2)
        assert not _alive(sup, st[2]), "the detached supervisor still runs after sftctl stop"
        assert not [k for k in sampler.seen if _alive(*k)], sampler.summary()
    finally:
        sampler.stop()
        if _alive(sup, st[2]):
            os.kill(sup, signal.SIGKILL)
        sampler.kill_all()


# --------------------------------------------------------------------------- 3+4. secrets, progress

SWAN_STEPS = 48
SWAN_CONFIG = f"""\
extends: cpu-smoke
args:
  report_to: swanlab
  swanlab_mode: local
  num_train_epochs: 3  # {SWAN_STEPS} steps
  output_dir: ./output/swan
"""
# The least time one training step of the swanlab run takes (see swan_run): the first
# and the last progress line are at least (SWAN_STEPS - 1) * STEP_DELAY_S = 4.7 s apart.
STEP_DELAY_S = 0.1


@dataclass
class SwanRun:
    run: Run
    rc: int
    markers: dict[str, str]
    config: Path
    env: dict[str, str]
    home: Path
    cache: Path
    hook: Path


@pytest.fixture(scope="module")
def swan_run(tmp_path_factory: pytest.TempPathFactory, e2e_cache: Path) -> Iterator[SwanRun]:
    """One complete swanlab (local mode) run with token markers in sftctl's env."""
    if importlib.util.find_spec("swanlab") is None or importlib.util.find_spec("swanboard") is None:
        pytest.skip("swanlab local mode needs swanlab and swanboard")
    base = tmp_path_factory.mktemp("swan")
    work, home = base / "work", base / "home"
    work.mkdir()
    (home / "tmp").mkdir(parents=True)
    tag = uuid.uuid4().hex
    markers = {
        "SWANLAB_API_KEY": f"swankey{tag}A",
        "WANDB_API_KEY": f"wandbkey{tag}B",
        "SWANLAB_TOKEN": f"swantoken{tag}C",
    }
    env = clean_env(
        SFTCTL_CACHE=str(e2e_cache), HOME=str(home), TMPDIR=str(home / "tmp"), HF_HUB_OFFLINE="1", **markers
    )
    config = work / "swan.yaml"
    config.write_text(SWAN_CONFIG)
    # Each training step takes at least STEP_DELAY_S (a hook in the training process,
    # conftest.pause_hook): the progress lines are spread over time on any host.
    hooked = pause_hook(base / "hook", env, step_delay=STEP_DELAY_S)
    run = start_run(work, hooked, str(config))
    try:
        rc = run.wait_exit(400)
        run.sampler.stop()
        yield SwanRun(run, rc, markers, config, env, home, e2e_cache, base / "hook")
    finally:
        run.cleanup()


def _files_with(root: Path, needles: list[bytes], skip: Path | None = None) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 200_000_000:
            data = path.read_bytes()
            hits += [f"{path}: {n.decode()}" for n in needles if n in data]
    return hits


@pytest.mark.timeout(450)
def test_swanlab_run_keeps_tokens_out_of_argv_and_files(swan_run: SwanRun) -> None:
    run = swan_run.run
    assert swan_run.rc == 0, run.stderr()[-4000:]
    needles = [m.encode() for m in swan_run.markers.values()]

    # While it ran: no token in the argv of any process of the tree.
    cmdlines = run.sampler.all_cmdlines()
    assert run.sampler.samples > 20 and len(cmdlines) >= 2
    assert run.sampler.matching("swift/cli/sft.py"), "never sampled the training process"
    leaked = [c[:300] for c in cmdlines if any(n in c for n in needles)]
    assert not leaked, f"token in a process's argv: {leaked}"

    # swanlab really logged, locally, offline.
    swanlog = run.cwd / "swanlog"
    assert any(swanlog.glob("run-*/*.swanlab")), f"no swanlab local run under {swanlog}"

    # Afterwards: not in what sftctl printed, logged, recorded or rendered.
    assert not any(n.decode() in run.stdout() + run.stderr() for n in needles)
    data = manifest_of(run.cwd / "output" / "swan")
    log = Path(data["log"])
    assert log.is_file() and log.stat().st_size > 0
    for path in (log, Path(data["run_dir"]) / "sftctl-manifest.json"):
        blob = path.read_bytes()
        assert not [n for n in needles if n in blob], f"token in {path}"
    for fmt in ("sh", "json"):
        res = subprocess.run(
            [*sftctl_exe(), "render", str(swan_run.config), "--format", fmt],
            cwd=run.cwd,
            env=swan_run.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert not [n for n in needles if n.decode() in res.stdout + res.stderr], f"token in render {fmt}"
    if "SWANLAB_API_KEY" in json.dumps(data.get("env", {})):
        assert data["env"]["SWANLAB_API_KEY"] == "<redacted>"

    # Every file under the work dir (sftctl's and ms-swift's), HOME and the cache.
    hits = _files_with(run.cwd, needles, skip=swanlog)
    hits += _files_with(swan_run.home, needles)
    hits += _files_with(swan_run.cache, needles)
    assert not hits, f"token written to disk: {hits}"
    swan_hits = _files_with(swanlog, needles)
    if swan_hits:  # swanlab's own business, but worth knowing
        import warnings

        warnings.warn(f"swanlab wrote a token into its local logs: {swan_hits}", stacklevel=1)


@pytest.mark.timeout(450)
def test_progress_lines_arrive_while_training(swan_run: SwanRun) -> None:
    run = swan_run.run
    assert swan_run.rc == 0, run.stderr()[-4000:]
    progress = run.progress()
    assert progress, f"no progress lines on stdout: {run.stdout()}"
    total = progress[0][2]
    steps = [s for _, s, _ in progress]
    assert total == SWAN_STEPS and steps == sorted(steps) and steps[-1] == total, steps
    # The steps were slowed down in the training process (and there only).
    hooked = hooked_processes(swan_run.hook)
    assert [h["step_delay"] for h in hooked] == [STEP_DELAY_S], hooked
    assert str(hooked[0]["argv0"]).endswith("swift/cli/sft.py"), hooked
    first = progress[0][0]
    # Read while the training command was still running, not replayed at the end.
    assert first.sftctl_running and first.leader_alive, first
    live = {s for ln, s, _ in progress if ln.sftctl_running and ln.leader_alive}
    assert len(live) >= 3, f"only steps {sorted(live)} were seen while training ran"
    spread = max(ln.read_at for ln, _, _ in progress) - first.read_at
    print(f"{len(progress)} progress lines over {spread:.1f} s; {len(live)} steps read while training ran")
    # The steps took >= (SWAN_STEPS - 1) * STEP_DELAY_S between the first line and the
    # last: lines printed as the steps happen arrive at least 2 s apart.
    assert spread >= 2.0, f"all progress lines arrived within {spread:.2f} s"
    # The timestamp on each line is the time it was printed (allow a slow reader).
    for ln, _, _ in progress:
        m = PROGRESS.match(ln.text)
        assert m is not None
        stamp = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
        assert -2.0 <= ln.read_at - stamp <= 5.0, (ln.text, ln.read_at)
    # The leader we watched is the one the manifest recorded.
    data = manifest_of(run.cwd / "output" / "swan")
    leader = run.sampler.leader()
    assert leader is not None and data["pid"] == leader[0]
    assert data["status"] == "succeeded" and data["last_step"] == total and data["first_step"] == 1
    assert "training finished" in run.stderr()
