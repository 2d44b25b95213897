"""`extends` semantics, overrides, and the child environment of a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sftctl.config.resolve import Overrides, resolve
from sftctl.errors import ConfigError
from sftctl.launchers import Command
from sftctl.runtime.launch import child_env
from sftctl.util.envvars import MARK, PLUGINS_VAR


def test_extends_merges_deeply_child_wins_lists_replace_null_removes(
    write: Callable[[str, str], Path],
) -> None:
    write(
        "base.yaml",
        """
description: base
launch: {gpus: '0,1,2,3', nproc_per_node: 4, master_port: 29600}
env: {A: '1', B: '2'}
args:
  model: org/base
  train_type: full
  dataset: [a.jsonl, b.jsonl]
  learning_rate: 1e-4
  gradient_checkpointing_kwargs: {use_reentrant: false, other: 1}
  swanlab_project: p
""",
    )
    child = write(
        "sub/child.yaml",
        """
extends: ../base.yaml
launch: {nproc_per_node: 2}
env: {B: '3'}
args:
  dataset: [c.jsonl]
  learning_rate: 2e-5
  gradient_checkpointing_kwargs: {other: 2}
  swanlab_project: null
""",
    )
    r = resolve(str(child), Overrides(swift_version="4"))
    assert r.config.launch.gpus == [0, 1, 2, 3]
    assert r.config.launch.nproc_per_node == 2
    assert r.config.launch.master_port == 29600
    assert r.config.env == {"A": "1", "B": "3"}
    assert r.args["dataset"] == ["c.jsonl"]
    assert str(r.args["learning_rate"]) == "2e-5"
    assert r.args["gradient_checkpointing_kwargs"] == {"use_reentrant": False, "other": 2}
    assert "swanlab_project" not in r.args
    assert r.args["tuner_type"] == "full"
    assert r.loaded.origin["args.learning_rate"] == str(child)
    assert r.loaded.origin["args.model"].endswith("base.yaml")
    assert [layer.label for layer in r.loaded.layers][-1] == str(child)


def test_overrides_win_over_files(write: Callable[[str, str], Path]) -> None:
    cfg = write("c.yaml", "extends: zero2-qwen3-8b\n")
    r = resolve(
        str(cfg),
        Overrides(
            sets=("learning_rate=3e-5", "launch.nproc_per_node=4", "env.WANDB_MODE=offline"),
            gpus="0-3",
            model="org/other",
            swift_version="4",
        ),
    )
    assert str(r.args["learning_rate"]) == "3e-5"
    assert r.config.launch.gpus == [0, 1, 2, 3] and r.config.launch.nproc_per_node == 4
    assert r.config.env["WANDB_MODE"] == "offline"
    assert r.args["model"] == "org/other"
    assert r.loaded.origin["args.learning_rate"] == "--set"
    assert r.loaded.origin["launch.gpus"] == "--gpus"


def test_set_parses_by_the_catalog_type() -> None:
    r = resolve(
        "zero2-qwen3-30b-a3b",
        Overrides(
            sets=(
                "eval_strategy=no",
                "system=yes",
                "save_total_limit=5",
                "use_cpu=yes",
                "target_modules=[q_proj, v_proj]",
                'gradient_checkpointing_kwargs={"use_reentrant": true}',
            ),
            swift_version="4",
        ),
    )
    assert r.args["eval_strategy"] == "no"  # a string argument keeps its text
    assert r.args["system"] == "yes"
    assert r.args["save_total_limit"] == 5
    assert r.args["use_cpu"] is True
    assert r.args["target_modules"] == ["q_proj", "v_proj"]
    assert r.args["gradient_checkpointing_kwargs"] == {"use_reentrant": True}


@pytest.mark.parametrize(
    "gpus,nproc,extra,mode",
    [
        ("0", 1, {}, "single"),
        ("0,1,2,3", 1, {}, "device_map"),
        ("0-7", 4, {}, "ddp+device_map"),
        ("0-7", 8, {}, "ddp"),
        ("0-7", 8, {"deepspeed": "zero2"}, "deepspeed"),
        ("", 2, {"use_cpu": True}, "cpu"),
    ],
)
def test_layout_modes(gpus: str, nproc: int, extra: dict[str, object], mode: str) -> None:
    sets = [f"launch.nproc_per_node={nproc}", "deepspeed=null"]
    sets += [f"{k}={str(v).lower()}" for k, v in extra.items()]
    r = resolve("zero2-qwen3-8b", Overrides(sets=tuple(sets), gpus=gpus, swift_version="4"))
    assert r.layout.mode == mode


def test_layout_uses_inherited_gpus_when_config_has_none(write: Callable[[str, str], Path]) -> None:
    cfg = write("c.yaml", "launch: {nproc_per_node: 2}\nargs: {model: o/m, deepspeed: zero2}\n")
    assert resolve(str(cfg), Overrides(swift_version="4"), visible=[0, 1]).layout.mode == "deepspeed"
    with pytest.raises(ConfigError, match="needs exactly one process per visible GPU"):
        resolve(str(cfg), Overrides(swift_version="4"), visible=[0, 1, 2, 3])


def test_child_env_is_the_users_plus_the_command() -> None:
    cmd = Command(env={"CUDA_VISIBLE_DEVICES": "0"}, argv=["swift", "sft"], unset=["NPROC_PER_NODE"])
    env = {
        "PATH": "/usr/bin",
        "NPROC_PER_NODE": "8",
        PLUGINS_VAR: "__all__",
        MARK: "1",
        "SWANLAB_TOKEN": "t0ken",
    }
    out = child_env(cmd, env)
    assert out["CUDA_VISIBLE_DEVICES"] == "0"
    assert "NPROC_PER_NODE" not in out
    assert PLUGINS_VAR not in out and MARK not in out  # sftctl's own tweak stays with sftctl
    assert out["SWANLAB_API_KEY"] == "t0ken"
    # A user's own setting of the pydantic variable is theirs and is kept.
    assert child_env(cmd, {"PATH": "/usr/bin", PLUGINS_VAR: "logfire"})[PLUGINS_VAR] == "logfire"
