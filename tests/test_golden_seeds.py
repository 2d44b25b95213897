"""Golden tests: each seed command line, transcribed by hand from the seed documents.

The expected values below are copied from the seed text (/work/shared/seeds/), NOT
snapshotted from sftctl's output: a flag's comment names the seed file and section it
comes from. Shell quoting of the seed is undone by hand (``'{"use_reentrant": false}'``
is the token ``{"use_reentrant": false}``).

Intended differences from the seeds, encoded explicitly below (``SEED_ONLY_FLAGS`` and
``SEED_ONLY_ENV``): a swanlab token never appears on argv or in the rendered env; it is
read from SWANLAB_API_KEY at run time (design.md, "Secrets").

The seeds are written for ms-swift 3.x (``--train_type``); for ``--swift-version 4``
the only rename is ``--train_type`` -> ``--tuner_type`` (seeds/README.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest
from typer.testing import CliRunner

from sftctl.cli import app

# Seed 003 sections 2.1-2.4 write `--model <MODEL_ID>`; we render them with this model and
# expect `<model-name>` to be its last path component.
SOME_MODEL = "Org/Some-Model-7B"
SOME_MODEL_NAME = "Some-Model-7B"

SWIFT = ["swift", "sft"]
TORCHRUN = ["torchrun", "--nproc_per_node=5", "--master_port=29500", "--no_python", "swift", "sft"]

# Seed flags that sftctl intentionally never renders (the token comes from SWANLAB_API_KEY).
SEED_ONLY_FLAGS = {"--swanlab_token"}
# Seed exports that sftctl intentionally never renders into the env.
SEED_ONLY_ENV = {"SWANLAB_TOKEN"}

# ms-swift 3.x spelling -> 4.x spelling; nothing else is renamed for these seeds.
RENAMES_4 = {"--train_type": "--tuner_type"}


@dataclass(frozen=True)
class Seed:
    """One seed command: its env, launcher prefix and flags, as the seed writes them."""

    preset: str
    source: str
    env: dict[str, str]
    launcher: list[str]
    flags: dict[str, list[str]]
    extra_cli: list[str] = field(default_factory=list)


# --- seed 000, section "train_ddp_device_map.sh" -------------------------------------
DDP_DEVICE_MAP = Seed(
    preset="ddp-device_map-qwen3-8b",
    source="000 train_ddp_device_map.sh",
    env={
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",  # 000 train_ddp_device_map.sh line 1
        "NPROC_PER_NODE": "4",  # 000 train_ddp_device_map.sh line 2
    },
    launcher=SWIFT,  # 000 train_ddp_device_map.sh: `swift sft \`
    flags={
        "--model": ["Qwen/Qwen3-8B"],  # 000 train_ddp_device_map.sh
        "--train_type": ["full"],  # 000 train_ddp_device_map.sh
        "--dataset": ["train_dataset.json"],  # 000 train_ddp_device_map.sh
        "--torch_dtype": ["bfloat16"],  # 000 train_ddp_device_map.sh
        "--attn_impl": ["flash_attn"],  # 000 train_ddp_device_map.sh
        "--num_train_epochs": ["5"],  # 000 train_ddp_device_map.sh
        "--per_device_train_batch_size": ["16"],  # 000 train_ddp_device_map.sh
        "--per_device_eval_batch_size": ["16"],  # 000 train_ddp_device_map.sh
        "--gradient_accumulation_steps": ["2"],  # 000 train_ddp_device_map.sh
        "--learning_rate": ["1e-4"],  # 000 train_ddp_device_map.sh
        "--eval_steps": ["50"],  # 000 train_ddp_device_map.sh
        "--save_steps": ["100"],  # 000 train_ddp_device_map.sh
        "--save_total_limit": ["4"],  # 000 train_ddp_device_map.sh
        "--logging_steps": ["5"],  # 000 train_ddp_device_map.sh
        "--max_length": ["2048"],  # 000 train_ddp_device_map.sh
        "--warmup_ratio": ["0.05"],  # 000 train_ddp_device_map.sh
        "--dataloader_num_workers": ["8"],  # 000 train_ddp_device_map.sh
        "--output_dir": ["output"],  # 000 train_ddp_device_map.sh
        "--report_to": ["swanlab"],  # 000 train_ddp_device_map.sh
        "--swanlab_project": ["swift_sft_full"],  # 000 train_ddp_device_map.sh
        "--swanlab_token": ["token"],  # 000 train_ddp_device_map.sh (intentionally dropped)
        "--swanlab_exp_name": ["ddp-mp_Qwen3-8B"],  # 000 train_ddp_device_map.sh
        "--swanlab_mode": ["cloud"],  # 000 train_ddp_device_map.sh
        # 000 train_ddp_device_map.sh: --gradient_checkpointing_kwargs '{"use_reentrant": false}'
        "--gradient_checkpointing_kwargs": ['{"use_reentrant": false}'],
    },
)

# --- seed 000, section "train_zero2.sh" -----------------------------------------------
ZERO2_8B = Seed(
    preset="zero2-qwen3-8b",
    source="000 train_zero2.sh",
    env={
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",  # 000 train_zero2.sh line 1
        "NPROC_PER_NODE": "8",  # 000 train_zero2.sh line 2
    },
    launcher=SWIFT,  # 000 train_zero2.sh: `swift sft \`
    flags={
        "--model": ["Qwen/Qwen3-8B"],  # 000 train_zero2.sh
        "--train_type": ["full"],  # 000 train_zero2.sh
        "--dataset": ["train_dataset.json"],  # 000 train_zero2.sh
        "--torch_dtype": ["bfloat16"],  # 000 train_zero2.sh
        "--attn_impl": ["flash_attn"],  # 000 train_zero2.sh
        "--num_train_epochs": ["5"],  # 000 train_zero2.sh
        "--per_device_train_batch_size": ["16"],  # 000 train_zero2.sh
        "--per_device_eval_batch_size": ["16"],  # 000 train_zero2.sh
        "--gradient_accumulation_steps": ["2"],  # 000 train_zero2.sh
        "--learning_rate": ["1e-4"],  # 000 train_zero2.sh
        "--eval_steps": ["50"],  # 000 train_zero2.sh
        "--save_steps": ["100"],  # 000 train_zero2.sh
        "--save_total_limit": ["4"],  # 000 train_zero2.sh
        "--logging_steps": ["5"],  # 000 train_zero2.sh
        "--max_length": ["2048"],  # 000 train_zero2.sh
        "--warmup_ratio": ["0.05"],  # 000 train_zero2.sh
        "--dataloader_num_workers": ["8"],  # 000 train_zero2.sh
        "--deepspeed": ["zero2"],  # 000 train_zero2.sh
        "--output_dir": ["output"],  # 000 train_zero2.sh
        "--report_to": ["swanlab"],  # 000 train_zero2.sh
        "--swanlab_project": ["swift_sft_full"],  # 000 train_zero2.sh
        "--swanlab_token": ["token"],  # 000 train_zero2.sh (intentionally dropped)
        "--swanlab_exp_name": ["zero2_Qwen3-8B"],  # 000 train_zero2.sh
        "--swanlab_mode": ["cloud"],  # 000 train_zero2.sh
    },
)

# --- seed 001: the torchrun command spread over sections 一, 二 and 三 (3.1-3.7) ---------
ZERO2_30B = Seed(
    preset="zero2-qwen3-30b-a3b",
    source="001 sections 一-三",
    env={"CUDA_VISIBLE_DEVICES": "0,1,2,3,4"},  # 001 一: CUDA_VISIBLE_DEVICES=0,1,2,3,4
    # 001 二: --nproc_per_node=5, --master_port=29500, --no_python; then `swift sft`
    launcher=TORCHRUN,
    flags={
        "--model": ["Qwen/Qwen3-30B-A3B-Thinking-2507"],  # 001 3.1
        "--train_type": ["full"],  # 001 3.1
        "--torch_dtype": ["bfloat16"],  # 001 3.1
        # 001 3.2: --dataset 'liucong/Chinese-DeepSeek-R1-Distill-data-110k#1000' (quotes undone)
        "--dataset": ["liucong/Chinese-DeepSeek-R1-Distill-data-110k#1000"],
        "--max_length": ["4096"],  # 001 3.2
        "--system": ["You are a helpful assistant."],  # 001 3.2 (quotes undone)
        "--num_train_epochs": ["3"],  # 001 3.3
        "--per_device_train_batch_size": ["2"],  # 001 3.3
        "--per_device_eval_batch_size": ["1"],  # 001 3.3
        "--gradient_accumulation_steps": ["8"],  # 001 3.3
        "--learning_rate": ["1e-5"],  # 001 3.3
        "--warmup_ratio": ["0.1"],  # 001 3.3
        "--gradient_checkpointing": ["true"],  # 001 3.3
        "--eval_strategy": ["steps"],  # 001 3.4
        "--eval_steps": ["50"],  # 001 3.4
        "--save_steps": ["50"],  # 001 3.4
        "--save_total_limit": ["3"],  # 001 3.4
        "--logging_steps": ["5"],  # 001 3.4
        "--output_dir": ["output_qwen3_30b_full"],  # 001 3.4
        "--dataloader_num_workers": ["4"],  # 001 3.5
        "--model_author": ["swift"],  # 001 3.6
        "--model_name": ["swift-robot"],  # 001 3.6
        "--deepspeed": ["zero2"],  # 001 3.7
    },
)


def _lora_seed(
    preset: str,
    section: str,
    *,
    max_length: str,
    packing: str,
    batch: str,
    accum: str,
    lr: str,
    save_steps: str,
    save_total_limit: str,
    logging_steps: str,
    attn_impl: str,
) -> Seed:
    """Seed 003 sections 2.1-2.4 share every line but the ones passed in (see each call)."""
    return Seed(
        preset=preset,
        source=f"003 section {section}",
        env={"CUDA_VISIBLE_DEVICES": "6"},  # 003 2.1-2.4: CUDA_VISIBLE_DEVICES=6 \
        launcher=SWIFT,  # 003 2.1-2.4: `swift sft \`
        extra_cli=["--model", SOME_MODEL],
        flags={
            "--model": [SOME_MODEL],  # 003 2.x: --model <MODEL_ID>
            "--train_type": ["lora"],  # 003 2.x
            "--dataset": ["CodyWhy/mh-sharegpt-20250820"],  # 003 2.x
            "--torch_dtype": ["bfloat16"],  # 003 2.x
            "--max_length": [max_length],
            "--packing": [packing],
            "--gradient_checkpointing": ["true"],  # 003 2.x
            "--per_device_train_batch_size": [batch],
            "--gradient_accumulation_steps": [accum],
            "--learning_rate": [lr],
            "--num_train_epochs": ["1"],  # 003 2.x
            "--warmup_ratio": ["0.1"],  # 003 2.x
            "--save_steps": [save_steps],
            "--save_total_limit": [save_total_limit],
            "--logging_steps": [logging_steps],
            # 003 2.x: --output_dir ./output/<model-name>-sft
            "--output_dir": [f"./output/{SOME_MODEL_NAME}-sft"],
            "--report_to": ["swanlab"],  # 003 2.x
            "--swanlab_token": ["$SWANLAB_TOKEN"],  # 003 2.x (intentionally dropped)
            "--swanlab_project": ["multi-model-psychology"],  # 003 2.x
            "--swanlab_mode": ["cloud"],  # 003 2.x
            "--swanlab_exp_name": [f"{SOME_MODEL_NAME}-sft"],  # 003 2.x: <model-name>-sft
            "--attn_impl": [attn_impl],
        },
    )


# 003 2.1 (7B standard): 3072 / packing true / 8 x 4 / 2e-4 / 200 / 3 / 20 / flash_attn
LORA_7B = _lora_seed(
    "lora-7b",
    "2.1",
    max_length="3072",
    packing="true",
    batch="8",
    accum="4",
    lr="2e-4",
    save_steps="200",
    save_total_limit="3",
    logging_steps="20",
    attn_impl="flash_attn",
)
# 003 2.2 (8B, tight memory): 3072 / packing true / 6 x 6 / 2e-4 / 200 / 3 / 20 / flash_attn
LORA_8B = _lora_seed(
    "lora-8b",
    "2.2",
    max_length="3072",
    packing="true",
    batch="6",
    accum="6",
    lr="2e-4",
    save_steps="200",
    save_total_limit="3",
    logging_steps="20",
    attn_impl="flash_attn",
)
# 003 2.3 (20B): 3072 / packing true / 2 x 16 / 2e-4 / 200 / 3 / 20 / flash_attn
LORA_20B = _lora_seed(
    "lora-20b",
    "2.3",
    max_length="3072",
    packing="true",
    batch="2",
    accum="16",
    lr="2e-4",
    save_steps="200",
    save_total_limit="3",
    logging_steps="20",
    attn_impl="flash_attn",
)
# 003 2.4 (OOM emergency): 2048 / packing false / 1 x 32 / 1e-4 / 100 / 2 / 50 / sdpa
OOM_FALLBACK = _lora_seed(
    "oom-fallback",
    "2.4",
    max_length="2048",
    packing="false",
    batch="1",
    accum="32",
    lr="1e-4",
    save_steps="100",
    save_total_limit="2",
    logging_steps="50",
    attn_impl="sdpa",
)

# --- seed 003 section 7.1, the copy-and-paste quick start for Qwen2.5-7B ---------------
_NO_PROXY = "127.0.0.1,localhost,::1"  # 003 7.1: export NO_PROXY=127.0.0.1,localhost,::1
_SWANLAB_PROJECT = "multi-model-psychology"  # 003 7.1: export SWANLAB_PROJECT=...
QUICK_START = Seed(
    preset="lora-qwen2.5-7b",
    source="003 section 7.1",
    env={
        "NO_PROXY": _NO_PROXY,  # 003 7.1 export
        "no_proxy": _NO_PROXY,  # 003 7.1: export no_proxy=$NO_PROXY
        "SWANLAB_TOKEN": "<YOUR_TOKEN>",  # 003 7.1 export (intentionally dropped)
        "SWANLAB_PROJECT": _SWANLAB_PROJECT,  # 003 7.1 export
        "CUDA_VISIBLE_DEVICES": "6",  # 003 7.1: CUDA_VISIBLE_DEVICES=6 \
    },
    launcher=SWIFT,  # 003 7.1: `swift sft \`
    flags={
        "--model": ["Qwen/Qwen2.5-7B-Instruct"],  # 003 7.1
        "--train_type": ["lora"],  # 003 7.1
        "--dataset": ["CodyWhy/mh-sharegpt-20250820"],  # 003 7.1
        "--torch_dtype": ["bfloat16"],  # 003 7.1
        "--max_length": ["3072"],  # 003 7.1
        "--packing": ["true"],  # 003 7.1
        "--gradient_checkpointing": ["true"],  # 003 7.1
        "--per_device_train_batch_size": ["8"],  # 003 7.1
        "--gradient_accumulation_steps": ["4"],  # 003 7.1
        "--learning_rate": ["2e-4"],  # 003 7.1
        "--num_train_epochs": ["1"],  # 003 7.1
        "--warmup_ratio": ["0.1"],  # 003 7.1
        "--save_steps": ["200"],  # 003 7.1
        "--save_total_limit": ["3"],  # 003 7.1
        "--logging_steps": ["20"],  # 003 7.1
        "--output_dir": ["./output/qwen2.5-7b-sft"],  # 003 7.1
        "--report_to": ["swanlab"],  # 003 7.1
        "--swanlab_token": ["<YOUR_TOKEN>"],  # 003 7.1: $SWANLAB_TOKEN (intentionally dropped)
        "--swanlab_project": [_SWANLAB_PROJECT],  # 003 7.1: $SWANLAB_PROJECT, its exported value
        "--swanlab_mode": ["cloud"],  # 003 7.1
        "--swanlab_exp_name": ["qwen2p5-7b-sft"],  # 003 7.1
        "--attn_impl": ["flash_attn"],  # 003 7.1
    },
)

SEEDS = [DDP_DEVICE_MAP, ZERO2_8B, ZERO2_30B, LORA_7B, LORA_8B, LORA_20B, OOM_FALLBACK, QUICK_START]
VERSIONS = ["3", "4"]


def parse_flags(tokens: list[str]) -> dict[str, list[str]]:
    """``--flag v1 v2 --other v`` -> {flag: [values]}; a repeated flag is an error."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for tok in tokens:
        if tok.startswith("--"):
            assert tok not in out, f"flag {tok} appears twice in argv"
            out[tok] = []
            current = tok
        else:
            assert current is not None, f"value {tok!r} before any flag"
            out[current].append(tok)
    return out


def expected_flags(seed: Seed, version: str) -> dict[str, list[str]]:
    """The seed's flags, less the intended drops, in the target version's spelling."""
    flags = {k: v for k, v in seed.flags.items() if k not in SEED_ONLY_FLAGS}
    if version == "4":
        flags = {RENAMES_4.get(k, k): v for k, v in flags.items()}
    return flags


def expected_env(seed: Seed) -> dict[str, str]:
    return {k: v for k, v in seed.env.items() if k not in SEED_ONLY_ENV}


def render_json(runner: CliRunner, seed: Seed, version: str) -> dict[str, Any]:
    args = ["render", seed.preset, *seed.extra_cli, "--format", "json", "--swift-version", version]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (
        f"sftctl {' '.join(args)} exited {result.exit_code}\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}\nexception: {result.exception!r}"
    )
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(params=SEEDS, ids=lambda s: s.preset)
def seed(request: pytest.FixtureRequest) -> Seed:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=VERSIONS, ids=lambda v: f"swift{v}")
def version(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def test_env_matches_seed(cli: CliRunner, seed: Seed, version: str) -> None:
    doc = render_json(cli, seed, version)
    assert doc["env"] == expected_env(seed)


def test_launcher_prefix_matches_seed(cli: CliRunner, seed: Seed, version: str) -> None:
    argv = render_json(cli, seed, version)["argv"]
    assert argv[: len(seed.launcher)] == seed.launcher
    # nothing else before the first flag
    assert argv[len(seed.launcher)].startswith("--")


def test_flags_match_seed(cli: CliRunner, seed: Seed, version: str) -> None:
    argv = render_json(cli, seed, version)["argv"]
    flags = parse_flags(argv[len(seed.launcher) :])
    assert flags == expected_flags(seed, version)


def test_version_spelling(cli: CliRunner, seed: Seed, version: str) -> None:
    argv = render_json(cli, seed, version)["argv"]
    if version == "3":
        assert "--train_type" in argv and "--tuner_type" not in argv
    else:
        assert "--tuner_type" in argv and "--train_type" not in argv


def test_seed_flags_exist_in_catalog(seed: Seed, version: str) -> None:
    """No rename but train_type/tuner_type applies: every seed flag, spelled for the
    version, is an argument of that version's shipped catalog."""
    path = resources.files("sftctl.swift.data").joinpath(f"swift{version}.json")
    assert path.is_file(), (
        f"no ms-swift {version}.x catalog shipped (src/sftctl/swift/data/swift{version}.json)"
    )
    names = set(json.loads(path.read_text(encoding="utf-8"))["arguments"])
    wanted = {f[2:] for f in expected_flags(seed, version)}
    assert wanted - names == set()


def test_no_swanlab_token_anywhere(cli: CliRunner, seed: Seed) -> None:
    """Intended difference: the seeds pass --swanlab_token and export SWANLAB_TOKEN;
    sftctl renders neither, even when the caller's environment holds both."""
    runner = CliRunner(
        env={
            "COLUMNS": "120",
            "TERM": "dumb",
            "SWANLAB_TOKEN": "seed-secret-1",
            "SWANLAB_API_KEY": "seed-secret-2",
        }
    )
    doc = render_json(runner, seed, "4")
    assert "--swanlab_token" not in doc["argv"]
    assert not any(t.startswith("--swanlab_token") for t in doc["argv"])
    assert "SWANLAB_TOKEN" not in doc["env"]
    assert "SWANLAB_API_KEY" not in doc["env"]
    blob = json.dumps(doc)
    for secret in ("seed-secret-1", "seed-secret-2", "<YOUR_TOKEN>"):
        assert secret not in blob


def test_torchrun_unsets_nested_launch_vars(cli: CliRunner, version: str) -> None:
    doc = render_json(cli, ZERO2_30B, version)
    assert {"NPROC_PER_NODE", "NNODES"} <= set(doc["unset"])
    assert "NPROC_PER_NODE" not in doc["env"]


def test_quick_start_no_proxy_equals_NO_PROXY(cli: CliRunner) -> None:
    """003 7.1: `export no_proxy=$NO_PROXY`."""
    env = render_json(cli, QUICK_START, "4")["env"]
    assert env["no_proxy"] == env["NO_PROXY"] == _NO_PROXY


def test_model_placeholder_presets_need_a_model(cli: CliRunner) -> None:
    """003 2.1-2.4 leave the model to the user (`--model <MODEL_ID>`)."""
    for seed in (LORA_7B, LORA_8B, LORA_20B, OOM_FALLBACK):
        args = ["render", seed.preset, "--format", "json", "--swift-version", "4"]
        result = cli.invoke(app, args)
        assert result.exit_code == 1, seed.preset
        assert "<MODEL_ID>" in result.stderr
