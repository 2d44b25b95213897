"""Build a random-initialised Qwen3 of a given depth next to the tiny model's tokenizer.

Usage: python sized_qwen3.py TINY_MODEL_DIR DEST LAYERS HIDDEN INTERMEDIATE [VOCAB]

VOCAB (default: the tokenizer's) may exceed the tokenizer: the extra rows are never input,
but every position's logits cover them (a batch-sized allocation that costs little compute).

The weights are stored in bf16 and trained in fp32, so loading converts them and they
live in anonymous memory (an fp32 file loaded as fp32 may stay a file-backed mapping)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


def main() -> None:
    tiny, dest = Path(sys.argv[1]), Path(sys.argv[2])
    layers, hidden, inter = (int(a) for a in sys.argv[3:6])
    vocab = int(sys.argv[6]) if len(sys.argv) > 6 else None
    dest.mkdir(parents=True, exist_ok=True)
    for f in tiny.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json",):
            shutil.copy(f, dest / f.name)
    cfg = json.loads((tiny / "config.json").read_text())
    config = Qwen3Config(
        vocab_size=vocab or cfg["vocab_size"],
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=hidden // 8,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        pad_token_id=cfg.get("pad_token_id"),
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)  # type: ignore[no-untyped-call]
    model.save_pretrained(str(dest))


if __name__ == "__main__":
    main()
