"""Regression tests that need a real ms-swift run on the CPU (defects D1, D3-D7).

One `add_version: false` run of cpu-smoke serves D1, D4, D6 and D7; D3 closes the
terminal of a run paused after its first checkpoint (tests/procs/pause_hook.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, pause_hook, sftctl_exe

pytestmark = [
    pytest.mark.slow,
    pytest.mark.swift,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sftctl supervises via /proc"),
    pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift"),
]

RUN_S = 300
PROGRESS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  step (\d+)/(\d+)  ", re.M)
IN_PLACE = ("--set", "add_version=false", "--set", "save_steps=8")


def env_for(cache: Path, home: Path, **extra: str) -> dict[str, str]:
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return clean_env(
        SFTCTL_CACHE=str(cache), HOME=str(home), TMPDIR=str(home / "tmp"), HF_HUB_OFFLINE="1",
        COLUMNS="200", PYTHONUNBUFFERED="1", **extra,
    )  # fmt: skip


def sftctl(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = RUN_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sftctl_exe(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def manifests(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("sftctl-manifest*.json"))]


@dataclass
class InPlace:
    work: Path
    env: dict[str, str]
    out: subprocess.CompletedProcess[str]
    folder: Path


@pytest.fixture(scope="module")
def in_place(e2e_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> InPlace:
    """cpu-smoke with add_version false, launched from a shell that exports GPUs 2,3."""
    work = tmp_path_factory.mktemp("in-place")
    env = env_for(e2e_cache, tmp_path_factory.mktemp("home"), CUDA_VISIBLE_DEVICES="2,3")
    out = sftctl(work, env, "run", "cpu-smoke", *IN_PLACE)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return InPlace(work, env, out, work / "output" / "cpu-smoke")


def test_d1_manifest_records_the_gpus_the_run_was_given(in_place: InPlace) -> None:
    """cpu-smoke renders CUDA_VISIBLE_DEVICES="" (CPU); the shell's 2,3 never reached the run."""
    (data,) = manifests(in_place.folder)
    assert data["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert data["gpus"] == ""


def test_d4_add_version_false_runs_show_progress_and_loss(in_place: InPlace) -> None:
    steps = [int(m[1]) for m in PROGRESS.finditer(in_place.out.stdout)]
    assert steps and steps[-1] == 16, in_place.out.stdout[-2000:]
    (data,) = manifests(in_place.folder)
    assert data["run_dir"] == str(in_place.folder)
    assert data["first_loss"] is not None and data["last_loss"] is not None
    assert (data["first_step"], data["last_step"]) == (1, 16)
    assert "loss:" in in_place.out.stderr


def test_d6_resuming_a_finished_run_starts_nothing(in_place: InPlace) -> None:
    before = sorted(p.relative_to(in_place.work) for p in in_place.work.rglob("*"))
    start = time.monotonic()
    out = sftctl(in_place.work, in_place.env, "resume", str(in_place.folder), timeout=60)
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert "nothing to resume, nothing started" in out.stderr
    assert took < 15, took  # no ms-swift start-up
    assert sorted(p.relative_to(in_place.work) for p in in_place.work.rglob("*")) == before
    again = sftctl(in_place.work, in_place.env, "run", "cpu-smoke", *IN_PLACE, "--resume", timeout=60)
    assert again.returncode == 0 and "nothing to resume" in again.stderr, again.stderr


def test_d7_dry_run_resume_prints_the_checkpoint(in_place: InPlace, tmp_path: Path) -> None:
    out = sftctl(
        in_place.work, in_place.env, "run", "cpu-smoke", *IN_PLACE, "--resume", "--dry-run", timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert f"--resume_from_checkpoint {in_place.folder / 'checkpoint-16'}" in out.stdout
    empty = sftctl(tmp_path, in_place.env, "run", "cpu-smoke", "--resume", "--dry-run", timeout=60)
    assert empty.returncode == 1 and "no complete checkpoint" in empty.stderr


def test_d3_closing_the_terminal_records_a_signalled_run(e2e_cache: Path, tmp_path: Path) -> None:
    """sftctl in a terminal of its own (session leader, pty); the run pauses after
    checkpoint-8 and the terminal is closed: SIGHUP, the tree stops, exit 129, and the
    record says signalled with the checkpoint, although stderr is gone (EIO)."""
    marker = tmp_path / "paused"
    env = pause_hook(tmp_path / "hook", env_for(e2e_cache, tmp_path / "home"), after_step=8, marker=marker)
    work = tmp_path / "work"
    work.mkdir()
    pid, master = pty.fork()
    if pid == 0:  # the child: sftctl with the pty as its controlling terminal
        os.chdir(work)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        argv = [*sftctl_exe(), "run", "cpu-smoke"]
        os.execve(argv[0], argv, env)
    status = None
    try:
        deadline = time.monotonic() + RUN_S
        while not marker.exists():
            with contextlib.suppress(OSError):
                os.read(master, 65536)  # keep the terminal drained, as a terminal would
            done, status = os.waitpid(pid, os.WNOHANG)
            assert done == 0, f"sftctl ended before the checkpoint (status {status})"
            assert time.monotonic() < deadline, "no checkpoint-8 in time"
            time.sleep(0.05)
        os.close(master)  # the window is closed
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("sftctl did not end after its terminal was closed")
    finally:
        if status is None:
            with contextlib.suppress(ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGHUP
    (run_dir,) = (work / "output" / "cpu-smoke").glob("v*-*")
    (data,) = manifests(run_dir)
    assert (data["status"], data["exit_code"], data["signal"]) == ("signalled", 129, signal.SIGHUP)
    assert data["last_checkpoint"] == str(run_dir / "checkpoint-8")
    assert "error" not in data
