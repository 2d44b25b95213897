"""sftctl plan: golden choices for three machines, each explained, and the configs it writes
validate and render with the same effective batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sftctl.cli import app

RUNNER = CliRunner(env={"COLUMNS": "140", "NO_COLOR": "1", "SFTCTL_SWIFT_VERSION": "4"})
CASES = {
    # model, tuner, GPUs, memory, max_length, effective batch -> layout, batch, accumulation, lr
    "qwen3-8b-full-8x80": (
        ["--model", "Qwen/Qwen3-8B", "--tuner", "full", "--gpus", "8", "--gpu-mem", "80GiB",
         "--max-length", "4096", "--batch", "64"],
        ("zero2", 8, 4, 2, 1e-5),
    ),
    "qwen3-30b-a3b-full-5x80": (
        ["--model", "Qwen/Qwen3-30B-A3B-Thinking-2507", "--tuner", "full", "--gpus", "5",
         "--gpu-mem", "80GiB", "--max-length", "2048", "--batch", "40"],
        ("device_map", 1, 4, 10, 2e-6),
    ),
    "qwen2.5-7b-lora-1x24": (
        ["--model", "Qwen/Qwen2.5-7B-Instruct", "--tuner", "lora", "--gpus", "1", "--gpu-mem", "24GiB",
         "--max-length", "2048", "--batch", "32"],
        ("single", 1, 1, 32, 2e-4),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_picks_and_explains(case: str, tmp_path: Path) -> None:
    argv, (layout, nproc, batch, accum, lr) = CASES[case]
    out = RUNNER.invoke(app, ["plan", *argv, "--json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout)
    pick = plan["pick"]
    assert (pick["layout"]["name"], pick["layout"]["nproc"]) == (layout, nproc)
    assert (pick["per_device_batch"], pick["grad_accum"], plan["learning_rate"]) == (batch, accum, lr)
    gpus = int(argv[argv.index("--gpus") + 1])
    assert batch * nproc * accum == plan["effective_batch"]
    refused = [o for o in plan["options"] if not o["fits"]]
    assert all("GiB usable" in o["why"] or "does not divide" in o["why"] for o in refused)
    text = RUNNER.invoke(app, ["plan", *argv])
    assert f"{layout}" in text.stdout and "pick" in text.stdout and "learning rate" in text.stdout

    written = tmp_path / f"{case}.yaml"
    out = RUNNER.invoke(app, ["plan", *argv, "-o", str(written)])
    assert out.exit_code == 0, out.output
    assert written.read_text().startswith("# Written by sftctl plan:")
    assert RUNNER.invoke(app, ["validate", str(written)]).exit_code == 0
    rendered = json.loads(RUNNER.invoke(app, ["render", str(written), "--format", "json"]).stdout)
    argv_out = rendered["argv"]
    assert argv_out[argv_out.index("--per_device_train_batch_size") + 1] == str(batch)
    assert argv_out[argv_out.index("--gradient_accumulation_steps") + 1] == str(accum)
    config = yaml.safe_load(written.read_text())
    assert config["launch"]["nproc_per_node"] == nproc
    assert len(str(config["launch"]["gpus"]).split(",")) == gpus
    shown = RUNNER.invoke(app, ["show", str(written)]).stdout
    assert f"= {plan['effective_batch']}" in shown  # the effective batch line of show


def test_nothing_fits_is_said_and_writes_nothing(tmp_path: Path) -> None:
    argv = [
        "plan",
        "--model",
        "Qwen/Qwen2.5-72B-Instruct",
        "--tuner",
        "full",
        "--gpus",
        "1",
        "--gpu-mem",
        "24GiB",
    ]
    out = RUNNER.invoke(app, argv)
    assert out.exit_code == 0 and "no layout fits" in out.stdout
    out = RUNNER.invoke(app, [*argv, "-o", str(tmp_path / "x.yaml")])
    assert out.exit_code == 1 and "no layout fits, so there is no config to write" in out.output
    assert not (tmp_path / "x.yaml").exists()


def test_plan_mistakes_are_one_clear_message() -> None:
    out = RUNNER.invoke(app, ["plan", "--model", "Qwen/Qwen3-8B", "--gpus", "2", "--gpu-mem", "lots"])
    assert out.exit_code == 2 and "'lots' is not a memory size" in out.output
    out = RUNNER.invoke(app, ["plan", "--model", "Qwen/Qwen3-8B", "--gpus", "auto"])
    assert out.exit_code == 1 and "Traceback" not in out.output  # no GPU on this machine
    out = RUNNER.invoke(app, ["plan", "--model", "acme/none", "--gpus", "2", "--gpu-mem", "80GiB"])
    assert out.exit_code == 1 and "no shape for model 'acme/none'" in out.output
