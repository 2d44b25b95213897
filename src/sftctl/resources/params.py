"""Parameter counts and checkpoint sizes, read from a local model folder without torch."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# AdamW keeps an fp32 master copy and two fp32 moments per trainable parameter.
OPTIMIZER_BYTES = 12
GIB = 1024**3


def human(n: float) -> str:
    """Bytes for a reader: GiB, MiB or KiB."""
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def count(n: float) -> str:
    """A parameter count for a reader: 8.19B, 151.1M, 12.0K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'B' else 1}f}{unit}"
    return str(int(n))


def count_parameters(model_dir: Path) -> int | None:
    """Exact parameter count from the safetensors headers of a local model, else None."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total


def lora_parameters(model_dir: Path, rank: int) -> int | None:
    """LoRA adapter size on every linear layer of a decoder (all-linear), from config.json."""
    try:
        cfg: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
        h = int(cfg["hidden_size"])
        inter = int(cfg["intermediate_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads", heads))
        hd = int(cfg.get("head_dim") or h // heads)
    except (OSError, KeyError, ValueError, TypeError):
        return None
    dims = [(h, heads * hd), (h, kv * hd), (h, kv * hd), (heads * hd, h), (h, inter), (h, inter), (inter, h)]
    return layers * rank * sum(a + b for a, b in dims)


def checkpoint_bytes(args: dict[str, Any], model_dir: Path | None) -> int | None:
    """The size of one checkpoint of this run, or None when it cannot be known."""
    params = count_parameters(model_dir) if model_dir else None
    if params is None or model_dir is None:
        return None
    if args.get("tuner_type", args.get("train_type", "lora")) == "full":
        dtype = DTYPE_BYTES.get(str(args.get("torch_dtype")), 4)
        # ZeRO splits the optimizer state over ranks; the files add up to the same total.
        return params * (dtype + OPTIMIZER_BYTES)
    lora = lora_parameters(model_dir, int(args.get("lora_rank") or 8))
    return None if lora is None else lora * (4 + OPTIMIZER_BYTES)
