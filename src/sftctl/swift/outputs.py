"""What ms-swift writes where: run folders, checkpoints, and the line that names the folder."""

from __future__ import annotations

import re
from pathlib import Path

# <output_dir>/v<N>-<YYYYMMDD-HHMMSS>/, made by ms-swift unless add_version is false.
RUN_FOLDER = re.compile(r"^v\d+-\d{8}-\d{6}$")
# Printed as ms-swift creates a versioned run folder (not with add_version false).
ANNOUNCE = re.compile(r"\[INFO:swift\] output_dir: (.+)$")


def checkpoint_dirs(folder: Path) -> list[Path]:
    """checkpoint-N folders of one run folder, by step."""
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir()
        and p.name.startswith("checkpoint-")
        and p.name.split("-", 1)[1].isascii()
        and p.name.split("-", 1)[1].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints that were written to the end (trainer state and weights present)."""
    return [
        c
        for c in checkpoint_dirs(run_dir)
        if (c / "trainer_state.json").is_file() and any(c.glob("*.safetensors"))
    ]
