"""Sizes for a reader, and exact parameter counts from safetensors headers, without torch."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

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
