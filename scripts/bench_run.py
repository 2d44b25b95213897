#!/usr/bin/env python3
"""What supervision costs: `sftctl run cpu-smoke` against the same command run by hand.

For each pair (interleaved, so drift in machine load hits both alike) it runs
1. `sftctl run cpu-smoke --quiet` and
2. the exact command sftctl renders (`sftctl render cpu-smoke --format json`), started
   directly with that env, as a user would paste the script,
each into a fresh output folder, and prints the median wall times, the median overhead
in seconds and the ratio. Floor: ratio under 1.05.

Usage: .venv/bin/python scripts/bench_run.py [--pairs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FLOOR = 1.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--preset", default="cpu-smoke")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sftctl-bench-run-"))
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "SFTCTL_CACHE": os.environ.get("SFTCTL_CACHE", str(work / "cache")),
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    sftctl = str(BIN / "sftctl")
    # Build the tiny model once, outside the timing.
    subprocess.run(
        [sftctl, "run", opts.preset, "--quiet"], cwd=work, env=env, check=True, capture_output=True
    )
    doc = json.loads(
        subprocess.run(
            [sftctl, "render", opts.preset, "--format", "json"],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    by_hand_env = {k: v for k, v in env.items() if k not in doc["unset"]}
    by_hand_env.update(doc["env"])

    with_sftctl: list[float] = []
    by_hand: list[float] = []
    for i in range(opts.pairs):
        for kind in ("sftctl", "hand") if i % 2 == 0 else ("hand", "sftctl"):
            folder = work / f"{kind}-{i}"
            folder.mkdir()
            start = time.perf_counter()
            if kind == "sftctl":
                out = subprocess.run(
                    [sftctl, "run", opts.preset, "--quiet"],
                    cwd=folder,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                with_sftctl.append(time.perf_counter() - start)
            else:
                out = subprocess.run(doc["argv"], cwd=folder, env=by_hand_env, capture_output=True, text=True)
                by_hand.append(time.perf_counter() - start)
            if out.returncode != 0:
                sys.exit(f"{kind} run {i} failed ({out.returncode}):\n{out.stderr[-3000:]}")
        print(f"pair {i + 1}: sftctl {with_sftctl[-1]:.2f} s, by hand {by_hand[-1]:.2f} s", flush=True)

    ms, mh = statistics.median(with_sftctl), statistics.median(by_hand)
    overhead = statistics.median(a - b for a, b in zip(with_sftctl, by_hand, strict=True))
    print(f"\n{opts.pairs} interleaved pairs of `{opts.preset}`")
    print(f"median wall, sftctl run:      {ms:.2f} s")
    print(f"median wall, by hand:         {mh:.2f} s")
    print(f"median overhead per pair:     {overhead:+.2f} s")
    print(
        f"ratio (median sftctl / hand): {ms / mh:.3f}  "
        f"(floor {FLOOR}: {'met' if ms / mh < FLOOR else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
