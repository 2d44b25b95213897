"""End to end: real training runs of ms-swift 4.6 on the CPU, launched by `sftctl`.

Every run starts the installed `sftctl` console script in a subprocess, cwd a fresh
tmp dir, with HOME and TMPDIR tmp dirs and SFTCTL_CACHE one folder for the whole test
session (the tiny built-in Qwen3 is built once, DeepSpeed's CPU op compiles once).

Runs are expensive (20-90 s each on 2 cores, mostly imports), so each is made once, in a
module-scoped fixture, and several tests read it. The uninterrupted `cpu-smoke` run is
the reference the others are compared with: the same seed and data give the same loss
per step, so a resumed run must log exactly the losses of steps N+1..16, and a DDP run
with 2 processes x batch 2 the losses of one process x batch 4.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import clean_env, default_signals, hooked_processes, pause_hook, sftctl_exe

import sftctl
from sftctl.resources.params import human

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sftctl supervises via /proc")

TestFn = TypeVar("TestFn", bound=Callable[..., None])


def real_training(test: TestFn) -> TestFn:
    """Marks a test that runs real ms-swift training: `slow` and `swift`, skipped without
    ms-swift. (Every test here but the --resume refusal, which starts nothing.)"""
    needs_swift = pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift")
    marked: TestFn = pytest.mark.slow(pytest.mark.swift(needs_swift(test)))
    return marked


# Hard limits. A run of cpu-smoke takes 20-40 s on an idle 2-core machine and up to
# ~90 s on a busy one; the first DeepSpeed run also compiles a CPU op (~60-150 s).
RUN_S = 300
DS_RUN_S = 540
CLI_S = 60
# pytest-timeout counts fixture setup too: a test may pay for up to three runs.
TEST_S = 900

RUN_FOLDER = re.compile(r"^v\d+-\d{8}-\d{6}$")
PROGRESS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  step (\d+)/(\d+)  ", re.M)
# Losses agree to ~1e-7 (float32, deterministic CPU kernels); this leaves headroom.
LOSS_REL = 1e-5
# The tiny model is seeded and float32: a distributed run must agree with one process.
DDP_REL = 1e-4

# A resumable run: cpu-smoke's 16 steps with a checkpoint every 4 (save_total_limit 2).
SAVE4 = ("--set", "save_steps=4")
# Short distributed runs: 2 processes x batch 2 = cpu-smoke's effective batch of 4.
DDP_SHORT = ("--set", "per_device_train_batch_size=2", "--set", "max_steps=2", "--set", "save_steps=2")


# --------------------------------------------------------------------------- helpers


@dataclass
class Result:
    """A finished `sftctl` command."""

    argv: list[str]
    cwd: Path
    home: Path
    rc: int
    stdout: str
    stderr: str
    seconds: float
    ended_ticks: float  # clock ticks since boot when it ended, as in /proc/PID/stat

    def tail(self, n: int = 40) -> str:
        """For assertion messages: the command and the end of its output."""
        lines = (self.stdout + "\n" + self.stderr).splitlines()[-n:]
        return f"$ {' '.join(self.argv)}  (rc {self.rc}, {self.seconds:.0f} s)\n" + "\n".join(lines)


def make_env(cache: Path, home: Path) -> dict[str, str]:
    """No inherited GPU/launcher hints; every cache and temp file under the tests' folders."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return clean_env(
        SFTCTL_CACHE=str(cache),
        HOME=str(home),
        TMPDIR=str(home / "tmp"),
        HF_HUB_OFFLINE="1",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Wait for `proc`; past `timeout` stop it the way a user would (SIGTERM: sftctl
    ends its training tree), SIGKILL if that hangs, and fail the test."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = _stop(proc)
        pytest.fail(f"timed out after {timeout} s: {proc.args}\n{(out + err)[-4000:]}")
    except BaseException:  # pytest-timeout, Ctrl-C: leave no training behind
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _start(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start sftctl as from a terminal, its output captured."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )


def sftctl_cmd(cwd: Path, env: dict[str, str], *args: str, timeout: float = RUN_S) -> Result:
    """Run `sftctl ARGS` in `cwd` and wait for it."""
    argv = [*sftctl_exe(), *args]
    start = time.monotonic()
    proc = _start(argv, cwd, env)
    out, err = _finish(proc, timeout)
    return Result(
        argv, cwd, Path(env["HOME"]), proc.returncode, out, err, time.monotonic() - start, _ticks_now()
    )


def run_dirs(output_dir: Path) -> list[Path]:
    """ms-swift's run folders (v<N>-<timestamp>) under `output_dir`, oldest first."""
    if not output_dir.is_dir():
        return []
    return sorted(
        (p for p in output_dir.iterdir() if p.is_dir() and RUN_FOLDER.match(p.name)),
        key=lambda p: int(p.name[1:].split("-", 1)[0]),
    )


def only_run_dir(output_dir: Path, res: Result) -> Path:
    found = run_dirs(output_dir)
    assert len(found) == 1, f"expected one run folder in {output_dir}, got {found}\n{res.tail()}"
    return found[0]


def manifest(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "sftctl-manifest.json").read_text())
    return data


def logged_steps(run_dir: Path) -> dict[int, dict[str, Any]]:
    """ms-swift's logging.jsonl: the training-step rows, by global step."""
    rows: dict[int, dict[str, Any]] = {}
    for line in (run_dir / "logging.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row and "global_step/max_steps" in row:
            rows[int(str(row["global_step/max_steps"]).split("/")[0])] = row
    return rows


def final_row(run_dir: Path) -> dict[str, Any]:
    """The last row of logging.jsonl: last_model_checkpoint and the run's totals."""
    row: dict[str, Any] = json.loads((run_dir / "logging.jsonl").read_text().splitlines()[-1])
    assert "last_model_checkpoint" in row, row
    return row


def trainer_state(checkpoint: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((checkpoint / "trainer_state.json").read_text())
    return data


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def assert_ok(res: Result) -> None:
    assert res.rc == 0, res.tail()


def assert_same_losses(run_dir: Path, reference: dict[int, dict[str, Any]], steps: range, rel: float) -> None:
    got = logged_steps(run_dir)
    assert sorted(got) == list(steps), f"{run_dir}: logged steps {sorted(got)}"
    mine = {s: got[s]["loss"] for s in steps}
    theirs = {s: reference[s]["loss"] for s in steps}
    assert mine == pytest.approx(theirs, rel=rel), f"{run_dir}: {mine} != reference {theirs}"


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ticks_now() -> float:
    """Clock ticks since boot, the unit of a process's start time in /proc/PID/stat."""
    return float(Path("/proc/uptime").read_text().split()[0]) * CLK_TCK


def _tmp(factory: pytest.TempPathFactory, name: str) -> tuple[Path, Path]:
    """A fresh working folder and HOME for one run."""
    return factory.mktemp(name), factory.mktemp(f"{name}-home")


# --------------------------------------------------------------------------- runs (once each)


@dataclass
class Trained:
    res: Result
    run_dir: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def full(e2e_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """`sftctl run cpu-smoke` as a user runs it: 16 steps, checkpoints 8 and 16."""
    work, home = _tmp(tmp_path_factory, "full")
    env = make_env(e2e_cache, home)
    res = sftctl_cmd(work, env, "run", "cpu-smoke")
    assert_ok(res)
    return Trained(res, only_run_dir(work / "output" / "cpu-smoke", res), env)


@pytest.fixture(scope="module")
def reference(full: Trained) -> dict[int, dict[str, Any]]:
    """Loss per step of the uninterrupted single-process run (batch 4, seed 42)."""
    rows = logged_steps(full.run_dir)
    assert sorted(rows) == list(range(1, 17)), rows
    return rows


@pytest.fixture(scope="module")
def stopped(e2e_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """cpu-smoke with a checkpoint every 4 steps, stopped with SIGTERM to sftctl right
    after checkpoint-4 is complete. A hook in the training process (conftest.pause_hook)
    holds training still once checkpoint-4 is written and says so with a marker file, so
    the signal always lands between steps 4 and 5, however fast the host trains."""
    work, home = _tmp(tmp_path_factory, "stopped")
    env = make_env(e2e_cache, home)
    hook = tmp_path_factory.mktemp("stopped-hook")  # outside HOME and the work folder
    marker = hook / "checkpoint-4-written"
    hooked = pause_hook(hook, env, after_step=4, marker=marker)
    argv = [*sftctl_exe(), "run", "cpu-smoke", *SAVE4]
    start = time.monotonic()
    proc = _start(argv, work, hooked)
    output_dir = work / "output" / "cpu-smoke"
    deadline = start + RUN_S
    try:
        while not marker.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(
                    f"the run ended before checkpoint-4 (rc {proc.returncode})\n{(out + err)[-4000:]}"
                )
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGTERM)
                out, err = _finish(proc, 60)
                pytest.fail(f"no checkpoint-4 within {RUN_S} s\n{(out + err)[-4000:]}")
            time.sleep(0.05)
        assert json.loads(marker.read_text())["global_step"] == 4
        hooked = hooked_processes(hook)
        assert len(hooked) == 1 and str(hooked[0]["argv0"]).endswith("swift/cli/sft.py"), hooked
        print(f"stopped: held after checkpoint-4 in {hooked[0]}")
        proc.send_signal(signal.SIGTERM)
        out, err = _finish(proc, 120)
    except BaseException:
        if proc.poll() is None:
            _stop(proc)
        raise
    res = Result(argv, work, home, proc.returncode, out, err, time.monotonic() - start, _ticks_now())
    # The later runs (resume) start from `env`: without the hook.
    return Trained(res, only_run_dir(output_dir, res), env)


def _ddp(
    e2e_cache: Path, factory: pytest.TempPathFactory, name: str, *sets: str, timeout: float = RUN_S
) -> Trained:
    work, home = _tmp(factory, name)
    env = make_env(e2e_cache, home)
    res = sftctl_cmd(work, env, "run", "cpu-smoke-ddp", *DDP_SHORT, *sets, timeout=timeout)
    assert_ok(res)
    return Trained(res, only_run_dir(work / "output" / "cpu-smoke-ddp", res), env)


# --------------------------------------------------------------------------- full SFT


@real_training
@pytest.mark.timeout(TEST_S)
def test_full_run_writes_checkpoints_and_log(full: Trained) -> None:
    run_dir = full.run_dir
    for step in (8, 16):  # save_steps 8, save_total_limit 2
        ckpt = run_dir / f"checkpoint-{step}"
        assert (ckpt / "model.safetensors").stat().st_size > 0, files_under(run_dir)
        assert trainer_state(ckpt)["global_step"] == step
    assert trainer_state(run_dir / "checkpoint-16")["max_steps"] == 16
    assert final_row(run_dir)["last_model_checkpoint"] == str(run_dir / "checkpoint-16")
    assert sorted(logged_steps(run_dir)) == list(range(1, 17))
    # ms-swift's own output went to the log, moved into the run folder.
    log = run_dir / "sftctl.log"
    text = log.read_text(errors="replace")
    assert "[INFO:swift]" in text and "global_step/max_steps" in text, text[-2000:]
    # The cpu-smoke env sends every cache to the sftctl cache: nothing lands in HOME.
    home = files_under(full.res.home)
    assert [f for f in home if not f.startswith("tmp/")] == [], home


@real_training
@pytest.mark.timeout(TEST_S)
def test_full_run_manifest(full: Trained, e2e_cache: Path) -> None:
    run_dir = full.run_dir
    m = manifest(run_dir)
    assert m["status"] == "succeeded" and m["exit_code"] == 0, m
    assert m["signal"] is None and m["killed"] is False
    assert m["target"] == m["preset"] == "cpu-smoke"
    assert m["run_dir"] == str(run_dir)
    assert m["last_checkpoint"] == str(run_dir / "checkpoint-16")
    assert m["log"] == str(run_dir / "sftctl.log") and Path(m["log"]).is_file()
    assert m["host"] == socket.gethostname()
    assert m["cwd"] == str(full.res.cwd)
    # Versions that decide what ran: read from the same environment the tests run in.
    v = m["versions"]
    assert v["sftctl"] == sftctl.__version__
    assert v["ms-swift"] == metadata.version("ms-swift") == "4.6.0"
    assert v["torch"] == metadata.version("torch")
    assert v["python"] == platform.python_version()
    started, ended = datetime.fromisoformat(m["started_at"]), datetime.fromisoformat(m["ended_at"])
    assert started.tzinfo is not None and started <= ended
    assert 0 < m["wall_seconds"] <= (ended - started).total_seconds() + 2
    # What ran is exactly what `render` prints (same SFTCTL_CACHE, same built-in paths).
    rendered = sftctl_cmd(full.res.cwd, full.env, "render", "cpu-smoke", "--format", "json", timeout=CLI_S)
    assert_ok(rendered)
    doc = json.loads(rendered.stdout)
    assert m["argv"] == doc["argv"]
    assert m["env"] == doc["env"] and m["unset"] == doc["unset"]
    assert m["argv"][:2] == ["swift", "sft"]
    assert str(e2e_cache / "models") in m["argv"][m["argv"].index("--model") + 1]
    assert m["env"]["TORCH_EXTENSIONS_DIR"] == str(e2e_cache / "torch_extensions")
    # The staging folder only points at the run folder now.
    pointer = json.loads((Path(m["staging_dir"]) / "manifest.json").read_text())
    assert pointer == {
        "moved_to": str(run_dir),
        "manifest": str(run_dir / "sftctl-manifest.json"),
        "run_id": m["run_id"],
    }
    # Figures from logging.jsonl.
    rows = logged_steps(run_dir)
    assert m["first_step"] == 1 and m["last_step"] == 16
    assert m["first_loss"] == pytest.approx(rows[1]["loss"])
    assert m["last_loss"] == pytest.approx(rows[16]["loss"])
    totals = final_row(run_dir)["log_history"][-1]
    assert m["steps_per_second"] == pytest.approx(totals["train_steps_per_second"])


@real_training
@pytest.mark.timeout(TEST_S)
def test_full_run_progress_and_summary(full: Trained) -> None:
    m = manifest(full.run_dir)
    # One timestamped line per logged step on stdout (not a terminal: plain mode).
    steps = [(int(a), int(b)) for a, b in PROGRESS.findall(full.res.stdout)]
    assert steps == [(s, 16) for s in range(1, 17)], full.res.tail()
    err = full.res.stderr
    assert "sftctl: training finished" in err, full.res.tail()
    assert f"checkpoint: {full.run_dir / 'checkpoint-16'}" in err
    assert f"loss: {m['first_loss']:.4f} (first) -> {m['last_loss']:.4f} (last), 16 steps" in err
    assert f"speed: {m['steps_per_second']:.3g} steps/s" in err
    wall = re.search(r"wall time: ([\d.]+) s", err)
    assert wall and float(wall.group(1)) == pytest.approx(m["wall_seconds"], abs=0.11), err
    assert f"run folder: {full.run_dir}" in err


@real_training
@pytest.mark.timeout(TEST_S)
def test_runs_and_show_read_the_run(full: Trained) -> None:
    output_dir = full.run_dir.parent
    m = manifest(full.run_dir)
    listed = sftctl_cmd(full.res.cwd, full.env, "runs", str(output_dir), "--json", timeout=CLI_S)
    assert_ok(listed)
    rows = json.loads(listed.stdout)
    assert [r["run_id"] for r in rows] == [m["run_id"]], rows
    assert rows[0]["status"] == "succeeded" and rows[0]["exit_code"] == 0
    assert rows[0]["run_dir"] == str(full.run_dir)
    assert rows[0]["last_checkpoint"] == str(full.run_dir / "checkpoint-16")
    # Peak anonymous memory of the process tree: torch and ms-swift alone take hundreds of MB.
    peak, per_process = m["peak_rss_bytes"], m["peak_process_rss_bytes"]
    assert 200 * 2**20 < per_process <= peak < 8 * 2**30, (per_process, peak)

    table = sftctl_cmd(full.res.cwd, full.env, "runs", "output/cpu-smoke", timeout=CLI_S)
    assert_ok(table)
    assert full.run_dir.name in table.stdout and "succeeded" in table.stdout, table.stdout
    assert "checkpoint-16" in table.stdout
    assert human(peak) in table.stdout, table.stdout

    for folder in (full.run_dir, Path(m["staging_dir"])):  # the pointer is followed
        shown = sftctl_cmd(full.res.cwd, full.env, "show", str(folder), timeout=CLI_S)
        assert_ok(shown)
        out = shown.stdout
        assert f"# manifest: {full.run_dir / 'sftctl-manifest.json'}" in out, out
        assert "status: succeeded" in out and "exit_code: 0" in out
        assert f"last_checkpoint: {full.run_dir / 'checkpoint-16'}" in out
        assert "\n  swift sft --model " in out and "--save_steps 8" in out


# --------------------------------------------------------------------------- LoRA


@real_training
@pytest.mark.timeout(TEST_S)
def test_lora_run_writes_adapter(e2e_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    work, home = _tmp(tmp_path_factory, "lora")
    res = sftctl_cmd(work, make_env(e2e_cache, home), "run", "cpu-smoke-lora")
    assert_ok(res)
    run_dir = only_run_dir(work / "output" / "cpu-smoke-lora", res)
    ckpt = run_dir / "checkpoint-16"
    assert (ckpt / "adapter_model.safetensors").stat().st_size > 0, files_under(run_dir)
    adapter = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 8 and adapter["lora_alpha"] == 32
    assert set(adapter["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert not (ckpt / "model.safetensors").exists()  # an adapter, not full weights
    assert trainer_state(ckpt)["global_step"] == 16
    m = manifest(run_dir)
    assert m["status"] == "succeeded" and m["exit_code"] == 0
    assert m["last_checkpoint"] == str(ckpt)
    assert m["argv"][m["argv"].index("--tuner_type") + 1] == "lora"


# --------------------------------------------------------------------------- stop and resume


@real_training
@pytest.mark.timeout(TEST_S)
def test_sigterm_after_checkpoint_stops_the_run(stopped: Trained) -> None:
    res, run_dir = stopped.res, stopped.run_dir
    assert res.rc == 128 + signal.SIGTERM, res.tail()
    m = manifest(run_dir)
    assert m["status"] == "signalled" and m["signal"] == signal.SIGTERM, m
    assert m["exit_code"] == 128 + signal.SIGTERM
    assert m["last_checkpoint"] == str(run_dir / "checkpoint-4")
    assert "stopped by signal 15" in res.stderr
    assert f"checkpoint: {run_dir / 'checkpoint-4'}" in res.stderr
    assert f"resume: sftctl resume {run_dir}" in res.stderr  # the interrupted run says how to go on
    # Stopped while held right after checkpoint-4: no later step, no later checkpoint.
    assert not (run_dir / "checkpoint-8").exists(), files_under(run_dir)
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-4"]
    steps = sorted(logged_steps(run_dir))
    assert steps == [1, 2, 3, 4], steps
    # Nothing of the training tree outlived sftctl (a pid reused since is not ours).
    for pid in m["descendants"]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X") or int(fields[19]) > res.ended_ticks:
            continue  # exited, or started after the run ended: not ours
        pytest.fail(f"pid {pid} of the stopped run still runs: {cmdline!r}")


def _check_resumed(run_dir: Path, source: Path, res: Result, reference: dict[int, dict[str, Any]]) -> None:
    assert_ok(res)
    assert run_dir != source.parent and run_dir.parent == source.parent.parent
    # The log continues with steps 5..16, and they are the uninterrupted run's steps.
    assert_same_losses(run_dir, reference, range(5, 17), LOSS_REL)
    state = trainer_state(run_dir / "checkpoint-16")
    assert state["global_step"] == 16 and state["max_steps"] == 16
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, 17))
    m = manifest(run_dir)
    assert m["status"] == "succeeded" and m["exit_code"] == 0
    assert m["last_checkpoint"] == str(run_dir / "checkpoint-16")
    i = m["argv"].index("--resume_from_checkpoint")
    assert m["argv"][i + 1] == str(source)
    assert m["config"]["args"]["resume_from_checkpoint"] == str(source)
    assert m["argv"][m["argv"].index("--save_steps") + 1] == "4"  # the overrides kept
    assert m["first_loss"] == pytest.approx(reference[5]["loss"], rel=LOSS_REL)
    assert f"checkpoint: {run_dir / 'checkpoint-16'}" in res.stderr
    assert m["first_step"] == 5 and m["last_step"] == 16
    assert "(last), steps 5-16 (12 steps)" in res.stderr
    # The resumed run names the preset text that produced it, as the first run did (D5).
    first = manifest(source.parent)
    assert m["preset_hash"] == first["preset_hash"] != hashlib.sha256(b"").hexdigest()[:16]
    assert m["files"] == first["files"]


@real_training
@pytest.mark.timeout(TEST_S)
def test_resume_command_continues_from_last_checkpoint(
    stopped: Trained, reference: dict[int, dict[str, Any]]
) -> None:
    source = stopped.run_dir / "checkpoint-4"
    before = files_under(stopped.run_dir)
    res = sftctl_cmd(stopped.res.cwd, stopped.env, "resume", str(stopped.run_dir))
    new = [d for d in run_dirs(stopped.run_dir.parent) if d != stopped.run_dir]
    assert len(new) == 1, (new, res.tail())
    _check_resumed(new[0], source, res, reference)
    assert manifest(new[0])["target"] == "cpu-smoke"
    # The stopped run's folder is left as it was (its manifest aside).
    assert [f for f in files_under(stopped.run_dir) if "sftctl" not in f] == [
        f for f in before if "sftctl" not in f
    ]


@real_training
@pytest.mark.timeout(TEST_S)
def test_run_resume_flag_picks_last_complete_checkpoint(
    stopped: Trained,
    reference: dict[int, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A copy of the stopped run's folder alone, so this test does not depend on
    # whether the resume command's run (a newer run folder) exists yet.
    work = tmp_path_factory.mktemp("resume-flag")
    output_dir = work / "output" / "cpu-smoke"
    old = output_dir / stopped.run_dir.name
    shutil.copytree(stopped.run_dir, old, symlinks=True)
    # A checkpoint-8 cut off while being written must not be picked.
    (old / "checkpoint-8").mkdir()
    (old / "checkpoint-8" / "model.safetensors").write_bytes(b"")
    res = sftctl_cmd(work, stopped.env, "run", "cpu-smoke", *SAVE4, "--resume")
    new = [d for d in run_dirs(output_dir) if d != old]
    assert len(new) == 1, (new, res.tail())
    _check_resumed(new[0], old / "checkpoint-4", res, reference)


@pytest.mark.timeout(TEST_S)
def test_run_resume_flag_refuses_without_checkpoint(e2e_cache: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = sftctl_cmd(tmp_path, make_env(e2e_cache, home), "run", "cpu-smoke", "--resume", timeout=CLI_S * 2)
    assert res.rc != 0, res.tail()
    assert "no complete checkpoint" in res.stderr and "nothing was started" in res.stderr
    assert run_dirs(tmp_path / "output" / "cpu-smoke") == []


# --------------------------------------------------------------------------- DDP and ZeRO-2


def _check_distributed(run: Trained, reference: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """World size 2 on the CPU, and the loss of one process with the same effective batch."""
    run_dir = run.run_dir
    args = json.loads((run_dir / "args.json").read_text())
    assert args["use_cpu"] is True
    assert args["global_world_size"] == 2 and args["local_world_size"] == 2, args
    assert args["per_device_train_batch_size"] == 2
    log = (run_dir / "sftctl.log").read_text(errors="replace")
    assert "world_size: 2" in log, log[-2000:]
    rows = logged_steps(run_dir)
    # Each step consumed 2 x 2 of the 64 samples, as the single run's batch of 4 did;
    # step 2 agrees only if the gradients were averaged over both processes.
    assert rows[1]["epoch"] == pytest.approx(reference[1]["epoch"]) == pytest.approx(1 / 16)
    assert_same_losses(run_dir, reference, range(1, 3), DDP_REL)
    ckpt = run_dir / "checkpoint-2"
    assert trainer_state(ckpt)["global_step"] == 2
    m = manifest(run_dir)
    assert m["status"] == "succeeded" and m["exit_code"] == 0
    assert m["last_checkpoint"] == str(ckpt)
    assert m["layout"].startswith("2 CPU process"), m["layout"]
    return m


@real_training
@pytest.mark.timeout(TEST_S)
def test_ddp_swift_launcher_matches_single_process(
    e2e_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
    reference: dict[int, dict[str, Any]],
) -> None:
    run = _ddp(e2e_cache, tmp_path_factory, "ddp-swift")
    m = _check_distributed(run, reference)
    assert m["argv"][:2] == ["swift", "sft"]
    assert m["env"]["NPROC_PER_NODE"] == "2" and m["env"]["MASTER_PORT"].isdigit()
    assert (run.run_dir / "checkpoint-2" / "model.safetensors").is_file()


@real_training
@pytest.mark.timeout(TEST_S)
def test_ddp_torchrun_matches_single_process(
    e2e_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
    reference: dict[int, dict[str, Any]],
) -> None:
    run = _ddp(e2e_cache, tmp_path_factory, "ddp-torchrun", "--set", "launch.launcher=torchrun")
    m = _check_distributed(run, reference)
    assert m["argv"][:2] == ["torchrun", "--nproc_per_node=2"]
    assert m["argv"][m["argv"].index("--no_python") + 1 :][:2] == ["swift", "sft"]
    assert "NPROC_PER_NODE" in m["unset"] and "NPROC_PER_NODE" not in m["env"]
    assert (run.run_dir / "checkpoint-2" / "model.safetensors").is_file()


@real_training
@pytest.mark.timeout(TEST_S + DS_RUN_S)
def test_deepspeed_zero2_two_cpu_processes(
    e2e_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
    reference: dict[int, dict[str, Any]],
) -> None:
    pytest.importorskip("deepspeed")
    if importlib.util.find_spec("ninja") is None and shutil.which("ninja") is None:
        pytest.skip("DeepSpeed compiles its CPU op with ninja")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("DeepSpeed compiles its CPU op with a C++ compiler")
    run = _ddp(
        e2e_cache,
        tmp_path_factory,
        "zero2",
        "--set",
        "deepspeed=zero2",
        "--set",
        "fp16=false",
        timeout=DS_RUN_S,
    )
    _check_distributed(run, reference)
    args = json.loads((run.run_dir / "args.json").read_text())
    ds = args["deepspeed"]
    ds = json.loads(ds) if isinstance(ds, str) else ds
    assert ds["zero_optimization"]["stage"] == 2, ds
    ckpt = run.run_dir / "checkpoint-2"
    assert (ckpt / "model.safetensors").is_file(), files_under(ckpt)
    shards = files_under(ckpt / "global_step2")  # ZeRO partitions: one optimizer file per rank
    assert sum("optim_states" in f for f in shards) == 2, shards
    # The op was built into the session cache, not into HOME.
    assert any((e2e_cache / "torch_extensions").rglob("*.so"))
