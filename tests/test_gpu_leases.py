"""`--gpus auto[:N]`, GPU leases and busy GPUs, with real sftctl processes and real flocks.

The GPUs are a stand-in NVML (tests/procs/stand_in_nvml, a process-boundary double: these
machines have no GPU) and `swift` is a stand-in that writes the CUDA_VISIBLE_DEVICES it
was given and sleeps (it cannot train on GPUs that do not exist)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, clean_env, default_signals, sftctl_exe

from sftctl.resources.leases import LeaseDirError, _ready
from sftctl.runtime.ownership import marked

pytestmark = pytest.mark.timeout(180)
GIB = 1024**3
STAND_IN = REPO / "tests" / "procs" / "stand_in_nvml"
CONFIG = """\
extends: cpu-smoke
launch:
  nproc_per_node: auto
args:
  model: ./model
  dataset: [./data.jsonl]
  use_cpu: false
"""
STAND_IN_SWIFT = """\
#!/bin/sh
# stand-in swift: records the GPUs it was given, then waits to be stopped
echo "$CUDA_VISIBLE_DEVICES" > "$LEASE_TEST_RECORD/$SFTCTL_RUN_ID.tmp"
mv "$LEASE_TEST_RECORD/$SFTCTL_RUN_ID.tmp" "$LEASE_TEST_RECORD/$SFTCTL_RUN_ID"
exec sleep 120
"""


def gpu(i: int, **extra: Any) -> dict[str, Any]:
    return {"name": "NVIDIA H200", "uuid": f"GPU-{i}{i}{i}{i}-bbbb", "total": 141 * GIB, "used": 0, **extra}


class Host:
    """A working folder on a stand-in 4-GPU machine, and the sftctl processes started there."""

    def __init__(self, root: Path, machine: dict[str, Any]) -> None:
        self.root = root
        self.work = root / "work"
        self.records = root / "records"
        for folder in (self.work / "model", self.records, root / "bin"):
            folder.mkdir(parents=True)
        (self.work / "model" / "config.json").write_text("{}")
        (self.work / "data.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
        (self.work / "run.yaml").write_text(CONFIG)
        swift = root / "bin" / "swift"
        swift.write_text(STAND_IN_SWIFT)
        swift.chmod(0o755)
        self.machine(machine)
        self.env = clean_env(
            STAND_IN_NVML=str(root / "machine.json"),
            PYTHONPATH=str(STAND_IN),
            LEASE_TEST_RECORD=str(self.records),
            SFTCTL_LEASE_DIR=str(root / "leases"),
            SFTCTL_CACHE=str(root / "cache"),
            PATH=f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
        )
        self.procs: list[subprocess.Popen[str]] = []

    def machine(self, machine: dict[str, Any]) -> None:
        (self.root / "machine.json").write_text(json.dumps(machine))

    def start(self, name: str, *args: str) -> subprocess.Popen[str]:
        err = open(self.root / f"{name}.err", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [*sftctl_exe(), "run", "run.yaml", "--quiet", "--set", f"output_dir=out-{name}", *args],
            cwd=self.work,
            env=self.env,
            stdout=err,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=default_signals,
        )
        self.procs.append(proc)
        return proc

    def stderr(self, name: str) -> str:
        return (self.root / f"{name}.err").read_text()

    def sftctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*sftctl_exe(), *args], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=60
        )

    def given(self, count: int, timeout: float = 60) -> dict[str, list[int]]:
        """Wait until ``count`` stand-in trainings have started; run id -> their GPUs."""
        deadline = time.monotonic() + timeout
        while len(found := [p for p in self.records.iterdir() if not p.name.endswith(".tmp")]) < count:
            assert time.monotonic() < deadline, [self.stderr(n.stem) for n in self.root.glob("*.err")]
            time.sleep(0.1)
        return {p.name: [int(g) for g in p.read_text().split(",") if g.strip()] for p in found}

    def leases(self) -> dict[int, dict[str, Any] | None]:
        out = self.sftctl("gpus", "--json")
        assert out.returncode == 0, out.stderr
        return {int(g["index"]): g["lease"] for g in json.loads(out.stdout)}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)
        for run_id in (p.name for p in self.records.iterdir()):
            deadline = time.monotonic() + 60  # the watchdog of a SIGKILLed run ends its training
            while marked(run_id):
                assert time.monotonic() < deadline, f"run {run_id} left processes behind"
                time.sleep(0.1)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(tmp_path, {"gpus": [gpu(i) for i in range(4)]})
    yield h
    h.close()


def test_two_runs_at_once_take_disjoint_gpus_a_third_is_refused_or_waits(host: Host) -> None:
    a, b = host.start("a", "--gpus", "auto:2"), host.start("b", "--gpus", "auto:2")
    given = host.given(2)
    (first, gpus_a), (second, gpus_b) = sorted(given.items())
    assert len(gpus_a) == len(gpus_b) == 2 and sorted(gpus_a + gpus_b) == [0, 1, 2, 3], given

    # `sftctl gpus` names the run, its supervisor, the user and the output folder.
    leases = host.leases()
    for run_id, ids in given.items():
        for i in ids:
            who = leases[i]
            assert who is not None and who["run_id"] == run_id, leases
            assert who["pid"] in (a.pid, b.pid)
            assert who["user"] == "root" or os.geteuid() != 0
            assert who["output_dir"].startswith(str(host.work / "out-"))
    table = host.sftctl("gpus")
    assert table.returncode == 0 and f"run {first}" in table.stdout and f"run {second}" in table.stdout

    refused = host.sftctl("run", "run.yaml", "--set", "output_dir=out-c", "--gpus", "auto:2")
    text = refused.stdout + refused.stderr
    assert refused.returncode == 1, text
    assert "launch.gpus: --gpus auto:2: 2 free GPU(s) needed, 0 of 4 free" in text
    assert f"leased by run {first}" in text and "--wait" in text
    assert "refused before launch: nothing was started" in text and "Traceback" not in text

    waiter = host.start("d", "--gpus", "auto:2", "--wait")
    deadline = time.monotonic() + 60
    while "--gpus auto:2: waiting, 2 free GPU(s) needed" not in host.stderr("d"):
        assert time.monotonic() < deadline and waiter.poll() is None, host.stderr("d")
        time.sleep(0.1)
    holder_of_first = a if leases[gpus_a[0]]["pid"] == a.pid else b  # type: ignore[index]
    other = b if holder_of_first is a else a
    holder_of_first.send_signal(signal.SIGKILL)
    holder_of_first.wait(timeout=10)
    given = host.given(3, timeout=30)
    (mine,) = set(given) - {first, second}
    assert sorted(given[mine]) == sorted(gpus_a)

    # A SIGKILLed supervisor's leases are free as soon as its watchdog has ended the
    # training (which holds them too): nothing waits on a timeout.
    other.send_signal(signal.SIGKILL)
    other.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not all((leases := host.leases())[i] is None for i in gpus_b):
        assert time.monotonic() < deadline, leases
    assert all(leases[i] is not None and leases[i]["run_id"] == mine for i in gpus_a)  # type: ignore[index]


def test_explicit_gpus_leased_by_another_run_are_refused(host: Host) -> None:
    host.start("a", "--gpus", "1,2")
    ((run_id, ids),) = host.given(1).items()
    assert ids == [1, 2]
    out = host.sftctl("run", "run.yaml", "--set", "output_dir=out-b", "--gpus", "2,3")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert f"launch.gpus: GPU 2 is leased by run {run_id} (pid" in text
    assert "--gpus auto" in text and "refused before launch" in text
    # validate --host says the same, without taking anything
    check = host.sftctl("validate", "run.yaml", "--host", "--gpus", "2,3")
    assert check.returncode == 1 and f"GPU 2 is leased by run {run_id}" in check.stdout + check.stderr
    # auto picks around it
    dry = host.sftctl("run", "run.yaml", "--gpus", "auto:2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "CUDA_VISIBLE_DEVICES=0,3" in dry.stdout and "NPROC_PER_NODE=2" in dry.stdout


def test_busy_gpus_warn_by_name_and_auto_goes_around_them(host: Host) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        host.machine(
            {
                "gpus": [
                    gpu(0, used=40 * GIB, processes=[{"pid": stranger.pid, "used": 40 * GIB}]),
                    gpu(1, used=30 * GIB),  # memory in use, no process NVML can see
                    gpu(2, mig=[gpu(9, total=70 * GIB)]),
                    gpu(3),
                ]
            }
        )
        out = host.sftctl("run", "run.yaml", "--gpus", "auto", "--dry-run")
        assert out.returncode == 0, out.stderr
        assert "export CUDA_VISIBLE_DEVICES=3\n" in out.stdout
        out = host.sftctl("run", "run.yaml", "--gpus", "auto:2", "--dry-run")
        text = out.stdout + out.stderr
        assert out.returncode == 1, text
        assert "2 free GPU(s) needed, 1 of 4 free" in text
        assert f"GPU 0 is busy: processes pid {stranger.pid} (" in text and "40.0 GiB" in text
        assert "GPU 1 is busy: 30.0 GiB of 141.0 GiB memory in use" in text
        assert "GPU 2 is split into MIG devices" in text

        host.start("a", "--gpus", "0")
        host.given(1)
        assert "warning: launch.gpus: GPU 0 is already in use: processes pid" in host.stderr("a")
        assert "--gpus auto picks free GPUs" in host.stderr("a")
    finally:
        stranger.kill()
        stranger.wait()


def test_a_detached_run_keeps_its_leases(host: Host) -> None:
    out = host.sftctl("run", "run.yaml", "--gpus", "auto:3", "--detach", "--set", "output_dir=out-a")
    assert out.returncode == 0, out.stderr
    ((run_id, ids),) = host.given(1).items()
    assert len(ids) == 3
    leases = host.leases()
    holders = {leases[i]["pid"] for i in ids if leases[i]}  # type: ignore[index]
    assert len(holders) == 1 and all(leases[i] and leases[i]["run_id"] == run_id for i in ids)  # type: ignore[index]
    supervisor = holders.pop()
    assert b"--leases" in Path(f"/proc/{supervisor}/cmdline").read_bytes()
    # The training command holds the leases too: they last while it does.
    training = [pid for pid in marked(run_id) if pid != supervisor]
    assert training
    for pid in training:
        opened = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        assert [f for f in opened if "leases" in f], opened
    refused = host.sftctl("run", "run.yaml", "--gpus", "auto:2", "--set", "output_dir=out-b")
    assert refused.returncode == 1 and "1 of 4 free" in refused.stderr
    staging = next((host.work / "out-a" / ".sftctl").glob("*/"))
    assert host.sftctl("stop", str(staging)).returncode == 0
    assert all(v is None for v in host.leases().values())


def test_render_refuses_auto_and_validate_checks_it_as_n_gpus(host: Host) -> None:
    out = host.sftctl("render", "zero2-qwen3-8b", "--gpus", "auto:4")
    assert out.returncode == 1
    assert "launch.gpus: 'auto:4' picks free GPUs when `sftctl run` starts" in out.stderr
    assert "--dry-run" in out.stderr
    ok = host.sftctl("validate", "zero2-qwen3-8b", "--gpus", "auto:4")
    assert ok.returncode == 0, ok.stderr
    shown = host.sftctl("show", "zero2-qwen3-8b", "--gpus", "auto:4")
    assert "nproc_per_node: 4" in shown.stdout and "launch.gpus auto:4" in shown.stdout
    bad = host.sftctl("validate", "zero2-qwen3-8b", "--gpus", "auto:0")
    assert bad.returncode == 1 and "'auto:0' asks for no GPU" in bad.stdout + bad.stderr


def test_lease_folder_is_shared_and_refused_when_unsafe(tmp_path: Path) -> None:
    made = _ready(tmp_path / "a" / "leases", default=False)
    assert stat.S_IMODE(made.stat().st_mode) == 0o1777
    link = tmp_path / "link"
    link.symlink_to(made)
    with pytest.raises(LeaseDirError, match="is not a folder"):
        _ready(link, default=True)  # the shared default in /tmp must not be a link
    if os.geteuid() == 0:
        squatted = tmp_path / "squatted"
        squatted.mkdir(mode=0o777)
        os.chown(squatted, 65534, 65534)
        with pytest.raises(LeaseDirError, match="belongs to another user"):
            _ready(squatted, default=True)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)  # mine, but anyone could delete the leases in it
    with pytest.raises(LeaseDirError, match="writable by every user but not sticky"):
        _ready(open_to_all, default=False)


def test_an_unusable_lease_folder_is_one_refusal(host: Host) -> None:
    (host.root / "not-a-folder").write_text("")
    host.env["SFTCTL_LEASE_DIR"] = str(host.root / "not-a-folder")
    out = host.sftctl("run", "run.yaml", "--gpus", "0")
    assert out.returncode == 1
    assert "SFTCTL_LEASE_DIR: GPU leases cannot be taken:" in out.stderr and "Traceback" not in out.stderr


def test_an_inherited_cuda_visible_devices_limits_what_a_run_may_use(host: Host) -> None:
    host.env["CUDA_VISIBLE_DEVICES"] = "GPU-2222-bbbb,3"
    dry = host.sftctl("run", "run.yaml", "--gpus", "auto", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "export CUDA_VISIBLE_DEVICES=2,3\n" in dry.stdout
    out = host.sftctl("run", "run.yaml", "--gpus", "0")
    assert out.returncode == 1 and "are not among the GPUs this run may use: 2,3" in out.stderr
    assert "(CUDA_VISIBLE_DEVICES='GPU-2222-bbbb,3')" in out.stderr
    never = host.sftctl("run", "run.yaml", "--gpus", "auto:3", "--wait")
    assert never.returncode == 1, never.stderr  # refused at once: waiting could never end
    assert "this run may use 2 whole GPU(s)" in never.stderr and "never 3" in never.stderr
    host.env["CUDA_VISIBLE_DEVICES"] = ""
    listed = host.sftctl("gpus")
    assert listed.returncode == 0 and "CUDA_VISIBLE_DEVICES='' hides all 4" in listed.stderr


def test_hostile_lease_files_are_refusals_not_hangs_or_crashes(host: Host) -> None:
    folder = host.root / "leases"
    folder.mkdir(mode=0o1777)
    os.mkfifo(folder / "gpu-GPU-1111-bbbb.lock")
    (folder / "gpu-GPU-2222-bbbb.lock").write_text("[" * 100_000 + "]" * 100_000)
    listed = host.sftctl("gpus", "--json")
    assert listed.returncode == 0, listed.stderr
    leases = {int(g["index"]): g["lease"] for g in json.loads(listed.stdout)}
    assert leases[0] is None and leases[1] == {}  # unreadable: never shown as free
    out = host.sftctl("run", "run.yaml", "--gpus", "1")
    assert out.returncode == 1 and "SFTCTL_LEASE_DIR: GPU leases cannot be taken:" in out.stderr
    assert "is not a regular file" in out.stderr and "internal error" not in out.stderr
    ok = host.sftctl("run", "run.yaml", "--gpus", "2", "--dry-run")  # garbage text is no lease
    assert ok.returncode == 0, ok.stderr
    host.env["SFTCTL_LEASE_DIR"] = "relative/leases"
    out = host.sftctl("run", "run.yaml", "--gpus", "0")
    assert out.returncode == 1 and "'relative/leases' is a relative path" in out.stderr


def test_a_cpu_run_takes_no_lease(host: Host) -> None:
    out = host.sftctl("show", "cpu-smoke-ddp", "--gpus", "auto:2")
    assert out.returncode == 0 and "no GPU picked (use_cpu is true" in out.stdout
    host.start("a", "--gpus", "auto:2", "--set", "use_cpu=true")
    host.given(1)
    assert all(v is None for v in host.leases().values())


def test_validate_host_exits_0_on_warnings_and_labels_them(host: Host) -> None:
    host.machine({"gpus": [gpu(0, used=30 * GIB), gpu(1)]})
    out = host.sftctl("validate", "run.yaml", "--host", "--gpus", "0")
    assert out.returncode == 0, out.stderr
    assert "run.yaml: warning: launch.gpus: GPU 0 is already in use: 30.0 GiB" in out.stderr


def test_a_run_that_cannot_fit_is_refused_unless_forced(host: Host) -> None:
    host.machine({"gpus": [gpu(0, total=8 * GIB), gpu(1, total=80 * GIB)]})
    lora_8b = ["--model", "Qwen/Qwen3-8B", "--set", "tuner_type=lora", "--set", "save_total_limit=1"]
    out = host.sftctl("run", "run.yaml", "--gpus", "0", *lora_8b)
    assert out.returncode == 1, out.stderr
    assert "launch.gpus: the run needs about" in out.stderr and "GPU 0 has 8.0 GiB free" in out.stderr
    assert "--force launches anyway" in out.stderr and "refused before launch" in out.stderr
    host.start("a", "--gpus", "1", *lora_8b)  # 80 GiB: it fits
    host.start("b", "--gpus", "0", "--force", *lora_8b)
    assert len(host.given(2)) == 2
    assert "warning: launch.gpus: the run needs about" in host.stderr("b")
    assert "the run needs about" not in host.stderr("a")


def test_a_foreign_shared_lock_is_a_held_gpu_and_auto_goes_around_it(host: Host) -> None:
    folder = host.root / "leases"
    folder.mkdir(mode=0o1777)
    lease = folder / "gpu-GPU-0000-bbbb.lock"
    lease.write_text("")
    holder = subprocess.Popen(["flock", "-s", str(lease), "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while host.leases()[0] is None:  # the shared lock is taken
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert host.leases()[0] == {}  # held, by something that does not say who it is
        dry = host.sftctl("run", "run.yaml", "--gpus", "auto:1", "--dry-run")
        assert dry.returncode == 0 and "export CUDA_VISIBLE_DEVICES=1\n" in dry.stdout, dry.stderr
        host.start("a", "--gpus", "auto:1")
        ((_run_id, ids),) = host.given(1).items()
        assert ids == [1]
    finally:
        holder.kill()
        holder.wait()


def test_the_shared_default_folder_must_be_roots_or_mine(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder owned by another user")
    squatted = tmp_path / "sticky"
    squatted.mkdir()
    squatted.chmod(0o1777)
    os.chown(squatted, 65534, 65534)
    with pytest.raises(LeaseDirError, match="belongs to another user .* let root create it"):
        _ready(squatted, default=True)
    assert _ready(squatted, default=False) == squatted  # an explicit SFTCTL_LEASE_DIR is the user's call


def test_the_record_holds_each_process_peak_gpu_memory_from_nvml(host: Host) -> None:
    # The stand-in NVML shows every process of the run on GPU 2 with 5 GiB.
    host.machine({"gpus": [gpu(0), gpu(1), gpu(2, processes=[{"pid": "marked", "used": 5 * GIB}]), gpu(3)]})
    proc = host.start("a", "--gpus", "2")
    host.given(1)
    time.sleep(2.5)  # the supervisor samples NVML about once a second
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    (manifest,) = (host.work / "out-a" / ".sftctl").glob("*/manifest.json")
    data = json.loads(manifest.read_text())
    assert data["peak_gpu_bytes"] == 5 * GIB
    assert all(v == 5 * GIB for v in data["peak_gpu_bytes_per_process"].values())
    assert str(data["pid"]) in data["peak_gpu_bytes_per_process"]


def test_a_gone_supervisor_is_said_and_every_gpu_problem_is_listed(host: Host) -> None:
    from sftctl.resources.leases import describe_holder

    gone = subprocess.Popen(["true"])
    gone.wait()
    said = describe_holder({"run_id": "r1", "pid": gone.pid, "user": "root", "output_dir": "/o"})
    assert said == f"run r1 (pid {gone.pid} gone: its training still holds the GPU, user root, /o)"
    assert "gone" not in describe_holder({"run_id": "r2", "pid": os.getpid()})
    host.machine({"gpus": [gpu(0, used=30 * GIB), gpu(1)]})
    out = host.sftctl("validate", "run.yaml", "--host", "--gpus", "0,9")
    assert out.returncode == 1
    assert "GPU id(s) [9] are not among the GPUs this run may use" in out.stderr
    assert "warning: launch.gpus: GPU 0 is already in use" in out.stderr
