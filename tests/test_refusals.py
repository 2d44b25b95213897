"""`sftctl run` refuses before launch, with the fix, and starts nothing.

A stand-in `swift` first on PATH (a process-boundary double: it only records that it
was started) proves that nothing was launched.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clean_env, sftctl_exe

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sftctl-cache")


@pytest.fixture
def sandbox(tmp_path: Path, cache: Path) -> tuple[Path, dict[str, str], Path]:
    """A working folder, an environment whose `swift` only leaves a marker, and the marker."""
    bin_dir = tmp_path / "stand-in-bin"
    bin_dir.mkdir()
    marker = tmp_path / "swift-was-started"
    for name in ("swift", "torchrun"):
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\ntouch {marker}\n")
        exe.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(
        SFTCTL_CACHE=str(cache),
        HOME=str(tmp_path / "home"),
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    return work, env, marker


def _run(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sftctl_exe(), "run", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )


def _refused(out: subprocess.CompletedProcess[str], marker: Path, *needles: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "refused before launch: nothing was started" in text
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in text
    assert not marker.exists(), "the training command was started"


def test_output_dir_holding_another_runs_checkpoints(
    sandbox: tuple[Path, dict[str, str], Path],
) -> None:
    work, env, marker = sandbox
    old = work / "out" / "checkpoint-8"
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"weights of another run")
    out = _run(work, env, "cpu-smoke", "--set", "add_version=false", "--set", "output_dir=out")
    _refused(out, marker, "args.output_dir", "already holds checkpoints", "checkpoint-8", "--resume")
    assert (old / "model.safetensors").read_bytes() == b"weights of another run"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_busy_fixed_port(sandbox: tuple[Path, dict[str, str], Path], busy_port: int) -> None:
    work, env, marker = sandbox
    out = _run(work, env, "cpu-smoke-ddp", "--set", f"launch.master_port={busy_port}")
    _refused(out, marker, "launch.master_port", f"port {busy_port} is already in use", "pick a free port")


def test_two_processes_without_gpu_or_use_cpu(sandbox: tuple[Path, dict[str, str], Path]) -> None:
    work, env, marker = sandbox
    out = _run(work, env, "cpu-smoke-ddp", "--set", "use_cpu=false")
    assert out.returncode == 1
    assert "2 processes with no visible GPU and use_cpu is false" in out.stderr
    assert "set args.use_cpu: true" in out.stderr
    assert not marker.exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_too_small_for_the_checkpoints(
    sandbox: tuple[Path, dict[str, str], Path], small_disk: Path
) -> None:
    work, env, marker = sandbox
    out = _run(work, env, "cpu-smoke", "--set", f"output_dir={small_disk / 'out'}")
    # 3 checkpoints (save_total_limit 2 + 1 being written) of the tiny model's weights
    # plus optimizer state do not fit into 1 MiB.
    _refused(
        out,
        marker,
        "not enough disk",
        "3 checkpoints",
        f"{small_disk / 'out'} has",  # the lock made the folder: same disk
        "lower save_total_limit",
    )
    assert not any(small_disk.rglob("*.safetensors"))


def test_a_hub_model_gets_a_real_disk_check(
    sandbox: tuple[Path, dict[str, str], Path], small_disk: Path
) -> None:
    work, env, marker = sandbox
    # Qwen3-8B is not on this machine: its shape comes from sftctl's table.
    out = _run(work, env, "zero2-qwen3-8b", "--set", "attn_impl=sdpa", "--set", f"output_dir={small_disk}/o")
    _refused(out, marker, "not enough disk", "5 checkpoints", "of about 106.8 GiB each")


def test_validate_host_checks_the_disk_as_run_does(
    sandbox: tuple[Path, dict[str, str], Path], small_disk: Path
) -> None:
    work, env, _marker = sandbox
    out = subprocess.run(
        [*sftctl_exe(), "validate", "--host", "zero2-qwen3-8b", "--set", f"output_dir={small_disk}/o"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "not enough disk: 5 checkpoints" in out.stderr, out.stderr
    # Keeping every checkpoint (no limit) does not excuse the first one from fitting.
    out = subprocess.run(
        [*sftctl_exe(), "validate", "--host", "zero2-qwen3-8b", "--set", f"output_dir={small_disk}/o",
         "--set", "save_total_limit=null"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "not enough disk: 1 checkpoint (save_total_limit is unset)" in out.stderr


def test_a_valid_run_does_reach_the_launcher(sandbox: tuple[Path, dict[str, str], Path]) -> None:
    """The stand-in proves the refusals above, not a broken set-up, kept it from starting."""
    work, env, marker = sandbox
    out = _run(work, env, "cpu-smoke", "--quiet")
    assert out.returncode == 0, out.stderr
    assert marker.exists()


# --- GPUs that are not there (what a new user tried on a CPU machine) ---------------------


def stand_in_nvidia_smi(folder: Path, ids: list[int]) -> str:
    """A stand-in nvidia-smi (process boundary: no GPU here) listing ``ids``; a PATH with it."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in ids))
    exe.chmod(0o755)
    return str(folder)


def without_nvidia_smi(env: dict[str, str]) -> None:
    """This machine as a CPU box, whatever the host has: no nvidia-smi on PATH."""
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not Path(p, "nvidia-smi").exists()
    )


def test_a_gpu_preset_on_a_machine_without_gpus(sandbox: tuple[Path, dict[str, str], Path]) -> None:
    work, env, marker = sandbox
    without_nvidia_smi(env)
    out = _run(work, env, "zero2-qwen3-8b", "--set", "attn_impl=sdpa", "--set", "dataset=org/data")
    _refused(out, marker, "no NVIDIA GPU", "use_cpu: true")


def test_gpus_and_processes_on_a_machine_without_gpus(sandbox: tuple[Path, dict[str, str], Path]) -> None:
    work, env, marker = sandbox
    without_nvidia_smi(env)
    out = _run(work, env, "cpu-smoke", "--gpus", "0,1", "--set", "launch.nproc_per_node=2")
    _refused(out, marker, "no NVIDIA GPU", "DDP over 2 processes")


def test_gpu_ids_that_do_not_exist(sandbox: tuple[Path, dict[str, str], Path], tmp_path: Path) -> None:
    work, env, marker = sandbox
    env["PATH"] = stand_in_nvidia_smi(tmp_path / "stand-in-nvidia-smi", [0, 1]) + os.pathsep + env["PATH"]
    out = _run(work, env, "cpu-smoke", "--gpus", "0,5", "--set", "launch.nproc_per_node=2")
    _refused(out, marker, "GPU id(s) [5] are not among the GPUs this run may use", "--gpus 0,1")


def test_inside_a_slurm_job_its_gpus_are_the_hosts(
    sandbox: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    work, env, marker = sandbox
    env["PATH"] = (
        stand_in_nvidia_smi(tmp_path / "stand-in-nvidia-smi", [0, 1, 2, 3]) + os.pathsep + env["PATH"]
    )
    env.update(SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="2,3")
    out = _run(work, env, "cpu-smoke", "--gpus", "0,1", "--set", "launch.nproc_per_node=2")
    _refused(out, marker, "GPU id(s) [0, 1] are not among the GPUs this run may use: 2,3", "--gpus 2,3")
