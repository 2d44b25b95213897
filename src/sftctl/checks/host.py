"""Checks that depend on this machine: local data and model paths, packages.

Packages are found with importlib's finder, without importing them (importing
deepspeed or flash_attn takes seconds and may initialise CUDA).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from sftctl.config.resolve import FLASH_ATTN, Resolved
from sftctl.errors import Problem
from sftctl.swift.values import as_texts

DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".arrow")
_SAMPLE = re.compile(r"#\d+$")


def is_local_ref(value: str) -> bool:
    """ms-swift takes a relative path that does not exist for a hub id and fails a
    minute later; these are the values that can only mean a local file or folder."""
    value = _SAMPLE.sub("", value)
    return value.startswith(("./", "../", "/", "~")) or value.lower().endswith(DATA_SUFFIXES)


def find_executable(name: str, env: Mapping[str, str]) -> str | None:
    """``name`` on PATH, else beside the running interpreter (a venv used without activation)."""
    found = shutil.which(name, path=env.get("PATH"))
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check(
    resolved: Resolved,
    env: Mapping[str, str],
    cwd: Path | None = None,
    path_of: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Problems that would make the run fail on this machine."""
    base = cwd or Path.cwd()
    path_of = path_of or {}
    problems: list[Problem] = []
    for key in ("dataset", "val_dataset"):
        for item in as_texts(resolved.args.get(key)):
            if item in path_of or item.startswith("builtin:"):
                continue
            if is_local_ref(item):
                path = Path(_SAMPLE.sub("", item)).expanduser()
                path = path if path.is_absolute() else base / path
                if not path.exists():
                    problems.append(
                        Problem(
                            f"args.{key}",
                            f"local dataset '{item}' does not exist ({path})",
                            "fix the path; ms-swift would take it for a hub id and fail after a minute",
                        )
                    )
    model = resolved.args.get("model")
    if (
        isinstance(model, str)
        and model not in path_of
        and not model.startswith("builtin:")
        and model.startswith(("./", "../", "/", "~"))
    ):
        path = Path(model).expanduser()
        path = path if path.is_absolute() else base / path
        if not (path / "config.json").is_file():
            problems.append(
                Problem(
                    "args.model",
                    f"local model folder '{model}' has no config.json ({path})",
                    "point model at a folder with config.json and weights",
                )
            )
    wanted = []
    if resolved.args.get("deepspeed"):
        wanted.append(("deepspeed", "deepspeed", "pip install 'sftctl[deepspeed]'"))
    if resolved.args.get("attn_impl") in FLASH_ATTN:
        wanted.append(
            (
                "flash_attn",
                "attn_impl",
                "pip install 'sftctl[gpu]' (needs CUDA), or attn_impl: sdpa",
            )
        )
    if "swanlab" in as_texts(resolved.args.get("report_to")):
        wanted.append(("swanlab", "report_to", "pip install 'sftctl[swanlab]'"))
    for module, key, fix in wanted:
        if not _installed(module):
            problems.append(
                Problem(
                    f"args.{key}",
                    f"needs the Python package '{module}', which is not installed",
                    fix,
                )
            )
    launcher = resolved.config.launch.launcher
    exe = "torchrun" if launcher == "torchrun" else "swift"
    if find_executable(exe, env) is None:
        problems.append(
            Problem(
                "launch.launcher",
                f"'{exe}' is not on PATH",
                "pip install 'sftctl[swift]' (ms-swift and torch) in this environment",
            )
        )
    return problems
