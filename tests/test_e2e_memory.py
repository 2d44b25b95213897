"""The memory estimate against real training on this CPU machine: two depths of a
random-initialised Qwen3 (fp32, full and LoRA), and the increase of the training
process's peak RssAnon from the shallow to the deep one against the increase the
estimate predicts (within 15%).

glibc keeps freed memory in its heap, so RSS would show the allocator's history rather
than live tensors: the runs set MALLOC_MMAP_THRESHOLD_ so large blocks go back to the
system when freed, and RssAnon then follows what is allocated."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, sftctl_exe

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="needs ms-swift"),
    pytest.mark.timeout(900),
]
DEPTHS = (4, 16)
BUILD_TINY = "from sftctl.assets.builder import materialise as m; print(m('builtin:tiny-qwen3'))"
CONFIG = """\
extends: cpu-smoke
env:
  MALLOC_MMAP_THRESHOLD_: "65536"
args:
  model_type: qwen3
  template: qwen3
  dataset: [./long.jsonl]
  torch_dtype: float32
  per_device_train_batch_size: 4
  gradient_accumulation_steps: 1
  max_length: 128
  truncation_strategy: right
  gradient_checkpointing: false
  max_steps: 2
  save_strategy: "no"
"""


def _sftctl(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*sftctl_exe(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, e2e_cache: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("memory")
    env = clean_env(SFTCTL_CACHE=str(e2e_cache), HOME=str(work / "home"))
    tiny = (
        subprocess.run(
            [sys.executable, "-c", BUILD_TINY],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )  # fmt: skip (deepspeed may print a warning first)
    for depth in DEPTHS:
        subprocess.run(
            [sys.executable, str(REPO / "tests" / "procs" / "sized_qwen3.py"), tiny, str(work / f"m{depth}"),
             str(depth), "1024", "3072"],
            env=env, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
    rng = random.Random(0)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "a",
        "small",
        "model",
        "learns",
        "from",
        "data",
    ]
    with (work / "long.jsonl").open("w") as fh:
        for _ in range(16):  # every row is longer than max_length: each batch is 4 x 128 tokens
            q, a = (" ".join(rng.choice(words) for _ in range(n)) for n in (60, 200))
            messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            fh.write(json.dumps({"messages": messages}) + "\n")
    (work / "run.yaml").write_text(CONFIG)
    return work, env


@pytest.mark.parametrize("tuner", ["full", "lora"])
def test_rss_increase_matches_the_estimate(workdir: tuple[Path, dict[str, str]], tuner: str) -> None:
    work, env = workdir
    measured, predicted = [], []
    for depth in DEPTHS:
        sets = [
            "--model",
            f"./m{depth}",
            "--set",
            f"tuner_type={tuner}",
            "--set",
            f"output_dir=out-{tuner}-{depth}",
        ]
        guess = json.loads(_sftctl(work, env, "estimate", "run.yaml", *sets, "--json").stdout)
        predicted.append(guess["peak_bytes"])
        _sftctl(work, env, "run", "run.yaml", "--quiet", *sets)
        (manifest,) = (work / f"out-{tuner}-{depth}").glob("v*/sftctl-manifest.json")
        measured.append(json.loads(manifest.read_text())["peak_process_rss_bytes"])
    grew, expected = measured[1] - measured[0], predicted[1] - predicted[0]
    print(f"{tuner}: RssAnon grew {grew / 2**20:.0f} MiB, the estimate {expected / 2**20:.0f} MiB "
          f"({(grew / expected - 1) * 100:+.1f}%)")  # fmt: skip
    assert expected >= 500e6, expected
    assert abs(grew / expected - 1) <= 0.15, (grew, expected)
