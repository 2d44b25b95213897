"""Sizes for a reader, and exact parameter counts from safetensors headers, without torch."""

from __future__ import annotations

import json
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


HEADER_LIMIT = 100 * 2**20  # a safetensors header is a few MB even for the largest models


MAX_DIMS = 16  # safetensors tensors of real models have at most a few


def count_parameters(model_dir: Path) -> int | None:
    """Exact parameter count from the safetensors headers of a local model; None when there
    are none or one cannot be read as a header (the count is then derived from config.json)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        count = _header_count(path)
        if count is None:
            return None
        total += count
    return total


def _header_count(path: Path) -> int | None:
    """The parameters a safetensors file's header lists, or None if it is not a sane header."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < 8:
            return None
        (size,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        if size > min(HEADER_LIMIT, st.st_size - 8):
            return None
        header = json.loads(os.pread(fd, size, 8))
    except (OSError, ValueError, RecursionError, struct.error):
        return None
    finally:
        os.close(fd)
    if not isinstance(header, dict):
        return None
    total = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        shape = meta.get("shape") if isinstance(meta, dict) else None
        # Real tensors have a handful of dimensions; a product is checked as it grows.
        if not isinstance(shape, list) or len(shape) > MAX_DIMS:
            return None
        count = 1
        for d in shape:
            if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < 2**40:
                return None
            count *= d
            if count >= 2**50:
                return None
        total += count
        if total >= 2**50:
            return None
    return total
