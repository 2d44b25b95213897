"""scripts/seeds/*.sh are the seed commands as sftctl renders them; they must not drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, clean_env


def test_seed_scripts_match_the_presets() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "render_seeds.py"), "--check"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_drift_is_detected(tmp_path: Path) -> None:
    copy = tmp_path / "zero2.sh"
    original = (REPO / "scripts" / "seeds" / "zero2-qwen3-8b.sh").read_text()
    copy.write_text(original.replace("--learning_rate 1e-4", "--learning_rate 2e-4"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sftctl",
            "render",
            "zero2-qwen3-8b",
            "--swift-version",
            "4",
            "--check",
            str(copy),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert out.returncode == 1
    assert "-    --learning_rate 2e-4" in out.stderr
