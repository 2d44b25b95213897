"""The supervisor against real processes and real signals (Linux only)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import sftctl
from sftctl.runtime.supervise import (
    StartError,
    find_free_port,
    port_in_use,
    proc_ref,
    run_supervised,
    stop_tree,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

PROCS = Path(__file__).parent / "procs"
TREE = [sys.executable, str(PROCS / "tree.py")]
PY = sys.executable


def child_env() -> dict[str, str]:
    """Our environment, with the sftctl under test importable by the driver."""
    env = dict(os.environ)
    src = str(Path(sftctl.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def running(pid: int, start: int) -> bool:
    """Same process (pid and start time) still there and not a zombie."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == start


def wait_for(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def ready_pids(text: str) -> dict[str, list[int]]:
    """{"parent": [pid], "child": [...], "grandchild": [...]} from "ready ROLE PID" lines."""
    out: dict[str, list[int]] = {}
    for line in text.splitlines():
        if line.startswith("ready "):
            _, role, pid = line.split()
            out.setdefault(role, []).append(int(pid))
    return out


def refs_of(pids: list[int]) -> list[tuple[int, int]]:
    refs = [proc_ref(p) for p in pids]
    assert all(r is not None for r in refs), "a tree member died early"
    return [(r.pid, r.start) for r in refs if r is not None]


@pytest.fixture
def members() -> Iterator[list[tuple[int, int]]]:
    """(pid, start) of the processes a test starts; any still running at the end
    is SIGKILLed, so a failing test leaves nothing behind."""
    refs: list[tuple[int, int]] = []
    yield refs
    for pid, start in refs:
        if running(pid, start):
            os.kill(pid, signal.SIGKILL)


def start_driver(
    tmp_path: Path, members: list[tuple[int, int]], grace: float, *tree_args: str
) -> subprocess.Popen[bytes]:
    """Start driver.py supervising tree.py; wait until the whole tree is up."""
    driver = subprocess.Popen(
        [PY, str(PROCS / "driver.py"), str(tmp_path / "log"), str(tmp_path / "outcome.json")]
        + [str(grace), "--", *TREE, *tree_args],
        env=child_env(),
        start_new_session=True,  # a stray group signal can never reach pytest
    )
    members.extend(refs_of([driver.pid]))
    log = tmp_path / "log"
    wait_for(lambda: log.exists() and "ready parent" in log.read_text())
    found = ready_pids(log.read_text())
    assert len(found["child"]) == 2 and len(found["grandchild"]) == 2
    members.extend(refs_of([pid for pids in found.values() for pid in pids]))
    return driver


def outcome_of(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tmp_path / "outcome.json").read_text())
    return result


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_passes_through(code: int) -> None:
    before = signal.getsignal(signal.SIGTERM), threading.active_count()
    started: list[int] = []
    out = run_supervised(
        [PY, "-c", f"import sys; sys.exit({code})"], dict(os.environ), on_start=started.append
    )
    assert (out.returncode, out.signal, out.killed, out.leftovers) == (code, None, False, [])
    assert out.descendants[0] == started[0]
    assert out.started_at <= out.ended_at
    assert (signal.getsignal(signal.SIGTERM), threading.active_count()) == before


def test_death_by_signal_is_128_plus_n() -> None:
    out = run_supervised(
        [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], dict(os.environ)
    )
    assert (out.returncode, out.signal, out.killed) == (128 + 9, None, False)


def test_output_reaches_log_and_on_line_in_order(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "logs" / "run.log"
    log.parent.mkdir()
    log.write_bytes(b"earlier\n")  # appended to, never truncated
    lines: list[str] = []
    out = run_supervised(
        [PY, str(PROCS / "lines.py"), "3"],
        dict(os.environ),
        log_path=log,
        on_line=lines.append,
        echo=True,
    )
    assert out.returncode == 3
    numbered = [f"line {i} é" for i in range(200)]
    assert lines == [*numbered, "progress 1", "progress 2", "tail"]
    body = "".join(f"{line}\n" for line in numbered) + "progress 1\rprogress 2\r\ntail"
    assert log.read_bytes() == b"earlier\n" + body.encode()
    assert capfd.readouterr().out.endswith("progress 2\r\ntail")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_forwarded_signal_stops_the_whole_tree(
    tmp_path: Path, members: list[tuple[int, int]], sig: signal.Signals
) -> None:
    driver = start_driver(tmp_path, members, 10.0)
    driver.send_signal(sig)
    assert driver.wait(timeout=20) == 128 + sig
    outcome = outcome_of(tmp_path)
    assert (outcome["signal"], outcome["killed"]) == (sig, False)
    assert {pid for pid, _ in members[1:]} <= set(outcome["descendants"])
    assert [m for m in members if running(*m)] == []


def test_tree_ignoring_sigterm_is_killed_after_grace(tmp_path: Path, members: list[tuple[int, int]]) -> None:
    driver = start_driver(tmp_path, members, 1.0, "--ignore-term")
    t0 = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=20) == 128 + signal.SIGTERM
    assert 1.0 <= time.monotonic() - t0 < 10
    outcome = outcome_of(tmp_path)
    assert (outcome["signal"], outcome["killed"]) == (signal.SIGTERM, True)
    assert [m for m in members if running(*m)] == []


def test_second_signal_kills_at_once(tmp_path: Path, members: list[tuple[int, int]]) -> None:
    driver = start_driver(tmp_path, members, 30.0, "--ignore-term")
    driver.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=10) == 128 + signal.SIGTERM  # the first one counts
    assert outcome_of(tmp_path)["killed"] is True
    assert [m for m in members if running(*m)] == []


@pytest.mark.parametrize("ignore_term", [False, True])
def test_orphans_of_a_parent_that_exits_are_stopped(
    members: list[tuple[int, int]], ignore_term: bool
) -> None:
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line.startswith("ready parent"):  # all up: note identities while they live
            found = ready_pids("\n".join(lines))
            members.extend(refs_of(found["child"] + found["grandchild"]))

    args = ["--orphan"] + (["--ignore-term"] if ignore_term else [])
    out = run_supervised(
        [*TREE, *args], dict(os.environ), on_line=on_line, poll_interval=0.05, leftover_grace=0.5
    )
    assert (out.returncode, out.signal, out.killed) == (0, None, ignore_term)
    assert len(members) == 4 and {pid for pid, _ in members} <= set(out.leftovers)
    assert [m for m in members if running(*m)] == []


def _descendants(root: int) -> set[int]:
    """Pids below ``root`` by /proc parent links."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                data = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            parent[int(name)] = int(data[data.rfind(b")") + 2 :].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize("ignore_term", [False, True])
def test_stop_tree_of_a_detached_run(members: list[tuple[int, int]], ignore_term: bool) -> None:
    proc = subprocess.Popen(
        [*TREE, *(["--ignore-term"] if ignore_term else [])],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    members.extend(refs_of([proc.pid]))
    found = ready_pids("".join(proc.stdout.readline() for _ in range(5)))
    kids = found["child"] + found["grandchild"]
    members.extend(refs_of(kids))
    assert set(kids) <= _descendants(proc.pid)
    leader = proc_ref(proc.pid)
    assert leader is not None
    try:
        assert stop_tree([leader], signal.SIGTERM, grace=1.0, poll_interval=0.05) is ignore_term
        assert [m for m in members if running(*m)] == []
    finally:
        proc.stdout.close()
        proc.wait(timeout=10)


def test_a_failing_callback_leaves_nothing_running(members: list[tuple[int, int]]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line.startswith("ready parent"):
            members.extend(refs_of([p for ps in ready_pids("\n".join(lines)).values() for p in ps]))
            raise RuntimeError("display broke")

    with pytest.raises(RuntimeError, match="display broke"):
        run_supervised([*TREE], dict(os.environ), on_line=on_line, grace=1.0, poll_interval=0.05)
    assert len(members) == 5 and [m for m in members if running(*m)] == []
    with pytest.raises(StartError) as info:  # not any OSError: a start failure, told apart
        run_supervised(["/nonexistent/swift"], dict(os.environ))
    assert info.value.errno == errno.ENOENT
    assert signal.getsignal(signal.SIGTERM) is before


def test_find_free_port_and_port_in_use() -> None:
    port = find_free_port()
    assert not port_in_use(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert port_in_use(port)
    assert not port_in_use(port)
