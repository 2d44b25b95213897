"""The process count follows the GPUs (golden renders): one process per GPU stays one per
GPU, a fixed number of GPUs per process stays fixed, `auto` is one per listed GPU, and an
explicit --set launch.nproc_per_node always wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftctl.cli import app

RUNNER = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "SFTCTL_SWIFT_VERSION": "4"})


def rendered(*argv: str) -> dict[str, str]:
    out = RUNNER.invoke(app, ["render", *argv, "--format", "json"])
    assert out.exit_code == 0, out.output
    env: dict[str, str] = json.loads(out.stdout)["env"]
    return env


@pytest.mark.parametrize(
    ("argv", "gpus", "nproc"),
    [
        (["zero2-qwen3-8b"], "0,1,2,3,4,5,6,7", "8"),  # the seed command, untouched
        (["zero2-qwen3-8b", "--gpus", "4,5,6,7"], "4,5,6,7", "4"),
        (["ddp-device_map-qwen3-8b"], "0,1,2,3,4,5,6,7", "4"),
        (["ddp-device_map-qwen3-8b", "--gpus", "0,1,2,3"], "0,1,2,3", "2"),
        (["zero2-qwen3-8b", "--gpus", "0-3", "--set", "launch.nproc_per_node=4"], "0,1,2,3", "4"),
        (["zero2-qwen3-8b", "--gpus", "0-2", "--set", "launch.nproc_per_node=auto"], "0,1,2", "3"),
    ],
)
def test_process_count_follows_the_gpus(argv: list[str], gpus: str, nproc: str) -> None:
    env = rendered(*argv)
    assert (env["CUDA_VISIBLE_DEVICES"], env["NPROC_PER_NODE"]) == (gpus, nproc)


def test_an_explicit_count_wins_and_is_checked() -> None:
    out = RUNNER.invoke(
        app, ["validate", "zero2-qwen3-8b", "--gpus", "0-3", "--set", "launch.nproc_per_node=8"]
    )
    assert out.exit_code == 1 and "--set launch.nproc_per_node=4" in out.output


def test_a_ratio_that_does_not_fit_is_not_guessed() -> None:
    """device_map preset: 2 GPUs per process; 3 GPUs cannot keep that, so the count stays
    and the layout rule says what to do."""
    out = RUNNER.invoke(app, ["validate", "ddp-device_map-qwen3-8b", "--gpus", "0-2"])
    assert out.exit_code == 1 and "launch.nproc_per_node" in out.output


def test_show_says_that_it_followed() -> None:
    out = RUNNER.invoke(app, ["show", "zero2-qwen3-8b", "--gpus", "4,5,6,7"])
    assert out.exit_code == 0
    assert "nproc_per_node followed --gpus: 8 -> 4 (one per GPU" in out.stdout
    assert "nproc_per_node: 4  # --gpus" in out.stdout


def test_auto_without_a_gpu_list_says_what_to_write(tmp_path: Path) -> None:
    config = tmp_path / "no-gpus.yaml"
    config.write_text("extends: lora-7b\nlaunch:\n  gpus: null\n  nproc_per_node: auto\n")
    out = RUNNER.invoke(app, ["validate", str(config), "--model", "org/m"])
    assert out.exit_code == 1 and "auto (one per GPU) with launch.gpus listed" in out.output


def test_auto_with_one_gpu_written_as_a_number_is_one_process() -> None:
    out = RUNNER.invoke(app, ["show", "lora-7b", "--model", "org/m", "--set", "launch.nproc_per_node=auto"])
    assert out.exit_code == 0 and "nproc_per_node: 1" in out.stdout
