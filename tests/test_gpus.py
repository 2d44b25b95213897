"""Which GPUs the machine makes visible. No GPU here: a stand-in `nvidia-smi` (a
process-boundary double, in a folder named for it) prints a GPU list."""

from __future__ import annotations

from pathlib import Path

from sftctl.resources.gpus import visible_gpus


def _fake_nvidia_smi(tmp_path: Path, ids: list[int]) -> str:
    folder = tmp_path / "fake-nvidia-smi-bin"
    folder.mkdir()
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in ids))
    exe.chmod(0o755)
    return str(folder)


def test_cuda_visible_devices_wins(tmp_path: Path) -> None:
    path = _fake_nvidia_smi(tmp_path, [0, 1, 2, 3])
    assert visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "1,3"}) == [1, 3]
    assert visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "GPU-5f1c"}) is None  # UUIDs: unknown


def test_nvidia_smi_lists_the_gpus(tmp_path: Path) -> None:
    assert visible_gpus({"PATH": _fake_nvidia_smi(tmp_path, [0, 1, 2, 3])}) == [0, 1, 2, 3]


def test_no_nvidia_smi_means_no_gpu(tmp_path: Path) -> None:
    assert visible_gpus({"PATH": str(tmp_path)}) == []
