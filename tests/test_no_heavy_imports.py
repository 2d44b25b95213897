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
    code = 0
except SystemExit as exc:
    code = exc.code or 0
print("\\nLOADED=" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
print("EXIT=" + str(code))
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["render", "zero2-qwen3-8b"], 0),
        (["render", "zero2-qwen3-30b-a3b", "--format", "json"], 0),
        (["validate", "zero2-qwen3-8b", "lora-7b", "--model", "org/m"], 0),
        # Host checks run (and find the seed's local dataset missing) without loading torch.
        (["validate", "ddp-device_map-qwen3-8b", "--host"], 1),
        (["show", "lora-qwen2.5-7b"], 0),
        (["presets"], 0),
        (["rules"], 0),
        (["gpus", "--json"], 0),
    ],
)
def test_heavy_modules_stay_unloaded(argv: list[str], code: int) -> None:
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
    # The command itself worked: a crash before the heavy import would also leave it unloaded.
    assert f"EXIT={code}" in out.stdout.splitlines(), out.stdout[-2000:] + out.stderr[-2000:]
    if code:
        assert "local dataset 'train_dataset.json' does not exist" in out.stderr, out.stderr
