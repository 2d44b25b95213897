"""Model shapes: the shipped table against published parameter counts, and the order in
which a model's shape is looked up (local folder, caches, table)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sftctl.resources import shapes

TABLE = shapes._table()
REQUIRED = [
    *(f"Qwen/Qwen2.5-{s}-Instruct" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")),
    *(f"Qwen/Qwen2.5-VL-{s}-Instruct" for s in ("3B", "7B", "32B", "72B")),
    *(f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B", "30B-A3B", "235B-A22B")),
    "Qwen/Qwen3-30B-A3B-Thinking-2507",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-3.3-70B-Instruct",
    "openai/gpt-oss-20b",
    "openai/gpt-oss-120b",
    "THUDM/glm-4-9b-chat",
    "internlm/internlm3-8b-instruct",
    *(f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{s}" for s in ("1.5B", "7B", "14B", "32B")),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
]
NOWHERE = {"HOME": "/nonexistent"}


def test_the_table_holds_every_required_model_and_each_names_its_source() -> None:
    assert sorted(set(REQUIRED) - set(TABLE)) == []
    for hub_id, entry in TABLE.items():
        assert entry["source"].startswith(f"https://huggingface.co/{hub_id}/"), hub_id
        assert entry["published_params"] and entry["published_quote"] and entry["published_source"], hub_id


@pytest.mark.parametrize("hub_id", sorted(TABLE))
def test_parameter_count_from_the_fields_matches_the_published_one(hub_id: str) -> None:
    shape = shapes.find(hub_id, env=NOWHERE)
    published = TABLE[hub_id]["published_params"] * 1e9
    assert abs(shape.params() / published - 1) <= 0.03, (shape.params(), published)


def test_qwen3_8b_by_hand() -> None:
    s = shapes.find("Qwen/Qwen3-8B", env=NOWHERE)
    h, i, layers, vocab, hd = 4096, 12288, 36, 151936, 128
    attention = h * 32 * hd + 2 * h * 8 * hd + 32 * hd * h + 2 * hd  # q, k, v, o, q_norm/k_norm
    layer = attention + 3 * h * i + 2 * h
    assert s.params() == vocab * h * 2 + layers * layer + h == 8_190_735_360
    assert s.lora_params(8) == layers * 8 * ((h + 4096) + 2 * (h + 1024) + (4096 + h) + 2 * (h + i) + (i + h))


def test_moe_counts_every_expert_and_activates_a_few() -> None:
    s = shapes.find("Qwen/Qwen3-30B-A3B", env=NOWHERE)
    assert (s.experts, s.experts_per_token, s.moe_layers) == (128, 8, 48)
    expert = 3 * 2048 * 768
    assert s.params() - s.active_params() == 48 * 120 * expert


def _safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    header = json.dumps(
        {name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for name, shape in tensors.items()}
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_a_local_folder_wins_and_its_safetensors_give_the_exact_count(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    cfg = {**TABLE["Qwen/Qwen3-0.6B"]["config"], "num_hidden_layers": 2}
    (folder / "config.json").write_text(json.dumps(cfg))
    _safetensors(folder / "model.safetensors", {"a": [10, 10], "b": [5]})
    s = shapes.find("./my-model", env=NOWHERE, cwd=tmp_path)
    assert s.layers == 2 and s.total() == 105 and s.source == f"local folder {folder}"


def test_the_hugging_face_and_modelscope_caches_come_before_the_table(tmp_path: Path) -> None:
    snap = tmp_path / "hf" / "hub" / "models--Qwen--Qwen3-8B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(
        json.dumps({**TABLE["Qwen/Qwen3-8B"]["config"], "num_hidden_layers": 3})
    )
    s = shapes.find("Qwen/Qwen3-8B", env={"HF_HOME": str(tmp_path / "hf"), "HOME": "/nonexistent"})
    assert s.layers == 3 and s.source.startswith("cache ")
    ms = tmp_path / "ms" / "models" / "Qwen" / "Qwen2___5-7B-Instruct"
    ms.mkdir(parents=True)
    (ms / "config.json").write_text(
        json.dumps({**TABLE["Qwen/Qwen2.5-7B-Instruct"]["config"], "num_hidden_layers": 4})
    )
    s = shapes.find("Qwen/Qwen2.5-7B-Instruct", env={"MODELSCOPE_CACHE": str(tmp_path / "ms"), "HOME": "/x"})
    assert s.layers == 4


def test_aliases_and_case_reach_the_table() -> None:
    assert shapes.find("qwen/qwen3-8b-base", env=NOWHERE).params() == 8_190_735_360


def test_an_unknown_model_says_how_to_give_its_shape() -> None:
    with pytest.raises(shapes.UnknownModel, match="no shape for model 'acme/secret-7b'"):
        shapes.find("acme/secret-7b", env=NOWHERE)
