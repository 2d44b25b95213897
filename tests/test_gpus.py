"""Which GPUs the machine makes visible, whatever this machine has.

Every test hands `visible_gpus` an explicit PATH of its own: an empty folder (no
`nvidia-smi` at all) or a folder holding a stand-in `nvidia-smi` (a process-boundary
double, a shell script in a folder named for it), so an `nvidia-smi` or GPU on the host
never changes a result."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from sftctl.resources.gpus import visible_gpus


def fake_nvidia_smi(tmp_path: Path, ids: list[int], rc: int = 0) -> str:
    """A PATH holding only a stand-in `nvidia-smi`: it records its arguments in
    `stand-in-nvidia-smi.args` next to it, prints `ids` one a line and exits `rc`."""
    folder = tmp_path / "stand-in-nvidia-smi-bin"
    folder.mkdir()
    exe = folder / "nvidia-smi"
    record = shlex.quote(str(folder / "stand-in-nvidia-smi.args"))
    exe.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n' + "".join(f"echo {i}\n" for i in ids) + f"exit {rc}\n"
    )
    exe.chmod(0o755)
    return str(folder)


def stand_in_args(path: str) -> list[str] | None:
    """The arguments the stand-in was started with, None if it never ran."""
    record = Path(path) / "stand-in-nvidia-smi.args"
    return record.read_text().splitlines() if record.exists() else None


@pytest.fixture
def no_nvidia_smi(tmp_path: Path) -> str:
    """A PATH with no `nvidia-smi` on it (an empty folder)."""
    folder = tmp_path / "empty-bin"
    folder.mkdir()
    return str(folder)


def test_cuda_visible_devices_wins(tmp_path: Path) -> None:
    path = fake_nvidia_smi(tmp_path, [0, 1, 2, 3])
    assert visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "1,3"}) == [1, 3]
    assert visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "GPU-5f1c"}) is None  # UUIDs: unknown
    assert stand_in_args(path) is None  # nvidia-smi is not even asked


def test_cuda_visible_devices_without_nvidia_smi(no_nvidia_smi: str) -> None:
    assert visible_gpus({"PATH": no_nvidia_smi, "CUDA_VISIBLE_DEVICES": "0-2"}) == [0, 1, 2]


def test_nvidia_smi_lists_the_gpus(tmp_path: Path) -> None:
    path = fake_nvidia_smi(tmp_path, [0, 1, 2, 3])
    assert visible_gpus({"PATH": path}) == [0, 1, 2, 3]
    assert stand_in_args(path) == ["--query-gpu=index", "--format=csv,noheader"]


def test_nvidia_smi_that_fails_means_no_gpu(tmp_path: Path) -> None:
    """nvidia-smi without a working driver exits non-zero: nothing is visible."""
    path = fake_nvidia_smi(tmp_path, [0], rc=9)
    assert visible_gpus({"PATH": path}) == []
    assert stand_in_args(path) is not None


def test_no_nvidia_smi_means_no_gpu(no_nvidia_smi: str) -> None:
    assert visible_gpus({"PATH": no_nvidia_smi}) == []


def test_a_non_executable_nvidia_smi_is_not_run(tmp_path: Path) -> None:
    path = fake_nvidia_smi(tmp_path, [0, 1])
    (Path(path) / "nvidia-smi").chmod(0o644)
    assert visible_gpus({"PATH": path}) == []
    assert stand_in_args(path) is None
