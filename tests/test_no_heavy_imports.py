"""`--help`, `render` and `validate` never import torch, transformers or ms-swift."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import clean_env

HEAVY = ("torch", "transformers", "swift", "deepspeed")
PROBE = f"""
import json, sys
sys.argv = ["sftctl", *json.loads(sys.argv[1])]
from sftctl.cli import app
try:
    app()
except SystemExit:
    pass
print("\\nLOADED=" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["render", "zero2-qwen3-8b"],
        ["render", "zero2-qwen3-30b-a3b", "--format", "json"],
        ["validate", "zero2-qwen3-8b", "lora-7b", "--model", "org/m"],
        ["validate", "ddp-device_map-qwen3-8b", "--host"],
        ["show", "lora-qwen2.5-7b"],
        ["presets"],
    ],
)
def test_heavy_modules_stay_unloaded(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED=")]
    assert line, out.stdout + out.stderr
    assert json.loads(line[0][len("LOADED=") :]) == []
