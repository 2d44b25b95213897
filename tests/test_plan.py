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
        ["--model", "Qwen/Qwen3-8B", "--tuner", "full", "--gpu-count", "8", "--gpu-mem", "80GiB",
         "--max-length", "4096", "--batch", "64"],
        ("zero2", 8, 4, 2, 1e-5),
    ),
    "qwen3-30b-a3b-full-5x80": (
        ["--model", "Qwen/Qwen3-30B-A3B-Thinking-2507", "--tuner", "full", "--gpu-count", "5",
         "--gpu-mem", "80GiB", "--max-length", "2048", "--batch", "40"],
        ("device_map", 1, 4, 10, 2e-6),
    ),
    "qwen2.5-7b-lora-1x24": (
        ["--model", "Qwen/Qwen2.5-7B-Instruct", "--tuner", "lora", "--gpu-count", "1", "--gpu-mem", "24GiB",
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
    gpus = int(argv[argv.index("--gpu-count") + 1])
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
        "--gpu-count",
        "1",
        "--gpu-mem",
        "24GiB",
    ]
    # ZeRO-3 offload holds one layer at a time on the GPU: a 72B fits one 24 GiB card when
    # the node has the RAM for everything else.
    big = json.loads(RUNNER.invoke(app, [*argv, "--host-mem", "2TiB", "--json"]).stdout)
    assert big["pick"]["layout"]["name"] == "zero3_offload"
    out = RUNNER.invoke(app, [*argv, "--host-mem", "256GiB"])
    assert out.exit_code == 0 and "no layout fits" in out.stdout
    assert "GiB of host RAM; 243 GiB usable" in out.stdout
    out = RUNNER.invoke(app, [*argv, "--host-mem", "256GiB", "-o", str(tmp_path / "x.yaml")])
    assert out.exit_code == 1 and "no layout fits, so there is no config to write" in out.output
    assert not (tmp_path / "x.yaml").exists()


def test_plan_o_never_replaces_a_file_that_appears_while_planning(tmp_path: Path) -> None:
    from sftctl.util import fs

    target = tmp_path / "mine.yaml"
    fs.write_new(target, "first\n")
    with pytest.raises(FileExistsError):
        fs.write_new(target, "second\n")
    assert target.read_text() == "first\n" and [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]


def test_huge_plan_sizes_are_refused_clearly() -> None:
    base = ["plan", "--model", "Qwen/Qwen3-8B", "--gpu-count", "4096", "--gpu-mem", "80GiB"]
    out = RUNNER.invoke(app, [*base, "--batch", "16000000"])
    assert out.exit_code == 1 and "--batch: gradient_accumulation_steps" in out.output
    assert "beyond any machine" in out.output and "Traceback" not in out.output
    out = RUNNER.invoke(app, [*base, "--max-length", "99999999999999999999"])
    assert out.exit_code == 2 and "--max-length" in out.output


def test_plan_mistakes_are_one_clear_message(tmp_path: Path) -> None:
    base = ["plan", "--model", "Qwen/Qwen3-8B"]
    for mem in ("lots", "0GiB", "-80GiB", "nan", "inf"):
        out = RUNNER.invoke(app, [*base, "--gpu-count", "2", "--gpu-mem", mem])
        assert (
            out.exit_code == 2 and f"{mem!r} is not a memory size" in out.output and "--gpu-mem" in out.output
        )
    out = RUNNER.invoke(app, [*base, "--gpus", "auto"])  # no GPU on this machine
    assert out.exit_code == 1 and "--gpus:" in out.output and "--gpu-count 8 --gpu-mem 80GiB" in out.output
    assert "refused before launch" not in out.output
    out = RUNNER.invoke(app, [*base, "--gpus", "0,1"])  # ids of another machine: memory unknown
    assert out.exit_code == 1 and "--gpu-mem: the memory per GPU is not known" in out.output
    out = RUNNER.invoke(app, ["plan", "--model", "acme/none", "--gpu-count", "2", "--gpu-mem", "80GiB"])
    assert out.exit_code == 1 and "no shape for model 'acme/none'" in out.output
    kept = tmp_path / "mine.yaml"
    kept.write_text("# my config\n")
    out = RUNNER.invoke(app, [*base, "--gpu-count", "8", "--gpu-mem", "80GiB", "-o", str(kept)])
    assert out.exit_code == 2 and "exists; --force overwrites it" in out.output
    assert kept.read_text() == "# my config\n"


def test_qlora_is_written_and_estimated_as_ms_swift_runs_it(tmp_path: Path) -> None:
    argv = ["plan", "--model", "Qwen/Qwen3-8B", "--tuner", "lora", "--gpu-count", "1", "--gpu-mem", "16GiB"]
    out = RUNNER.invoke(app, [*argv, "-o", str(tmp_path / "q.yaml")])
    assert out.exit_code == 0, out.output
    config = yaml.safe_load((tmp_path / "q.yaml").read_text())
    assert config["args"]["quant_bits"] == 4 and config["args"]["quant_method"] == "bnb"
    quantized = json.loads(RUNNER.invoke(app, ["estimate", str(tmp_path / "q.yaml"), "--json"]).stdout)
    plain = json.loads(
        RUNNER.invoke(
            app, ["estimate", str(tmp_path / "q.yaml"), "--set", "quant_method=null", "--json"]
        ).stdout
    )
    assert quantized["peak_bytes"] < plain["peak_bytes"] - 8 * 2**30  # 4-bit linear weights
    out = RUNNER.invoke(app, ["validate", str(tmp_path / "q.yaml"), "--set", "quant_method=null"])
    assert out.exit_code == 0 and "warning: args.quant_bits: quant_bits 4 without quant_method" in out.output
