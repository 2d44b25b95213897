"""The code stays typed (mypy strict with the pydantic plugin) and lint-clean (ruff)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tool", [["ruff", "check", "src", "tests", "scripts"], ["mypy"]])
def test_static_checks(tool: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", *tool], cwd=REPO, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
