"""The memory estimate, term by term, against values computed by hand for two small shapes
(a dense model and a mixture-of-experts one), and the estimate command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sftctl.cli import app
from sftctl.resources import memory, shapes
from sftctl.resources.layout import Layout

GIB = 1024**3
DENSE = shapes.from_config(
    {
        "model_type": "qwen3",
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": 1000,
        "tie_word_embeddings": False,
    },
    "dense",
    "test",
)
MOE = shapes.from_config(
    {
        "model_type": "qwen3_moe",
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "vocab_size": 500,
        "tie_word_embeddings": True,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 64,
    },
    "moe",
    "test",
)
ONE_GPU = Layout((0,), 1, 1, False, None, "single", "1 process on GPU 0")


def terms(e: memory.Estimate) -> dict[str, float]:
    return {t.name: t.bytes for t in e.terms}


def test_dense_parameter_counts_by_hand() -> None:
    h, i, layers, v = 256, 768, 4, 1000
    attention = h * 256 + 2 * h * 128 + 256 * h + 2 * 64  # q, k, v, o, q_norm and k_norm
    assert DENSE.params() == 2 * v * h + layers * (attention + 3 * h * i + 2 * h) + h == 3_660_544
    lora_per_layer = 8 * ((h + 256) + 2 * (h + 128) + (256 + h) + 2 * (h + i) + (i + h))
    assert DENSE.lora_params(8) == layers * lora_per_layer == 155_648


def test_moe_parameter_counts_by_hand() -> None:
    h, e, w, v = 128, 8, 64, 500
    attention = h * 128 + 2 * h * 64 + 128 * h + 2 * 64
    layer = attention + e * 3 * h * w + h * e + 2 * h  # experts, router, norms
    assert MOE.params() == v * h + 2 * layer + h == 558_464
    assert MOE.active_params() == MOE.params() - 2 * (e - 2) * 3 * h * w
    # LoRA's all-linear reaches the attention only: MoE experts are not nn.Linear.
    assert MOE.lora_params(8) == 2 * 8 * ((h + 128) + 2 * (h + 64) + (128 + h))


def test_full_bf16_on_one_gpu_term_by_term() -> None:
    args = {"tuner_type": "full", "torch_dtype": "bfloat16", "per_device_train_batch_size": 2,
            "max_length": 100, "gradient_accumulation_steps": 4}  # fmt: skip
    e = memory.estimate(DENSE, args, ONE_GPU)
    p, h, t = 3_660_544, 256, 200
    per_token_layer = 8 * h + 2 * (5 * h + 256 + 2 * 128) + 2 * 4 * 768  # norms, attention, MLP
    got = terms(e)
    assert got["weights"] == p * 2
    assert got["gradients"] == p * 2  # bf16, no master copy
    assert got["optimizer"] == p * 4  # two bf16 moments
    assert got["activations"] == 4 * t * h * 2 + 2 * per_token_layer * t
    assert got["logits and loss"] == t * 1000 * 12
    allocated = p * 8 + got["activations"] + got["logits and loss"]  # gradients held (accumulation)
    assert e.peak_bytes == pytest.approx(allocated * 1.05 + 0.6 * GIB)
    assert e.checkpoint_bytes == p * 2 + p * 4


def test_lora_zero3_and_ddp_by_hand() -> None:
    lora = {"tuner_type": "lora", "per_device_train_batch_size": 1, "max_length": 64,
            "gradient_accumulation_steps": 1, "gradient_checkpointing": False}  # fmt: skip
    ddp = Layout((0, 1), 2, 1, False, None, "ddp", "DDP")
    got = terms(memory.estimate(DENSE, lora, ddp))
    n = 155_648
    assert got["weights"] == 3_660_544 * 2 + n * 4  # bf16 base, fp32 adapters
    assert got["gradients"] == n * 4 * 2  # fp32 adapter gradients and DDP's bucket copy
    assert got["optimizer"] == n * 8
    z3 = Layout((0, 1, 2, 3), 4, 1, False, "deepspeed", "deepspeed", "ZeRO-3")
    got = terms(memory.estimate(DENSE, {**lora, "tuner_type": "full", "deepspeed": "zero3"}, z3))
    p = 3_660_544
    assert got["weights"] == p * 2 / 4
    assert got["optimizer"] == p * 12 / 4  # fp32 master and moments, split
    assert got["gradients"] == p * 2 / 4 + 256**2 * 2  # split bf16 gradients and an H^2 bucket
    off = terms(memory.estimate(DENSE, {**lora, "tuner_type": "full", "deepspeed": "zero3_offload"}, z3))
    assert off["weights"] == 0 and off["optimizer"] == 0
    # A sharded frozen base carries the warning of what ms-swift's own runs logged; full does not.
    assert memory.SHARDED_LORA_NOTE in memory.estimate(DENSE, {**lora, "deepspeed": "zero3"}, z3).notes
    assert memory.SHARDED_LORA_NOTE not in memory.estimate(DENSE, {**lora, "deepspeed": "zero2"}, z3).notes


def test_qlora_moe_and_device_map_by_hand() -> None:
    q = {
        "tuner_type": "lora",
        "quant_bits": 4,
        "quant_method": "bnb",
        "max_length": 32,
        "gradient_accumulation_steps": 1,
    }
    got = terms(memory.estimate(MOE, q, ONE_GPU))
    linear = MOE.linear_params(experts=False)
    assert linear == 2 * (128 * 128 + 2 * 128 * 64 + 128 * 128)  # experts stay in bf16
    per = 0.5 + (1 + 4 / 256) / 64
    assert got["weights"] == pytest.approx(linear * per + (558_464 - linear) * 2 + MOE.lora_params(8) * 4)
    # MoE activations count the routed experts' width: 2 of 8 experts of 64.
    a = memory.estimate(
        MOE, {"tuner_type": "full", "max_length": 32, "gradient_checkpointing": False}, ONE_GPU
    )
    per_token_layer = 8 * 128 + 2 * (5 * 128 + 128 + 2 * 64) + 2 * 4 * (2 * 64)
    assert terms(a)["activations"] == 2 * 32 * per_token_layer
    split = Layout((0, 1), 1, 1, False, None, "device_map", "device_map")
    full = {"tuner_type": "full", "max_length": 32}
    whole, half = (terms(memory.estimate(DENSE, full, lay))["weights"] for lay in (ONE_GPU, split))
    share = (2 * DENSE.decoder_params() / 4 + 256 * 1000 + 256) / DENSE.params()  # lm_head, final norm
    assert half == pytest.approx(whole * share) and half < whole


def test_estimate_command_text_and_json() -> None:
    runner = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "SFTCTL_SWIFT_VERSION": "4"})
    out = runner.invoke(app, ["estimate", "zero2-qwen3-8b", "--gpus", "0,1,2,3", "--seq-len", "1024"])
    assert out.exit_code == 0, out.output
    assert "Qwen/Qwen3-8B: 8.19B parameters" in out.stdout and "peak per GPU" in out.stdout
    assert "ms-swift's memory(GiB)" in out.stdout and "deepspeed over 4 process(es)" in out.stdout
    data = json.loads(runner.invoke(app, ["estimate", "zero2-qwen3-8b", "--json"]).stdout)
    assert {"peak_gib", "host_gib", "checkpoint_gib", "terms", "quantity", "tokens"} <= set(data)
    assert [t["name"] for t in data["terms"]][:3] == ["weights", "gradients", "optimizer"]
    bad = runner.invoke(app, ["estimate", "lora-7b", "--model", "acme/secret-7b"])
    assert bad.exit_code == 1 and "args.model: no shape for model 'acme/secret-7b'" in bad.output


def test_estimate_imports_no_torch() -> None:
    code = (
        "import sys; from sftctl.cli import app; from typer.testing import CliRunner;"
        "r = CliRunner().invoke(app, ['estimate', 'zero3-offload-qwen3-8b', '--json']);"
        "assert r.exit_code == 0, r.output;"
        "print([m for m in ('torch', 'transformers', 'swift') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
