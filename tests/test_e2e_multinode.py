"""Two nodes on loopback, each a real `sftctl run --node-rank K` of ms-swift on the CPU:
the same losses as one process with the same effective batch, under both launchers; a
node that never arrives ends the other within the rendezvous timeout; a rank that hangs
(SIGSTOP: a stopped process keeps its sockets open, unlike a killed one) ends both nodes
within the step timeout, and both records say why."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, pause_hook, sftctl_exe

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift"),
    pytest.mark.timeout(600),
]
LOSS_REL = 1e-5
CONFIG = """\
extends: cpu-smoke-ddp
launch:
  nproc_per_node: 1
  nnodes: 2
  master_addr: 127.0.0.1
  rdzv_timeout: 60
args:
  max_steps: 4
  save_steps: 2
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, e2e_cache: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("nodes")
    (folder / "two.yaml").write_text(CONFIG)
    return folder, clean_env(SFTCTL_CACHE=str(e2e_cache), HOME=str(folder / "home"))


def start(folder: Path, env: dict[str, str], rank: int | None, *sets: str) -> subprocess.Popen[str]:
    node = [] if rank is None else ["--node-rank", str(rank)]
    return subprocess.Popen(
        [*sftctl_exe(), "run", "two.yaml", *node, *sets],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    try:
        _out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return {int(r["global_step/max_steps"].split("/")[0]): r["loss"] for r in rows if "loss" in r}


def only_run(output_dir: Path) -> Path:
    (found,) = [p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith("v")]
    return found


def manifest(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="module")
def single(work: tuple[Path, dict[str, str]]) -> dict[int, float]:
    """One process with the same effective batch: 8 rows a step."""
    folder, env = work
    out = subprocess.run(
        [*sftctl_exe(), "run", "cpu-smoke", "--quiet", "--set", "per_device_train_batch_size=8",
         "--set", "max_steps=4", "--set", "save_steps=2", "--set", "output_dir=single"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return losses(only_run(folder / "single"))


@pytest.mark.parametrize("launcher", ["swift", "torchrun", "c10d"])
def test_two_nodes_train_as_one_process_does(
    work: tuple[Path, dict[str, str]], single: dict[int, float], launcher: str
) -> None:
    folder, env = work
    kind = ("--set", "launch.launcher=torchrun", "--set", "launch.rdzv=c10d") if launcher == "c10d" else (
        "--set", f"launch.launcher={launcher}")  # fmt: skip
    sets = (*kind, "--set", f"launch.master_port={_free_port()}", "--set", f"output_dir=two-{launcher}")
    # c10d assigns the ranks itself: the nodes are started without one.
    nodes = [start(folder, env, None if launcher == "c10d" else rank, *sets) for rank in (0, 1)]
    results = [finish(node) for node in nodes]
    for code, err in results:
        assert code == 0, err[-3000:]
    run_dir = only_run(folder / f"two-{launcher}")  # ms-swift names one folder for both
    got = losses(run_dir)
    assert got[1] == pytest.approx(single[1], rel=LOSS_REL) and got[4] == pytest.approx(
        single[4], rel=LOSS_REL
    )
    records = [manifest(path) for path in sorted(run_dir.glob("sftctl-manifest-node*.json"))]
    assert len(records) == 2 and records[0]["run_id"] == records[1]["run_id"]  # one run, a record each
    assert all(r["status"] == "succeeded" for r in records)
    assert all((run_dir / Path(r["log"]).name).read_text() for r in records)  # two readable logs
    if launcher == "c10d":
        assert "--rdzv_backend=c10d" in records[0]["argv"]
    else:
        assert [r["node_rank"] for r in records] == [0, 1]
    argv = records[-1]["argv"]
    if launcher == "torchrun":
        assert "--node_rank=1" in argv and "--max_restarts=0" in argv and "--rdzv_conf=timeout=90" in argv
    elif launcher == "swift":
        assert records[1]["env"]["NODE_RANK"] == "1" and records[1]["env"]["NNODES"] == "2"
    assert argv[argv.index("--ddp_timeout") + 1] == "1800"  # a finite collective timeout
    listed = subprocess.run(
        [*sftctl_exe(), "runs", f"two-{launcher}", "--json"], cwd=folder, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["nodes"] == 2, rows  # one row per multi-node run


@pytest.mark.parametrize("kind", ["static", "c10d"])
def test_a_node_that_never_arrives_ends_the_other(work: tuple[Path, dict[str, str]], kind: str) -> None:
    folder, env = work
    began = time.monotonic()
    c10d = ("--set", "launch.launcher=torchrun", "--set", "launch.rdzv=c10d") if kind == "c10d" else ()
    sets = (*c10d, "--set", "launch.rdzv_timeout=15", "--set", f"launch.master_port={_free_port()}",
            "--set", f"output_dir=alone-{kind}")  # fmt: skip
    node = start(folder, env, None if kind == "c10d" else 0, *sets)
    code, err = finish(node)
    took = time.monotonic() - began
    assert code != 0 and took < 15 + 30, (took, err[-2000:])
    assert "of 2 did not join at 127.0.0.1 within 15 s" in err and "rendezvous timeout: node(s)" in err
    (record,) = (folder / f"alone-{kind}" / ".sftctl").glob("*-node*/manifest.json")
    data = manifest(record)
    assert data["status"] == "rendezvous timeout" and "did not join" in data["reason"]
    for pid in data["descendants"]:
        assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split()[2]


def _rank_process(run_id: str, rank: int) -> int:
    """The training process of global rank ``rank`` of run ``run_id`` on this host."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = f"SFTCTL_RUN_ID={run_id}".encode() in environ and b"LOCAL_RANK=0" in environ
        if ours and f"RANK={rank}".encode() in environ:
            return int(name)
    raise AssertionError(f"no rank {rank} of {run_id}")


def test_a_hung_rank_ends_both_nodes(work: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, env = work
    hooked = pause_hook(tmp_path / "hook", env, step_delay=0.5)
    sets = ("--set", "launch.rdzv_id=hang", "--set", f"launch.master_port={_free_port()}",
            "--set", "ddp_timeout=20", "--set", "max_steps=40", "--set", "save_steps=100",
            "--set", "output_dir=hung")  # fmt: skip
    nodes = [start(folder, hooked, rank, *sets) for rank in (0, 1)]
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            run = [p for p in (folder / "hung").glob("v*/logging.jsonl")]
            if run and len(losses(run[0].parent)) >= 3:
                break
            time.sleep(0.5)
        stopped = _rank_process("hang", 1)
        os.kill(stopped, signal.SIGSTOP)
        began = time.monotonic()
        code0, err0 = finish(nodes[0], timeout=120)
        took = time.monotonic() - began
        os.kill(stopped, signal.SIGCONT)
        code1, err1 = finish(nodes[1], timeout=120)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert code0 != 0 and took < 20 + 30, (took, err0[-2000:])
    assert "stalled: no training step for 20 s" in err0
    run_dir = only_run(folder / "hung")
    for k in (0, 1):
        record = manifest(run_dir / f"sftctl-manifest-node{k}.json")
        assert record["status"] in ("stalled", "failed"), record["status"]
    assert manifest(run_dir / "sftctl-manifest-node0.json")["status"] == "stalled"
    assert code1 != 0


def test_one_node_started_twice_is_refused(work: tuple[Path, dict[str, str]]) -> None:
    folder, env = work
    sets = ("--set", f"launch.master_port={_free_port()}", "--set", "output_dir=twice",
            "--set", "launch.rdzv_timeout=30")  # fmt: skip
    first = start(folder, env, 0, *sets)
    try:
        time.sleep(3)
        code, err = finish(start(folder, env, 0, *sets), timeout=60)
        assert code == 1 and "node 0 of run" in err and "is already running" in err, err
        # Node 1 on the same host (loopback) is not refused for node 0's port.
        late, late_err = finish(start(folder, env, 1, *sets), timeout=240)
        assert late == 0, late_err[-2000:]
    finally:
        finish(first)
