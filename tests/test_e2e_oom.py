"""Out-of-memory recovery with real out-of-memory: ms-swift trains on the CPU inside a
cgroup v1 memory cgroup whose limit the configured batch does not fit, the kernel
OOM-kills the training process, and `sftctl run --on-oom recover` climbs the ladder.

The model is a random-initialised two-layer Qwen3 whose vocabulary (100,000 rows, never
input) makes every position's logits large: the batch-sized allocation dominates and
costs little compute. The data are short rows first and long rows from step 3 on, in file
order (no shuffling), so the run fits until after its checkpoint at step 2, then does not.

A rank killed by hand with SIGKILL does not start recovery: the kernel's OOM-kill count
does not move for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, clean_env, hooked_processes, pause_hook, sftctl_exe

CGROUPS = Path("/sys/fs/cgroup/memory")
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift"),
    pytest.mark.skipif(
        not (CGROUPS.is_dir() and os.access(CGROUPS, os.W_OK)),
        reason="needs a writable cgroup v1 memory controller (root)",
    ),
    pytest.mark.timeout(900),
]
BUILD_TINY = "from sftctl.assets.builder import materialise as m; print(m('builtin:tiny-qwen3'))"
VOCAB = 100_000
# Measured on this 2-core machine: batch 4 peaks at about 2.7 GiB over all processes,
# batch 2 (with accumulation 2) at 1.9 GiB; the limit sits between them.
LIMIT = 2300 * 2**20
# DDP over 2 processes at batch 1: steps 1-2 peak at about 1.3 GiB over all processes,
# step 3 (long rows) at 2.3 GiB.
DDP_LIMIT = 1800 * 2**20
LOSS_REL = 1e-5
CONFIG = """\
extends: cpu-smoke
env:
  MALLOC_MMAP_THRESHOLD_: "65536"
args:
  model: ./model
  model_type: qwen3
  template: qwen3
  dataset: [./rows.jsonl]
  max_length: 1024
  per_device_train_batch_size: 4
  gradient_accumulation_steps: 1
  gradient_checkpointing: false
  dataset_shuffle: false
  train_dataloader_shuffle: false
  max_steps: 3
  save_steps: 2
  logging_steps: 1
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, e2e_cache: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("oom")
    env = clean_env(SFTCTL_CACHE=str(e2e_cache), HOME=str(folder / "home"))
    out = subprocess.run(
        [sys.executable, "-c", BUILD_TINY], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    tiny = out.stdout.strip().splitlines()[-1]
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "procs" / "sized_qwen3.py"), tiny, str(folder / "model"),
         "2", "64", "128", str(VOCAB)],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "small", "model", "learns"]
    with (folder / "rows.jsonl").open("w") as fh:
        for i in range(16):  # 8 short rows (steps 1-2 at batch 4), then about 600 tokens each
            answer = " ".join(rng.choice(words) for _ in range(8 if i < 8 else 500))
            messages = [
                {"role": "user", "content": "say something"},
                {"role": "assistant", "content": answer},
            ]
            fh.write(json.dumps({"messages": messages}) + "\n")
    (folder / "run.yaml").write_text(CONFIG)
    return folder, env


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A fresh cgroup v1 memory cgroup with ``limit`` bytes; removed afterwards."""
    path = CGROUPS / f"sftctl-test-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    try:
        (path / "memory.limit_in_bytes").write_text(str(limit))
        yield path
    finally:
        for _ in range(100):  # the last processes may still be exiting
            with contextlib.suppress(OSError):
                path.rmdir()
                break
            time.sleep(0.1)


def oom_kills(cgroup: Path) -> int:
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def sftctl(
    cwd: Path, env: dict[str, str], *args: str, cgroup: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run sftctl, inside ``cgroup`` when given (it and everything it starts)."""

    def enter() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run(
        [*sftctl_exe(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        preexec_fn=enter,
    )  # fmt: skip


def run_folder(output_dir: Path) -> Path:
    (found,) = [p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith("v")]
    return found


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return {int(r["global_step/max_steps"].split("/")[0]): r["loss"] for r in rows if "loss" in r}


def manifest(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "sftctl-manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def uninterrupted(work: tuple[Path, dict[str, str]]) -> Path:
    folder, env = work
    res = sftctl(folder, env, "run", "run.yaml", "--set", "output_dir=whole")
    assert res.returncode == 0, res.stdout + res.stderr
    return run_folder(folder / "whole")


def test_real_oom_recovers_from_the_checkpoint_with_the_same_effective_batch(
    work: tuple[Path, dict[str, str]], uninterrupted: Path
) -> None:
    folder, env = work
    # The premise: the batch as configured does not fit under the limit.
    assert manifest(uninterrupted)["peak_rss_bytes"] > LIMIT
    with memory_cgroup(LIMIT) as cgroup:
        res = sftctl(
            folder, env, "run", "run.yaml", "--set", "output_dir=rec", "--on-oom", "recover", cgroup=cgroup
        )
        assert oom_kills(cgroup) == 1  # the kernel killed the training process once
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = run_folder(folder / "rec")  # one run folder for both attempts
    m = manifest(run_dir)
    assert m["status"] == "succeeded"
    first, second = m["attempts"]
    assert first["cause"] == "kernel OOM kill (memory cgroup limit)" and first["exit_code"] != 0
    assert first["last_step"] == 2 and first["delta"] is None
    assert second["delta"] == {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}
    assert second["resumed_from"] == str(run_dir / "checkpoint-2") and second["optimizer"] == "restored"
    assert second["exit_code"] == 0 and second["first_step"] == 3
    args = m["config"]["args"]
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 4  # as before
    # The first step after the resume is the uninterrupted run's step 3, to 1e-5.
    got, want = losses(run_dir), losses(uninterrupted)
    assert got[3] == pytest.approx(want[3], rel=LOSS_REL), (got, want)
    assert got[1] == pytest.approx(want[1], rel=LOSS_REL) and got[2] == pytest.approx(want[2], rel=LOSS_REL)
    assert "attempt 2: per-device batch 4 -> 2, accumulation 1 -> 2" in res.stderr
    # show lists the attempts; render gives the last attempt's command.
    shown = sftctl(folder, env, "show", str(run_dir))
    assert "attempt 1: as configured -> kernel OOM kill (memory cgroup limit) after step 2" in shown.stdout
    assert "from checkpoint-2 -> succeeded" in shown.stdout
    rendered = sftctl(folder, env, "render", str(run_dir), "--format", "json")
    argv = json.loads(rendered.stdout)["argv"]
    assert argv[argv.index("--per_device_train_batch_size") + 1] == "2"
    assert argv[argv.index("--resume_from_checkpoint") + 1] == str(run_dir / "checkpoint-2")


def test_a_run_that_died_of_oom_resumes_at_the_next_rung(
    work: tuple[Path, dict[str, str]], uninterrupted: Path
) -> None:
    """Without --on-oom the run ends and says how to go on; `sftctl resume RUN --on-oom
    recover` then continues from its checkpoint at the next rung, in the same folder."""
    folder, env = work
    with memory_cgroup(LIMIT) as cgroup:
        res = sftctl(folder, env, "run", "run.yaml", "--set", "output_dir=plain", cgroup=cgroup)
        assert res.returncode != 0
        run_dir = run_folder(folder / "plain")
        m = manifest(run_dir)
        assert m["status"] == "out of memory" and len(m["attempts"]) == 1
        assert f"fix: sftctl resume {run_dir} --on-oom recover" in res.stderr
        assert "| " not in res.stderr  # a kernel kill: no misleading tail of unrelated output
        res = sftctl(folder, env, "resume", str(run_dir), "--on-oom", "recover", cgroup=cgroup)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming at the next rung: per-device batch 4 -> 2, accumulation 1 -> 2" in res.stderr
    assert run_folder(folder / "plain") == run_dir  # no new run folder
    (second,) = [p for p in run_dir.glob("sftctl-manifest-*.json")]
    m = json.loads(second.read_text())
    assert m["status"] == "succeeded" and m["config"]["args"]["per_device_train_batch_size"] == 2
    assert m["config"]["args"]["resume_from_checkpoint"] == str(run_dir / "checkpoint-2")
    got, want = losses(run_dir), losses(uninterrupted)
    assert got[3] == pytest.approx(want[3], rel=LOSS_REL)


HOG = (
    "import os\n"
    "open('/proc/self/oom_score_adj', 'w').write('1000')  # the kernel's first choice\n"
    "held = []\n"
    "while True:\n"
    "    held.append(b'x' * (64 << 20))\n"
)


def test_a_rank_killed_by_hand_does_not_start_recovery(
    work: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Even when, at the same time, the kernel OOM-kills another process in the run's
    memory cgroup: the kernel's log names that process, not the run's."""
    folder, env = work
    marker = tmp_path / "at-checkpoint"
    hooked = pause_hook(tmp_path / "hook", env, after_step=2, marker=marker)
    with memory_cgroup(LIMIT) as cgroup:

        def enter() -> None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        argv = [*sftctl_exe(), "run", "run.yaml", "--set", "output_dir=killed", "--on-oom", "recover"]
        proc = subprocess.Popen(
            argv, cwd=folder, env=hooked, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=enter,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            assert marker.exists(), "the run never reached its checkpoint"
            hog = subprocess.run([sys.executable, "-c", HOG], preexec_fn=enter, timeout=120, check=False)
            assert hog.returncode == -signal.SIGKILL and oom_kills(cgroup) == 1  # the hog, not the run
            (training,) = [p["pid"] for p in hooked_processes(tmp_path / "hook")]
            os.kill(int(str(training)), signal.SIGKILL)
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode != 0
    m = manifest(run_folder(folder / "killed"))
    assert len(m["attempts"]) == 1 and m["attempts"][0]["cause"] is None
    assert m["status"] == "failed"
    assert "attempt 2" not in err and "out of memory" not in err


def _lift_after_kill(cgroup: Path, stop: threading.Event) -> None:
    """Once the kernel has killed a rank, lift the limit: the next attempt runs DeepSpeed,
    whose own CPU-side buffers this test does not size."""
    while not stop.is_set():
        if oom_kills(cgroup):
            (cgroup / "memory.limit_in_bytes").write_text("-1")
            return
        time.sleep(0.02)


def test_ddp_to_zero2_resumes_the_weights_with_a_fresh_optimizer(work: tuple[Path, dict[str, str]]) -> None:
    """DDP over 2 CPU processes at batch 1 with gradient checkpointing: the next rung is
    DeepSpeed ZeRO-2, which lays the optimizer state out differently. With
    --allow-optimizer-reset the weights of checkpoint-2 are resumed with a fresh
    optimizer, training goes on at step 3, and the effective batch stays 1 x 2 x 2."""
    pytest.importorskip("deepspeed")
    folder, env = work
    sets = ["--set", "launch.nproc_per_node=2", "--set", "use_cpu=true",
            "--set", "per_device_train_batch_size=1", "--set", "gradient_accumulation_steps=2",
            "--set", "gradient_checkpointing=true", "--set", "output_dir=ddp"]  # fmt: skip
    stop = threading.Event()
    with memory_cgroup(DDP_LIMIT) as cgroup:
        lifter = threading.Thread(target=_lift_after_kill, args=(cgroup, stop), daemon=True)
        lifter.start()
        try:
            res = sftctl(
                folder, env, "run", "run.yaml", *sets, "--on-oom", "recover", "--allow-optimizer-reset",
                cgroup=cgroup, timeout=840,
            )  # fmt: skip
        finally:
            stop.set()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = run_folder(folder / "ddp")
    m = manifest(run_dir)
    first, second = m["attempts"]
    assert first["cause"] == "kernel OOM kill (memory cgroup limit)" and first["last_step"] == 2
    assert second["delta"] == {"deepspeed": "zero2", "fp16": False}
    assert second["optimizer"] == "reset" and second["resumed_from"] == str(run_dir / "checkpoint-2")
    assert second["first_step"] == 3 and second["exit_code"] == 0
    args = m["config"]["args"]
    assert args["resume_only_model"] is True and args["deepspeed"] == "zero2"
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * 2 == 4
    assert "with a fresh optimizer (--allow-optimizer-reset)" in res.stderr
    # ms-swift loaded the weights of checkpoint-2 for the ZeRO-2 attempt.
    assert f"Loading model from '{run_dir / 'checkpoint-2'}'" in (run_dir / "sftctl.log").read_text()


def test_a_run_folder_in_use_is_not_a_second_runs_output_dir(work: tuple[Path, dict[str, str]]) -> None:
    """While a versioned run trains in v0-..., a run pointed at that folder with add_version
    false (as recovery attempts write in place) is refused, not run over it."""
    folder, env = work
    marker = folder / "paused"
    hooked = pause_hook(folder / "hook-lock", env, after_step=2, marker=marker)
    proc = subprocess.Popen(
        [*sftctl_exe(), "run", "run.yaml", "--set", "output_dir=held"],
        cwd=folder, env=hooked, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert marker.exists()
        run_dir = run_folder(folder / "held")
        second = sftctl(folder, env, "run", "cpu-smoke", "--set", f"output_dir={run_dir}",
                        "--set", "add_version=false", "--resume")  # fmt: skip
        assert second.returncode == 1 and "is in use" in second.stderr, second.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=120)
