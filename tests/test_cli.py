"""The commands through Typer's runner: target forms, formats, drift check, show, presets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml
from conftest import REPO
from typer.testing import CliRunner

from sftctl.cli import app


def test_three_target_forms_mean_the_same(cli: CliRunner) -> None:
    path = str(REPO / "configs" / "zero2-qwen3-8b.yaml")
    outs = [
        cli.invoke(app, ["render", *form, "--format", "json", "--swift-version", "4"])
        for form in (["zero2-qwen3-8b"], ["--preset", "zero2-qwen3-8b"], ["--config", path])
    ]
    assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]
    argvs = [json.loads(o.stdout)["argv"] for o in outs]
    assert argvs[0] == argvs[1] == argvs[2]


def test_two_targets_is_a_usage_error(cli: CliRunner) -> None:
    out = cli.invoke(app, ["render", "zero2-qwen3-8b", "--preset", "lora-7b"])
    assert out.exit_code == 2
    assert "exactly one TARGET" in out.output


def test_run_dry_run_prints_the_render_script(cli: CliRunner) -> None:
    dry = cli.invoke(app, ["run", "--preset", "zero2-qwen3-8b", "--dry-run"])
    rendered = cli.invoke(app, ["render", "zero2-qwen3-8b"])
    assert dry.exit_code == 0 and rendered.exit_code == 0
    assert dry.stdout == rendered.stdout
    assert dry.stdout.startswith("#!/usr/bin/env bash\n# Rendered by sftctl")
    assert "for ms-swift 4.x" in dry.stdout


def test_render_names_target_version_in_header(cli: CliRunner) -> None:
    out = cli.invoke(app, ["render", "zero2-qwen3-8b", "--swift-version", "3"])
    assert out.exit_code == 0
    assert "for ms-swift 3.x (--swift-version)" in out.stdout
    assert "--train_type full" in out.stdout and "--tuner_type" not in out.stdout


def test_version_from_environment_and_config(
    cli: CliRunner, write: Callable[[str, str], Path], monkeypatch: object
) -> None:
    cfg = write("v3.yaml", "extends: zero2-qwen3-8b\nswift_version: 3\n")
    out = cli.invoke(app, ["render", str(cfg), "--format", "json"])
    assert "--train_type" in json.loads(out.stdout)["argv"]
    out = cli.invoke(app, ["render", str(cfg), "--format", "json"], env={"SFTCTL_SWIFT_VERSION": "4"})
    assert "--tuner_type" in json.loads(out.stdout)["argv"]
    out = cli.invoke(
        app,
        ["render", str(cfg), "--format", "json", "--swift-version", "4.6.0"],
        env={"SFTCTL_SWIFT_VERSION": "3"},
    )
    assert "--tuner_type" in json.loads(out.stdout)["argv"]


def test_set_values_keep_their_text(cli: CliRunner) -> None:
    out = cli.invoke(
        app,
        [
            "render",
            "zero2-qwen3-30b-a3b",
            "--format",
            "json",
            "--set",
            "eval_strategy=no",
            "--set",
            "learning_rate=2e-5",
            "--set",
            "model_author=[alice, bob]",
            "--set",
            "gradient_checkpointing=false",
            "--set",
            "launch.master_port=29511",
            "--gpus",
            "0,1,2,3,4",
        ],
    )
    assert out.exit_code == 0, out.output
    argv = json.loads(out.stdout)["argv"]

    def values(flag: str) -> list[str]:
        i = argv.index(flag) + 1
        j = i
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        return argv[i:j]

    assert values("--eval_strategy") == ["no"]
    assert values("--learning_rate") == ["2e-5"]
    assert values("--model_author") == ["alice", "bob"]
    assert values("--gradient_checkpointing") == ["false"]
    assert "--master_port=29511" in argv


def test_json_shape_and_unset_for_torchrun(cli: CliRunner) -> None:
    doc = json.loads(cli.invoke(app, ["render", "zero2-qwen3-30b-a3b", "--format", "json"]).stdout)
    assert {"env", "argv", "unset"} <= set(doc)
    assert doc["argv"][:6] == [
        "torchrun",
        "--nproc_per_node=5",
        "--master_port=29500",
        "--no_python",
        "swift",
        "sft",
    ]
    assert set(doc["unset"]) == {"NPROC_PER_NODE", "NNODES"}
    assert "NPROC_PER_NODE" not in doc["env"]


def test_single_process_renders_no_nproc(cli: CliRunner) -> None:
    doc = json.loads(cli.invoke(app, ["render", "lora-7b", "--model", "o/m", "--format", "json"]).stdout)
    assert "NPROC_PER_NODE" not in doc["env"]
    assert "NPROC_PER_NODE" in doc["unset"]
    script = cli.invoke(app, ["render", "lora-7b", "--model", "o/m"]).stdout
    assert "unset NPROC_PER_NODE" in script


def test_output_and_drift_check(cli: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    assert cli.invoke(app, ["render", "zero2-qwen3-8b", "-o", str(target)]).exit_code == 0
    assert target.stat().st_mode & 0o111
    assert cli.invoke(app, ["render", "zero2-qwen3-8b", "--check", str(target)]).exit_code == 0
    drift = cli.invoke(
        app, ["render", "zero2-qwen3-8b", "--set", "learning_rate=2e-4", "--check", str(target)]
    )
    assert drift.exit_code == 1
    assert "differs" in drift.output and "+    --learning_rate 2e-4" in drift.output


def test_swift_yaml_format_is_readable_by_yaml_1_1(cli: CliRunner) -> None:
    out = cli.invoke(
        app,
        ["render", "zero2-qwen3-30b-a3b", "--format", "swift-yaml", "--set", "eval_strategy=no"],
    )
    assert out.exit_code == 0, out.output
    data = yaml.safe_load(out.stdout)  # PyYAML is YAML 1.1, as ms-swift reads it
    assert data["eval_strategy"] == "no"
    assert data["learning_rate"] == 1e-5
    assert data["tuner_type"] == "full"
    assert "torchrun --nproc_per_node=5" in out.stdout


def test_show_reports_origin_batch_and_layout(cli: CliRunner) -> None:
    out = cli.invoke(app, ["show", "ddp-device_map-qwen3-8b"])
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert "learning_rate: 1e-4  # base-full-qwen3-8b" in text
    assert "swanlab_exp_name: ddp-mp_Qwen3-8B  # ddp-device_map-qwen3-8b" in text
    assert "effective batch: 16 per device x 4 process(es) x 2 accumulation x 1 node(s) = 128" in text
    assert "DDP over 4 processes, each splitting the model over 2 GPUs with device_map" in text


def test_presets_lists_every_config_file(cli: CliRunner) -> None:
    out = cli.invoke(app, ["presets", "--json"])
    names = {p["name"] for p in json.loads(out.stdout)}
    assert names == {p.stem for p in (REPO / "configs").glob("*.yaml")}
    table = cli.invoke(app, ["presets"]).stdout
    assert "zero2-qwen3-8b" in table and "builtin" in table


def test_user_presets_are_listed_and_usable(cli: CliRunner, tmp_path: Path, monkeypatch: object) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my-zero2.yaml").write_text(
        "description: my ZeRO-2 run\nextends: zero2-qwen3-8b\nargs:\n  learning_rate: 5e-5\n"
    )
    env = {"SFTCTL_PRESETS": str(folder)}
    listed = json.loads(cli.invoke(app, ["presets", "--json"], env=env).stdout)
    assert {
        "name": "my-zero2",
        "origin": "user",
        "description": "my ZeRO-2 run",
        "location": str(folder / "my-zero2.yaml"),
    } in listed
    doc = json.loads(cli.invoke(app, ["render", "my-zero2", "--format", "json"], env=env).stdout)
    assert doc["argv"][doc["argv"].index("--learning_rate") + 1] == "5e-5"


def test_validate_json_and_exit_codes(cli: CliRunner, write: Callable[[str, str], Path]) -> None:
    bad = write("bad.yaml", "extends: zero2-qwen3-8b\nargs:\n  lerning_rate: 1\n")
    out = cli.invoke(app, ["validate", "zero2-qwen3-8b", str(bad), "--json"])
    assert out.exit_code == 1
    doc = json.loads(out.stdout)
    assert doc["zero2-qwen3-8b"] == []
    assert doc[str(bad)][0]["location"] == "args.lerning_rate"
    assert "learning_rate" in doc[str(bad)][0]["fix"]
    assert cli.invoke(app, ["validate", "zero2-qwen3-8b", "zero2-qwen3-30b-a3b"]).exit_code == 0


def test_help_lists_commands(cli: CliRunner) -> None:
    out = cli.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("presets", "show", "render", "validate", "run"):
        assert command in out.stdout
