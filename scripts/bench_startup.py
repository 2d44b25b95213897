#!/usr/bin/env python3
"""How much sooner sftctl finds a mistake than ms-swift does, and how fast it renders.

Prints, from one run on this machine:
- the median wall time of `sftctl validate` on a config with a misspelled flag, next to
  the time until the real `swift sft` reports the same misspelling, and their ratio;
- the median wall time of `sftctl render`, next to `python -c "import typer"`.
The floor: validate and render under 0.5 s median.

Usage: .venv/bin/python scripts/bench_startup.py [--runs N] [--swift-runs M]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FLOOR_S = 0.5
DEPS = "import typer, typer._adapters, yaml, pydantic; from pydantic import BaseModel"


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - start, out


def median_of(
    runs: int,
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    expect: int | None = None,
    must_say: str | None = None,
) -> float:
    times = []
    for _ in range(runs):
        seconds, out = timed(argv, env, cwd)
        if expect is not None and out.returncode != expect:
            sys.exit(f"unexpected exit {out.returncode} from {argv}:\n{out.stderr[-2000:]}")
        if must_say and must_say not in out.stdout + out.stderr:
            sys.exit(f"{argv} did not report {must_say!r}:\n{(out.stdout + out.stderr)[-2000:]}")
        times.append(seconds)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--swift-runs", type=int, default=3)
    opts = parser.parse_args()

    from sftctl.assets.builder import materialise

    work = Path(tempfile.mkdtemp(prefix="sftctl-bench-"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
        "SFTCTL_SWIFT_VERSION": "4",
        "MODELSCOPE_CACHE": str(work / "ms"),
        "HF_HOME": str(work / "hf"),
        "MPLCONFIGDIR": str(work / "mpl"),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # Measure the tool as installed: with its bytecode cached, as pip leaves it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    model = materialise("builtin:tiny-qwen3")
    data = materialise("builtin:demo-sft")
    config = work / "typo.yaml"
    config.write_text(
        "launch: {gpus: ''}\n"
        f"args:\n  model: {model}\n  model_type: qwen3\n  template: qwen3\n  dataset: {data}\n"
        "  tuner_type: full\n  lerning_rate: 1e-4\n  max_steps: 1\n  check_model: false\n"
        "  report_to: none\n  output_dir: out\n"
    )

    sftctl = str(BIN / "sftctl")
    subprocess.run([sftctl, "render", "zero2-qwen3-8b"], env=env, capture_output=True, check=True)  # warm
    # The quick commands alternate, so slow spells of a shared machine hit all of them alike;
    # the long ms-swift runs come last.
    times: dict[str, list[float]] = {
        "validate": [], "render": [], "estimate": [], "plan": [], "typer": [], "deps": []
    }  # fmt: skip
    quick = {
        "validate": ([sftctl, "validate", str(config)], 1, "lerning_rate"),
        "render": ([sftctl, "render", "zero2-qwen3-8b"], 0, None),
        "estimate": ([sftctl, "estimate", "zero2-qwen3-8b", "--json"], 0, "peak_bytes"),
        "plan": (
            [sftctl, "plan", "--model", "Qwen/Qwen3-8B", "--gpus", "8", "--gpu-mem", "80GiB", "--json"],
            0,
            "effective_batch",
        ),
        "typer": ([sys.executable, "-c", "import typer"], 0, None),
        # What the dependencies alone cost before sftctl does anything: Typer 0.29 parses
        # arguments with pydantic TypeAdapters, so its adapters and pydantic load every time.
        "deps": ([sys.executable, "-c", DEPS], 0, None),
    }
    for _ in range(opts.runs):
        for name, (argv, code, says) in quick.items():
            times[name].append(median_of(1, argv, env, work, expect=code, must_say=says))
    validate, render, estimate, plan, typer_only, deps = (
        statistics.median(times[k]) for k in ("validate", "render", "estimate", "plan", "typer", "deps")
    )
    swift = median_of(
        opts.swift_runs,
        [
            str(BIN / "swift"),
            "sft",
            "--model",
            str(model),
            "--model_type",
            "qwen3",
            "--template",
            "qwen3",
            "--dataset",
            str(data),
            "--tuner_type",
            "full",
            "--lerning_rate",
            "1e-4",
            "--max_steps",
            "1",
            "--check_model",
            "false",
            "--report_to",
            "none",
            "--output_dir",
            str(work / "swift-out"),
        ],
        env,
        work,
        must_say="lerning_rate",
    )

    print(f"{'what':58} {'median s':>9}")
    print(f"{'sftctl validate (misspelled lerning_rate)':58} {validate:9.3f}")
    print(f"{'swift sft until it reports the same misspelling':58} {swift:9.3f}")
    print(f"{'  ratio swift / sftctl validate':58} {swift / validate:9.1f}x")
    print(f"{'sftctl render zero2-qwen3-8b':58} {render:9.3f}")
    label = 'python -c "import typer"'
    print(f"{label:58} {typer_only:9.3f}")
    print(f"{'  ratio render / import typer':58} {render / typer_only:9.2f}x")
    print(f"{'typer + its pydantic adapters + pydantic + yaml imported':58} {deps:9.3f}")
    print(f"{'  what sftctl adds to them (render)':58} {render - deps:9.3f}")
    print(f"{'sftctl estimate zero2-qwen3-8b --json':58} {estimate:9.3f}")
    print(f"{'  ratio swift (first failure) / sftctl estimate':58} {swift / estimate:9.1f}x")
    print(f"{'sftctl plan Qwen3-8B on 8 x 80 GiB --json':58} {plan:9.3f}")
    ok = validate < FLOOR_S and render < FLOOR_S
    print(f"floor {FLOOR_S} s for validate and render: {'met' if ok else 'NOT met'}")
    fast = estimate < 1.0 and plan < 1.0
    print(f"floor 1 s for estimate and plan: {'met' if fast else 'NOT met'}")


if __name__ == "__main__":
    main()
