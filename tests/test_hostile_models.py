"""Hostile model folders, numbers and output paths for estimate, plan, run's checks and
runs: one clear message and exit 1 or 2, never a hang, a crash (exit 70) or a device
replaced by a file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import clean_env, sftctl_exe

from sftctl.resources.layout import Layout
from sftctl.resources.memory import checkpoint_size

pytestmark = pytest.mark.timeout(120)
QWEN_05B = {
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
}  # fmt: skip


def sftctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(HOME=str(cwd / "home"), HF_HOME=str(cwd / "hf"), MODELSCOPE_CACHE=str(cwd / "ms"))
    return subprocess.run(
        [*sftctl_exe(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def one_clear_message(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    for needle in needles:
        assert needle in text, text


def folder(tmp_path: Path, name: str, config: object | None = None) -> Path:
    path = tmp_path / name
    path.mkdir()
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def test_unreadable_config_files_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = folder(tmp_path, "fifo")
    os.mkfifo(fifo / "config.json")
    zero = folder(tmp_path, "zero")
    (zero / "config.json").symlink_to("/dev/zero")
    deep = folder(tmp_path, "deep")
    (deep / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    for bad, why in ((fifo, "not a regular file"), (zero, "not a regular file"), (deep, "nested too deeply")):
        out = sftctl(tmp_path, "estimate", "cpu-smoke", "--model", str(bad))
        one_clear_message(out, 1, "args.model:", why)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_size", -1024),
        ("num_attention_heads", 0),
        ("vocab_size", "151936"),
        ("num_hidden_layers", 10**28),
    ],
)
def test_impossible_config_fields_are_named(tmp_path: Path, field: str, value: object) -> None:
    model = folder(tmp_path, "m", {**QWEN_05B, field: value})
    out = sftctl(tmp_path, "estimate", "cpu-smoke", "--model", str(model))
    one_clear_message(out, 1, "args.model:", "config.json")
    assert field in out.stderr or "at least 1" in out.stderr


def test_junk_safetensors_fall_back_to_the_config(tmp_path: Path) -> None:
    model = folder(tmp_path, "m", QWEN_05B)
    (model / "a.safetensors").write_bytes(b"\x01\x02")
    (model / "b.safetensors").write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": "abc", "data_offsets": [0, 0]}}).encode()
    (model / "c.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    out = sftctl(tmp_path, "estimate", "cpu-smoke", "--model", str(model), "--json")
    one_clear_message(out, 0)
    assert json.loads(out.stdout)["params"] == 494_032_768  # derived from config.json
    layout = Layout(None, 1, 1, True, None, "cpu", "cpu")
    # bf16 weights and two bf16 AdamW moments
    assert checkpoint_size({"tuner_type": "full"}, layout, str(model)) == pytest.approx(494_032_768 * 6)


def test_sizes_beyond_any_machine_are_one_message(tmp_path: Path) -> None:
    for setting in ("max_length=1e308", "per_device_train_batch_size=" + "9" * 400):
        out = sftctl(tmp_path, "estimate", "cpu-smoke", "--set", setting)
        one_clear_message(out, 1, "is beyond any machine")


def test_plan_never_replaces_what_is_not_a_regular_file(tmp_path: Path) -> None:
    plan = ["plan", "--model", "Qwen/Qwen3-8B", "--gpu-count", "8", "--gpu-mem", "80GiB"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for target in (fifo, link):
        out = sftctl(tmp_path, *plan, "-o", str(target), "--force")
        one_clear_message(out, 2, "cannot write", "not a regular file")
    assert fifo.is_fifo() and link.is_symlink() and not (tmp_path / "nowhere").exists()
    out = sftctl(tmp_path, *plan, "-o", str(tmp_path / "no" / "such" / "dir" / "x.yaml"))
    one_clear_message(out, 0)  # the folders are made, as render -o makes them
    for gpus in ("-1", "0,0"):
        out = sftctl(tmp_path, "plan", "--model", "Qwen/Qwen3-8B", "--gpus", gpus, "--gpu-mem", "80GiB")
        one_clear_message(out, 1, "--gpus:")


def test_runs_skips_records_with_impossible_numbers(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    for name, extra in (("v0-a", {"peak_rss_bytes": 10**400}), ("v1-b", {"first_loss": "x"})):
        run = out_dir / name
        run.mkdir(parents=True)
        record = {"status": "succeeded", "run_id": name, "run_dir": str(run), **extra}
        (run / "sftctl-manifest.json").write_text(json.dumps(record))
    (out_dir / "v2-c").mkdir()
    (out_dir / "v2-c" / "sftctl-manifest.json").write_text('{"status": "succeeded", "wall_seconds": 1e400}')
    out = sftctl(tmp_path, "runs", str(out_dir))
    one_clear_message(out, 0, "skipped")
    assert out.stderr.count("skipped") == 3


def test_a_reader_that_goes_away_ends_a_listing_quietly(tmp_path: Path) -> None:
    for command in (
        "rules",
        "estimate zero2-qwen3-8b",
        "plan --model Qwen/Qwen3-8B --gpu-count 8 --gpu-mem 80GiB",
    ):
        out = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {' '.join(sftctl_exe())} {command} | head -1 >/dev/null"],
            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        # 141: ended by SIGPIPE, as `yes | head` is, not 1 ("invalid config"), and nothing said
        assert out.returncode in (0, 141) and out.stderr == "", (command, out.returncode, out.stderr)
