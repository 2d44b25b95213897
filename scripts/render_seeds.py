#!/usr/bin/env python3
"""Render every seed command as sftctl renders it into scripts/seeds/<preset>.sh.

`python scripts/render_seeds.py` rewrites them; `--check` exits 1 when any differs
from the presets (tests/test_seed_scripts.py runs that).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# preset -> extra arguments (a model where the seed leaves <MODEL_ID> to the user)
SEEDS: dict[str, list[str]] = {
    "ddp-device_map-qwen3-8b": [],
    "zero2-qwen3-8b": [],
    "zero2-qwen3-30b-a3b": [],
    "lora-7b": ["--model", "Qwen/Qwen2.5-7B-Instruct"],
    "lora-8b": ["--model", "Qwen/Qwen3-8B"],
    "lora-20b": ["--model", "openai/gpt-oss-20b"],
    "oom-fallback": ["--model", "Qwen/Qwen2.5-7B-Instruct"],
    "lora-qwen2.5-7b": [],
}


def main() -> int:
    check = "--check" in sys.argv[1:]
    failed = 0
    for preset, extra in SEEDS.items():
        target = HERE / "seeds" / f"{preset}.sh"
        mode = ["--check", str(target)] if check else ["-o", str(target)]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "sftctl",
                "render",
                preset,
                "--swift-version",
                "4",
                *extra,
                *mode,
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            failed += 1
            sys.stderr.write(out.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
