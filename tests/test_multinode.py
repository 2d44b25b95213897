"""Multi-node rendering and its checks: the exact per-node scripts for both launchers and
both rendezvous kinds (golden, and shellcheck where it is installed), one file per node,
and the settings that cannot work refused before anything starts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftctl.cli import app

RUNNER = CliRunner(env={"COLUMNS": "140", "NO_COLOR": "1", "SFTCTL_SWIFT_VERSION": "4"})
TWO = ["zero2-qwen3-8b", "--set", "launch.nnodes=2", "--set", "launch.master_addr=10.0.0.1"]


def render(*argv: str) -> dict[str, object]:
    out = RUNNER.invoke(app, ["render", *argv, "--format", "json"])
    assert out.exit_code == 0, out.output
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_swift_launcher_reads_the_node_from_its_environment() -> None:
    data = render(*TWO, "--node-rank", "1")
    env = data["env"]
    assert isinstance(env, dict)
    assert {k: env[k] for k in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE")} == {
        "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
        "NPROC_PER_NODE": "8",
    }  # fmt: skip
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    argv = data["argv"]
    assert isinstance(argv, list) and argv[:2] == ["swift", "sft"]
    assert argv[argv.index("--ddp_timeout") + 1] == "1800"


def test_torchrun_static_and_c10d() -> None:
    static = render(
        *TWO, "--node-rank", "1", "--set", "launch.launcher=torchrun", "--set", "launch.rdzv_timeout=90"
    )
    assert static["argv"][:8] == [  # type: ignore[index]
        "torchrun", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500",
        "--rdzv_conf=timeout=120", "--max_restarts=0", "--nproc_per_node=8",
    ]  # fmt: skip
    c10d = render(*TWO, "--set", "launch.launcher=torchrun", "--set", "launch.rdzv=c10d",
                  "--set", "launch.rdzv_id=job7", "--set", "launch.master_port=29400")  # fmt: skip
    assert c10d["argv"][:7] == [  # type: ignore[index]
        "torchrun", "--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=10.0.0.1:29400",
        "--rdzv_id=job7", "--rdzv_conf=join_timeout=630", "--max_restarts=0",
    ]  # fmt: skip
    # A ddp_timeout of the config's own wins over the default.
    own = render(*TWO, "--node-rank", "0", "--set", "ddp_timeout=7200")
    argv = own["argv"]
    assert isinstance(argv, list) and argv.count("--ddp_timeout") == 1
    assert argv[argv.index("--ddp_timeout") + 1] == "7200"


def test_one_node_renders_as_before() -> None:
    data = render("zero2-qwen3-8b")
    env, argv = data["env"], data["argv"]
    assert isinstance(env, dict) and isinstance(argv, list)
    assert (
        "NNODES" not in env and "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in env and "--ddp_timeout" not in argv
    )


def test_all_nodes_writes_one_script_per_node(tmp_path: Path) -> None:
    out = RUNNER.invoke(
        app, ["render", *TWO, "--set", "launch.nnodes=3", "--all-nodes", "-o", str(tmp_path / "n")]
    )
    assert out.exit_code == 0, out.output
    scripts = sorted((tmp_path / "n").iterdir())
    assert [p.name for p in scripts] == ["node-0.sh", "node-1.sh", "node-2.sh"]
    for k, script in enumerate(scripts):
        assert f"export NODE_RANK={k}\n" in script.read_text()
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["--set", "launch.nnodes=2"], "launch.master_addr: 2 nodes need the address of node 0"),
        ([*TWO[1:], "--set", "launch.node_rank=2"], "launch.node_rank: node rank 2 with 2 node(s)"),
        ([*TWO[1:], "--set", "launch.rdzv=c10d"], "launch.rdzv: ms-swift's launcher passes no rendezvous"),
        ([*TWO[1:], "--set", "launch.master_addr=a b"], "launch.master_addr"),
        ([*TWO[1:], "--set", "launch.rdzv_timeout=0"], "launch.rdzv_timeout"),
    ],
)
def test_settings_that_cannot_work_are_refused(sets: list[str], needle: str) -> None:
    out = RUNNER.invoke(app, ["validate", "zero2-qwen3-8b", *sets])
    assert out.exit_code == 1 and needle in out.output, out.output


def test_a_multi_node_script_needs_its_node() -> None:
    out = RUNNER.invoke(app, ["render", *TWO])
    assert (
        out.exit_code == 1 and "launch.node_rank: a run over 2 nodes is started once per node" in out.output
    )
    assert "--node-rank K" in out.output
    shown = RUNNER.invoke(app, ["show", *TWO])
    assert "x 2 node(s)" in shown.stdout  # the effective batch counts nodes
