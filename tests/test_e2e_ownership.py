"""Who owns an output folder and a run's processes (issue: nothing lost, no one let in).

H1: two real runs into one add_version: false folder: the second is refused before launch,
naming the first; after the first's supervisor and watchdog are SIGKILLed, its surviving
training still keeps the folder busy, and `stop` ends exactly the processes carrying the
run's marker.
H3: a SIGKILL of sftctl alone ends the whole run (its watchdog), setsid'd grandchildren too.
H2: a manifest crafted to name another user's process tree makes `stop` signal nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_signals, pause_hook, sftctl_exe
from test_e2e_regressions import env_for, sftctl

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]
IN_PLACE = ("--set", "add_version=false", "--set", "save_steps=8")


def _marked(run_id: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if f"SFTCTL_RUN_ID={run_id}".encode() in Path(f"/proc/{name}/environ").read_bytes().split(
                    b"\0"
                ):
                    out.append(int(name))
            except OSError:
                continue
    return out


@pytest.mark.slow
@pytest.mark.swift
@pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift")
def test_h1_one_in_place_folder_one_run(e2e_cache: Path, tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    env = env_for(e2e_cache, tmp_path / "home")
    hooked = pause_hook(tmp_path / "hook", env, after_step=8, marker=marker)
    work = tmp_path / "work"
    work.mkdir()
    first = subprocess.Popen(
        [*sftctl_exe(), "run", "cpu-smoke", *IN_PLACE, "--quiet"],
        cwd=work, env=hooked, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=default_signals,
    )  # fmt: skip
    survivors: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        lock = json.loads((work / "output" / "cpu-smoke" / ".sftctl" / "lock").read_text())
        run_id = lock["run_id"]
        second = sftctl(work, env, "run", "cpu-smoke", *IN_PLACE, "--set", "learning_rate=3e-4", timeout=60)
        assert second.returncode == 1, second.stderr
        assert f"run {run_id}" in second.stderr and "nothing was started" in second.stderr
        # The supervisor and its watchdog die hard (as in an OOM kill of both): the training
        # (paused, carrying the marker) lives on.
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    line = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"sftctl.runtime.watchdog" in line and run_id.encode() in line:
                        os.kill(int(pid), signal.SIGKILL)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        survivors = _marked(run_id)
        assert survivors, "the training should have outlived its supervisor for this test"
        third = sftctl(work, env, "run", "cpu-smoke", *IN_PLACE, timeout=60)
        assert third.returncode == 1 and "lost its supervisor" in third.stderr, third.stderr
        stop = sftctl(work, env, "stop", str(work / "output" / "cpu-smoke" / ".sftctl" / run_id), timeout=90)
        assert stop.returncode == 0, stop.stderr
        assert "stopped the run's" in stop.stderr
        time.sleep(1)
        assert _marked(run_id) == []
        # The folder is free again: what stops a fourth run now is the first run's checkpoint.
        fourth = sftctl(work, env, "run", "cpu-smoke", *IN_PLACE, timeout=60)
        assert fourth.returncode == 1 and "already holds checkpoints" in fourth.stderr, fourth.stderr
    finally:
        if first.poll() is None:
            first.kill()
        for pid in _marked(lock["run_id"]) if "lock" in locals() else []:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to start nobody's process and own its folder")
def test_h2_stop_signals_nothing_a_crafted_manifest_names(tmp_path: Path) -> None:
    """A folder owned by nobody, a manifest naming nobody's unrelated process tree."""
    folder = tmp_path / "crafted"
    folder.mkdir()
    victim = subprocess.Popen(["runuser", "-u", "nobody", "--", "sleep", "300"], start_new_session=True)
    try:
        time.sleep(0.5)
        kids = [int(p) for p in Path(f"/proc/{victim.pid}/task/{victim.pid}/children").read_text().split()]
        pids = [victim.pid, *kids]
        starts = {p: int(Path(f"/proc/{p}/stat").read_bytes().split(b") ")[-1].split()[19]) for p in pids}
        env = env_for(tmp_path / "cache", tmp_path / "home")
        for role in ("supervisor", "leader"):
            doc = {
                "status": "running",
                "run_id": "crafted",
                "pid": pids[-1],
                "leader_start": starts[pids[-1]],
            }
            if role == "supervisor":
                doc.update(supervisor_pid=pids[-1], supervisor_start=starts[pids[-1]])
            manifest = folder / "sftctl-manifest.json"
            manifest.write_text(json.dumps(doc))
            os.chown(folder, 65534, 65534)
            os.chown(manifest, 65534, 65534)
            out = sftctl(tmp_path, env, "stop", str(folder), timeout=60)
            assert all(Path(f"/proc/{p}").exists() for p in pids), f"{role}: stop killed a foreign process"
            assert json.loads(manifest.read_text()) == doc, "the manifest was rewritten"
            assert manifest.stat().st_uid == 65534
            if role == "supervisor":
                assert out.returncode == 1 and "is not an sftctl run" in out.stderr, out.stderr
            else:
                assert out.returncode == 0 and "no" in out.stderr and "process of this run" in out.stderr
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)


# In the training processes: double-fork a `sleep` that calls setsid (it leaves the tree,
# keeps the environment and so the run's marker), then go on training.
ESCAPER = """
import os, sys
if sys.argv and sys.argv[0].replace(os.sep, "/").endswith("swift/cli/sft.py"):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "300"])
        os._exit(0)
    os.wait()
"""


@pytest.mark.slow
@pytest.mark.swift
@pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift")
@pytest.mark.parametrize("launcher", ["swift", "torchrun"])
def test_h3_sigkill_of_sftctl_ends_the_whole_run(e2e_cache: Path, tmp_path: Path, launcher: str) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ESCAPER)
    env = env_for(e2e_cache, tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    work = tmp_path / "work"
    work.mkdir()
    argv = [*sftctl_exe(), "run", "cpu-smoke-ddp", "--set", "num_train_epochs=40", "--grace", "1", "--quiet"]
    argv += ["--set", f"launch.launcher={launcher}"]
    proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    output = work / "output" / "cpu-smoke-ddp"
    run_id = ""
    try:
        deadline = time.monotonic() + 300
        while True:  # training has started: a step is logged
            logs = list(output.glob("v*/logging.jsonl"))
            if logs and logs[0].stat().st_size > 0:
                break
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        (staging,) = [p for p in (output / ".sftctl").iterdir() if p.is_dir()]
        run_id = staging.name  # a versioned run shares the lock and writes no holder record
        ours = _marked(run_id)
        escaped = [p for p in ours if b"sleep" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(ours) >= 4 and escaped, ours  # launcher, ranks, and the setsid'd sleeps
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(3)  # the run has 1 s of grace; 3 s later nothing of it may be left
        assert _marked(run_id) == [], "processes of the run survived its supervisor"
        (manifest,) = output.glob("v*/sftctl-manifest.json")
        assert json.loads(manifest.read_text())["status"] == "lost"
        runs = sftctl(work, env, "runs", str(output), timeout=60)
        assert "lost" in runs.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _marked(run_id) if run_id else []:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.swift
@pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to mount a small tmpfs")
def test_h4_a_disk_that_fills_mid_run_never_makes_sftctl_kill_it(e2e_cache: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    env = pause_hook(tmp_path / "hook", env_for(e2e_cache, tmp_path / "home"), step_delay=0.05)
    work = tmp_path / "work"
    work.mkdir()
    argv = [*sftctl_exe(), "run", "cpu-smoke", "--set", f"output_dir={small / 'out'}", "--quiet"]
    argv += ["--set", "num_train_epochs=20", "--set", "save_steps=1000"]
    proc = subprocess.Popen(
        argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=default_signals,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not any(p.stat().st_size for p in (small / "out").glob("v*/logging.jsonl")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with open(small / "filler", "wb") as fh, contextlib.suppress(OSError):  # fill it up
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        out, err = proc.communicate(timeout=300)
        (small / "filler").unlink()
        assert "Traceback" not in err and "internal error" not in err, err
        assert "cannot write the log any more" in err or "cannot write the run's manifest" in err, err
        # Whatever ms-swift did about the full disk is its own exit code, never a signal of sftctl's.
        assert proc.returncode < 128, (proc.returncode, err)
        manifests = list((small / "out").glob("v*/sftctl-manifest*.json"))
        data = json.loads(manifests[0].read_text()) if manifests else {}
        recorded = data.get("status") in ("succeeded", "failed") and data.get("exit_code") == proc.returncode
        assert recorded or "could not record the end of the run" in err, (data, err)
        assert data.get("signal") is None
        assert not [p for p in small.rglob("*.tmp")], "a temporary file was left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.slow
@pytest.mark.swift
@pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift")
def test_h5_deleting_the_staging_folder_loses_no_log(e2e_cache: Path, tmp_path: Path) -> None:
    import shutil

    env = env_for(e2e_cache, tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [*sftctl_exe(), "run", "cpu-smoke", "--quiet"], cwd=work, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals,
    )  # fmt: skip
    staging_root = work / "output" / "cpu-smoke" / ".sftctl"
    deadline = time.monotonic() + 60
    while not any(p.is_dir() for p in staging_root.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    (staging,) = [p for p in staging_root.iterdir() if p.is_dir()]
    assert not list((work / "output" / "cpu-smoke").glob("v*")), "too late: ms-swift made its folder"
    time.sleep(0.5)  # let the log hold something first
    shutil.rmtree(staging)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (run_dir,) = (work / "output" / "cpu-smoke").glob("v*")
    log = (run_dir / "sftctl.log").read_text(errors="replace")
    # The start of the log (written before ms-swift made its folder) and its end are both there.
    assert "Global seed set to" in log and "last_model_checkpoint" in (run_dir / "logging.jsonl").read_text()
    assert "output_dir:" in log and "Train:" in log
    assert "the staging folder was deleted" in err


@pytest.mark.slow
@pytest.mark.swift
@pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift")
def test_h1_two_detached_in_place_runs_at_once(e2e_cache: Path, tmp_path: Path) -> None:
    """Two `run --detach` into one add_version: false folder at the same moment: one starts,
    the other is refused in the terminal (exit 1, naming the first), never in the background."""
    env = env_for(e2e_cache, tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    argv = [*sftctl_exe(), "run", "cpu-smoke", *IN_PLACE, "--set", "num_train_epochs=20", "--detach"]
    procs = [
        subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    results = [(p.wait(120), p.communicate()[1]) for p in procs]
    try:
        codes = sorted(rc for rc, _ in results)
        assert codes == [0, 1], results
        refused = next(err for rc, err in results if rc == 1)
        assert "is in use" in refused and "nothing was started" in refused
        started = next(err for rc, err in results if rc == 0)
        run_id = started.split("sftctl stop ")[1].strip().rsplit("/", 1)[-1]
        assert run_id in refused or "runs are in progress" in refused
    finally:
        for rc, err in results:
            if rc == 0:
                staging = err.split("sftctl stop ")[1].strip()
                sftctl(work, env, "stop", staging, timeout=120)
