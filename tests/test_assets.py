"""Built-in assets: the offline tiny Qwen3 builder, the demo dataset and the cache.

The model tests need transformers/tokenizers/torch (the ``swift`` extra); none trains.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sftctl.assets import builder
from sftctl.util import dirs

MODEL_REF = "builtin:tiny-qwen3"
DATA_REF = "builtin:demo-sft"


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SFTCTL_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache with the model materialised, shared by this module's model tests."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SFTCTL_CACHE", str(root))
        builder.materialise(MODEL_REF)
        yield root


@pytest.fixture()
def model_dir(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SFTCTL_CACHE", str(model_cache))
    return model_cache / "models" / builder.MODEL_DIRNAME


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- registry and cache location -------------------------------------------------------


def test_builtins_registry() -> None:
    assert builder.is_builtin(MODEL_REF) and builder.is_builtin(DATA_REF)
    assert not builder.is_builtin("builtin:nope") and not builder.is_builtin("Qwen/Qwen3-0.6B")
    assert builder.BUILTINS[MODEL_REF]["kind"] == "model"
    assert builder.BUILTINS[MODEL_REF]["swift_args"] == {"model_type": "qwen3", "template": "qwen3"}
    assert builder.BUILTINS[DATA_REF]["kind"] == "dataset"
    with pytest.raises(ValueError, match="unknown built-in"):
        builder.materialise("builtin:nope")


def test_module_import_is_light() -> None:
    code = (
        "import sys, sftctl.assets.builder; "
        "print(sorted({'torch', 'transformers', 'tokenizers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cache_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTCTL_CACHE", str(tmp_path / "c"))
    assert dirs.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SFTCTL_CACHE")
    assert dirs.cache_dir().name == "sftctl"


def test_lock_excludes_other_holders(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    # flock conflicts between open file descriptions, as between two processes.
    with builder._locked(lock), open(lock, "a+b") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "a+b") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit


# --- dataset --------------------------------------------------------------------------


def test_dataset_rows_valid() -> None:
    rows = [json.loads(line) for line in builder.dataset_bytes().decode("utf-8").splitlines()]
    assert len(rows) == builder.BUILTINS[DATA_REF]["rows"]
    langs = {"zh": 0, "en": 0}
    for row in rows:
        msgs = row["messages"]
        roles = [m["role"] for m in msgs]
        assert set(roles) <= {"system", "user", "assistant"}
        assert "system" not in roles[1:], "a system prompt may only come first"
        turns = roles[1:] if roles[0] == "system" else roles
        assert turns and turns == ["user", "assistant"] * (len(turns) // 2)
        for m in msgs:
            assert isinstance(m["content"], str) and m["content"].strip()
        text = "".join(m["content"] for m in msgs)
        langs["zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"] += 1
    assert langs["zh"] >= 10 and langs["en"] >= 10
    assert sum(1 for r in rows if r["messages"][0]["role"] == "system") >= 10


def test_dataset_materialise_copies_once(cache: Path) -> None:
    path = builder.materialise(DATA_REF)
    assert path == cache / "datasets" / "demo-sft.jsonl"
    assert path.read_bytes() == builder.dataset_bytes()
    os.utime(path, (1_000_000, 1_000_000))
    assert builder.materialise(DATA_REF) == path
    assert path.stat().st_mtime == 1_000_000  # identical: not rewritten
    path.write_text("stale\n", encoding="utf-8")
    builder.materialise(DATA_REF)
    assert path.read_bytes() == builder.dataset_bytes()  # different: replaced


# --- model ----------------------------------------------------------------------------


def test_model_layout_and_size(model_dir: Path) -> None:
    names = set(_files(model_dir))
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        builder.MARKER,
    } <= names
    assert sum(p.stat().st_size for p in model_dir.iterdir()) < 1_000_000
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["dtype"] == "float32"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 2)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"].startswith("Qwen2Tokenizer")
    leftovers = [p for p in model_dir.parent.glob(f".{builder.MODEL_DIRNAME}.*") if p.is_dir()]
    assert not leftovers, "temp build dir left behind"


def test_build_is_deterministic(model_dir: Path, tmp_path: Path) -> None:
    again = builder.build_tiny_qwen3(tmp_path / "again")
    assert _files(again) == _files(model_dir)


def test_materialise_reuses_complete_build(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}

    def no_build(dest: Path) -> Path:
        raise AssertionError("rebuilt although a complete build was cached")

    monkeypatch.setattr(builder, "build_tiny_qwen3", no_build)
    assert builder.materialise(MODEL_REF) == model_dir
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before


def test_materialise_rebuilds_without_marker(cache: Path) -> None:
    pytest.importorskip("transformers")
    dest = cache / "models" / builder.MODEL_DIRNAME
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{}")  # a half-written folder, no marker
    assert builder.materialise(MODEL_REF) == dest
    assert (dest / builder.MARKER).read_text() == builder._marker_text()
    assert (dest / "model.safetensors").is_file()


def test_tokenizer_round_trip_and_specials(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    config = json.loads((model_dir / "config.json").read_text())
    assert len(tok) == config["vocab_size"]
    assert 1000 <= len(tok) <= 2000
    text = "Hello, world! What is 2 + 3?\n你好，世界！中国的首都是北京。 Ünïcödé 🙂"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    single = [tok.encode(s, add_special_tokens=False) for s in specials]
    assert all(len(x) == 1 for x in single) and len({x[0] for x in single}) == 5
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # The think block of an assistant turn stays whole: <think>, "\n\n", </think>, "\n\n".
    think = tok.encode("<think>\n\n</think>\n\n", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(think) == ["<think>", "ĊĊ", "</think>", "ĊĊ"]


def test_chat_template_is_qwen3_style(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(
        msgs[1:2], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_model_loads_with_declared_parameter_count(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    assert sum(p.numel() for p in model.parameters()) == builder.BUILTINS[MODEL_REF]["parameters"]
    assert model.dtype == torch.float32
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3]]))
    assert out.logits.shape == (1, 3, model.config.vocab_size)
    assert torch.isfinite(out.logits).all()
