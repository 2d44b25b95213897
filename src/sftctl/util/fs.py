"""Atomic writes (a reader, or a crash, never sees half a file) and careful reads of
files others may have planted (a FIFO, a device, an endless link)."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str, *, executable: bool = False) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    write_bytes_atomic(path, text.encode("utf-8"), executable=executable)


def write_bytes_atomic(path: Path, data: bytes, *, executable: bool = False) -> None:
    """:func:`write_atomic` for bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o755 if executable else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_text(data: Any) -> str:
    """JSON as sftctl writes records: indented, UTF-8 kept, unknown types as text."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def write_json_atomic(path: Path, data: Any) -> None:
    """:func:`write_atomic` for a JSON document."""
    write_atomic(path, json_text(data))


def write_json_if_absent(path: Path, data: Any) -> bool:
    """Create ``path`` with ``data`` unless it exists; atomic (a hard link fails on an existing name)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json_text(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


class NotRegular(OSError):
    """A path that is not a regular file (a FIFO, a device, a folder), or one too large."""


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes (links are
    followed: model folders are often links). Never blocks on a FIFO or reads a device."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"{path} is not a regular file")
        if st.st_size > limit:
            raise NotRegular(f"{path} is larger than {limit} bytes")
        chunks = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise NotRegular(f"{path} is larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def finite_float(text: str) -> float:
    """json's parse_float that refuses numbers beyond float range (1e400 reads as inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def load_json(path: Path, limit: int) -> Any:
    """A JSON document from a regular file of at most ``limit`` bytes, with finite numbers."""
    return json.loads(read_regular(path, limit).decode("utf-8"), parse_float=finite_float)


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole, or not at all, and only if nothing is there yet:
    a file that appears meanwhile is kept (FileExistsError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, path)  # fails if path exists, whatever it is
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_new_or_regular(path: Path, text: str) -> None:
    """:func:`write_atomic`, refusing to replace anything but a regular file (a device, a
    FIFO or a link stays as it is)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"{path} exists and is not a regular file")
    write_atomic(path, text)
