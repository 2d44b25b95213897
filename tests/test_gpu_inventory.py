"""`sftctl gpus` and the host GPU checks against a stand-in NVML (tests/procs/stand_in_nvml:
a process-boundary double, since these machines have no GPU): several GPUs, MIG devices,
UUIDs in CUDA_VISIBLE_DEVICES, busy GPUs and another user's processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, clean_env, sftctl_exe

pytestmark = pytest.mark.timeout(120)
GIB = 1024**3
STAND_IN = REPO / "tests" / "procs" / "stand_in_nvml"


def gpu(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "NVIDIA H200",
        "uuid": f"GPU-{i}{i}{i}{i}-aaaa",
        "total": 141 * GIB,
        "used": GIB,
        "util": 0,
        **extra,
    }


def sftctl_on(
    machine: dict[str, Any], tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "machine.json"
    spec.write_text(json.dumps(machine))
    full = clean_env(
        STAND_IN_NVML=str(spec), PYTHONPATH=str(STAND_IN), SFTCTL_PRESETS=str(tmp_path / "p"), **env
    )
    return subprocess.run(
        [*sftctl_exe(), *args], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60
    )


def test_no_nvml_is_an_empty_list_and_exit_0(tmp_path: Path) -> None:
    out = sftctl_on({"missing": True, "gpus": []}, tmp_path, "gpus", "--json")
    assert (out.returncode, json.loads(out.stdout)) == (0, [])
    out = sftctl_on({"missing": True, "gpus": []}, tmp_path, "gpus")
    assert out.returncode == 0 and "no NVIDIA GPU here" in out.stderr


def test_several_gpus_with_their_processes_and_users(tmp_path: Path) -> None:
    stranger = (
        subprocess.Popen(["runuser", "-u", "nobody", "--", "sleep", "60"]) if os.geteuid() == 0 else None
    )
    try:
        pid = os.getpid()
        if stranger:  # runuser's child, the sleep itself, runs as nobody
            deadline = time.monotonic() + 10
            while not (
                kids := Path(f"/proc/{stranger.pid}/task/{stranger.pid}/children").read_text().split()
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            pid = int(kids[0])
        machine = {
            "gpus": [gpu(0), gpu(1, used=60 * GIB, util=97, processes=[{"pid": pid, "used": 59 * GIB}])]
        }
        out = sftctl_on(machine, tmp_path, "gpus", "--json")
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert [(g["index"], g["uuid"], g["name"]) for g in listed] == [
            ("0", "GPU-0000-aaaa", "NVIDIA H200"),
            ("1", "GPU-1111-aaaa", "NVIDIA H200"),
        ]
        assert listed[1]["used_bytes"] == 60 * GIB and listed[1]["free_bytes"] == 81 * GIB
        assert listed[1]["utilization"] == 97
        (proc,) = listed[1]["processes"]
        assert proc["pid"] == pid and proc["user"] == ("nobody" if stranger else proc["user"])
        table = sftctl_on(machine, tmp_path, "gpus", COLUMNS="160")
        assert "GPU-1111-aaaa" in table.stdout and "97%" in table.stdout
    finally:
        if stranger:
            stranger.kill()
            stranger.wait()


def test_mig_devices_are_listed(tmp_path: Path) -> None:
    migs = [{"name": "MIG 1g.18gb", "uuid": f"MIG-{k}-bbbb", "total": 18 * GIB, "used": 0} for k in range(2)]
    out = sftctl_on({"gpus": [gpu(0, mig=migs)]}, tmp_path, "gpus", "--json")
    listed = json.loads(out.stdout)
    assert [(g["index"], g["mig"], g["utilization"]) for g in listed] == [
        ("0", False, 0),
        ("0:0", True, None),
        ("0:1", True, None),
    ]


@pytest.mark.parametrize(
    ("visible", "expect"),
    [("1", ["1"]), ("GPU-2222,0", ["2", "0"]), ("MIG-1-bbbb", ["0:1"]), ("", [])],
)
def test_an_inherited_cuda_visible_devices_limits_the_list(
    tmp_path: Path, visible: str, expect: list[str]
) -> None:
    migs = [{"name": "MIG 1g.18gb", "uuid": f"MIG-{k}-bbbb", "total": 18 * GIB, "used": 0} for k in range(2)]
    machine = {"gpus": [gpu(0, mig=migs), gpu(1), gpu(2)]}
    out = sftctl_on(machine, tmp_path, "gpus", "--json", CUDA_VISIBLE_DEVICES=visible)
    assert [g["index"] for g in json.loads(out.stdout)] == expect


def test_host_checks_use_the_inventory(tmp_path: Path) -> None:
    machine = {"gpus": [gpu(0), gpu(1)]}
    out = sftctl_on(
        machine,
        tmp_path,
        "validate",
        "--host",
        "cpu-smoke",
        "--gpus",
        "0,3",
        "--set",
        "launch.nproc_per_node=2",
    )
    assert out.returncode == 1 and "GPU id(s) [3] are not among the GPUs this run may use: 0,1" in out.stderr
    assert "no NVIDIA GPU" not in out.stderr
