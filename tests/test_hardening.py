"""Hostile input (issue: nothing lost, no one let in): injection into rendered text,
resource blow-ups, secrets smuggled or echoed, values ms-swift rejects only after launch.

Each test names the item (H<N>) it covers; all run the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_regressions import sftctl, write

pytestmark = pytest.mark.timeout(120)

MARK = "MARK-not-to-be-echoed-7f3a"


def test_h6_a_file_name_cannot_inject_into_the_script(tmp_path: Path) -> None:
    cfg = write(tmp_path, "a\ntouch PWNED\nb.yaml", "extends: cpu-smoke\n")
    out = sftctl(tmp_path, "render", str(cfg))
    assert out.returncode == 0, out.stderr
    script = tmp_path / "r.sh"
    script.write_text(out.stdout)
    # Every comment line stays one line; bash -n parses it, and nothing ran.
    assert all(line.startswith("#") for line in out.stdout.splitlines()[1:4])
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "\\ntouch PWNED\\n" in out.stdout
    assert not (tmp_path / "PWNED").exists()


def test_h6_an_env_value_cannot_inject_keys_into_swift_yaml(tmp_path: Path) -> None:
    import yaml

    out = sftctl(
        tmp_path, "render", "cpu-smoke", "--format", "swift-yaml", "--set", "env.X=a\nadd_version: false"
    )
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert "add_version" not in doc


def test_h6_a_description_cannot_send_escape_sequences(tmp_path: Path) -> None:
    write(tmp_path, "presets/evil.yaml", 'description: "\\e[2J\\e]0;owned\\aok"\nextends: cpu-smoke\n')
    out = sftctl(tmp_path, "presets")
    assert out.returncode == 0 and "\x1b" not in out.stdout and "\\x1b" in out.stdout


@pytest.mark.parametrize("where", ["env", "description", "args.model_kwargs"])
def test_h7_an_alias_bomb_is_refused_at_once(tmp_path: Path, where: str) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    head, _, key = where.partition(".")
    body = f"{head}:\n  {key}: *i\n" if key else f"{head}: *i\n"
    cfg = write(
        tmp_path, "bomb.yaml", "x-anchors:\n" + "".join("  " + ln + "\n" for ln in bomb.splitlines()) + body
    )
    start = time.monotonic()
    out = sftctl(tmp_path, "validate", str(cfg), "--json")
    assert time.monotonic() - start < 10
    assert out.returncode == 1
    assert [p["id"] for p in json.loads(out.stdout)[str(cfg)]] == ["F011"]


@pytest.mark.parametrize("gpus", ["0-99999", "0-99999999", "1024"])
def test_h7_gpu_ranges_are_bounded(tmp_path: Path, gpus: str) -> None:
    start = time.monotonic()
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--gpus", gpus)
    assert time.monotonic() - start < 10
    assert out.returncode == 1 and "ids go up to 1023" in out.stderr


@pytest.mark.parametrize("name", ["swanlab_secret", "swanlab_webhook_url", "hub_token"])
def test_h8_secret_arguments_are_refused(tmp_path: Path, name: str) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", f"{name}={MARK}", "--json")
    assert out.returncode == 1
    assert [p["id"] for p in json.loads(out.stdout)["cpu-smoke"]] == ["S001"]
    assert MARK not in out.stdout + out.stderr


def test_h8_a_flag_smuggled_in_a_list_value_is_refused(tmp_path: Path) -> None:
    out = sftctl(
        tmp_path, "validate", "cpu-smoke", "--set", f"dataset=[builtin:demo-sft, --hub_token, {MARK}]"
    )
    assert out.returncode == 1 and "would be read by ms-swift as a flag" in out.stderr


def test_h8_a_secret_keys_value_is_never_echoed(tmp_path: Path) -> None:
    cfg = write(tmp_path, "s.yaml", f"extends: cpu-smoke\nenv:\n  HF_TOKEN:\n    nested: {MARK}\n")
    out = sftctl(tmp_path, "validate", str(cfg))
    assert out.returncode == 1 and "env.HF_TOKEN" in out.stderr
    assert MARK not in out.stdout + out.stderr


@pytest.mark.parametrize(
    "item",
    [
        "learning_rate=nan",
        "learning_rate=inf",
        "learning_rate=-1e-4",
        "per_device_train_batch_size=0",
        "gradient_accumulation_steps=0",
        "num_train_epochs=-1",
        "save_total_limit=-1",
        "warmup_ratio=1.5",
        "output_dir=--resume_from_checkpoint",
    ],
)
def test_h10_values_ms_swift_rejects_late_are_refused(tmp_path: Path, item: str) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", item, "--json")
    assert out.returncode == 1, out.stdout
    (problem,) = json.loads(out.stdout)["cpu-smoke"]
    assert problem["id"] in ("A015", "A016"), problem


def test_h10_sentinels_stay_legal(tmp_path: Path) -> None:
    assert sftctl(tmp_path, "validate", "cpu-smoke", "--set", "max_steps=-1").returncode == 0


def test_h10_master_port_true_is_not_port_1(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "render", "cpu-smoke-ddp", "--set", "launch.master_port=true")
    assert out.returncode == 1 and "launch.master_port" in out.stderr


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("truncated", b'{"status": "runn'),
        ("empty", b""),
        ("binary", b"\xff\xfe\x00\x01"),
        ("list", b"[1, 2]"),
        ("null", b"null"),
    ],
)
@pytest.mark.parametrize("command", ["show", "stop", "resume"])
def test_h9_a_broken_manifest_is_one_line(tmp_path: Path, name: str, content: bytes, command: str) -> None:
    run_dir = tmp_path / "v0-20261130-000000"
    run_dir.mkdir()
    (run_dir / "sftctl-manifest.json").write_bytes(content)
    out = sftctl(tmp_path, command, str(run_dir))
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_h9_runs_lists_around_broken_manifests(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    (out_dir / "v0-20261130-000000").mkdir(parents=True)
    (out_dir / "v0-20261130-000000" / "sftctl-manifest.json").write_text("[1")
    (out_dir / "sftctl-manifest.json").write_text("null")
    (out_dir / "sftctl-manifest-x.json").write_text('{"run_id": "good-one", "status": "failed"}')
    out = sftctl(tmp_path, "runs", str(out_dir))
    assert out.returncode == 0 and "good-one" in out.stdout, out.stderr


def test_h9_a_pointer_loop_and_a_foreign_file_are_one_line(tmp_path: Path) -> None:
    loop = tmp_path / ".sftctl" / "x"
    loop.mkdir(parents=True)
    (loop / "manifest.json").write_text(
        json.dumps({"moved_to": str(loop), "manifest": str(loop / "manifest.json")})
    )
    out = sftctl(tmp_path, "stop", str(loop))
    assert out.returncode == 1 and "leads back to itself" in out.stderr
    out = sftctl(tmp_path, "stop", "/etc/passwd")
    assert out.returncode == 1 and "not a readable sftctl manifest" in out.stderr


@pytest.mark.parametrize("kind", ["under-a-file", "dangling-link", "link-loop"])
def test_h9_an_unusable_output_dir_is_refused_before_launch(tmp_path: Path, kind: str) -> None:
    if kind == "under-a-file":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "out"
    elif kind == "dangling-link":
        (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
        target = tmp_path / "gone"
    else:
        (tmp_path / "l1").symlink_to(tmp_path / "l2")
        (tmp_path / "l2").symlink_to(tmp_path / "l1")
        target = tmp_path / "l1" / "out"
    out = sftctl(
        tmp_path, "run", "cpu-smoke", "--set", f"output_dir={target}", SFTCTL_CACHE=str(tmp_path / "c")
    )
    assert out.returncode == 1, out.stderr
    assert "H012" not in out.stderr and "cannot create or write" in out.stderr
    assert "nothing was started" in out.stderr and "internal error" not in out.stderr


def test_h9_an_unusable_cache_is_refused_before_launch(tmp_path: Path) -> None:
    (tmp_path / "cachefile").write_text("x")
    out = sftctl(tmp_path, "run", "cpu-smoke", SFTCTL_CACHE=str(tmp_path / "cachefile"))
    assert out.returncode == 1 and "SFTCTL_CACHE" in out.stderr and "internal error" not in out.stderr


def test_h9_control_characters_in_values(tmp_path: Path) -> None:
    esc = write(tmp_path, "esc.yaml", 'extends: cpu-smoke\nargs:\n  system: "a\\eb"\n')
    for argv in (["render", str(esc), "--format", "swift-yaml"], ["show", str(esc)]):
        out = sftctl(tmp_path, *argv)
        assert out.returncode == 0 and 'system: "a\\eb"' in out.stdout, out.stderr
    nul = write(tmp_path, "nul.yaml", 'extends: cpu-smoke\nargs:\n  system: "a\\0b"\n')
    out = sftctl(tmp_path, "validate", str(nul))
    assert out.returncode == 1 and "NUL" in out.stderr


def test_h9_an_unreadable_user_preset_does_not_break_the_list(tmp_path: Path) -> None:
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "bad.yaml").write_bytes(b"description: \xff\xfe\n")
    out = sftctl(tmp_path, "presets")
    assert out.returncode == 0 and "(unreadable)" in out.stdout and "cpu-smoke" in out.stdout


@pytest.mark.parametrize("grace", ["nan", "inf", "-1"])
def test_h5_grace_must_be_seconds(tmp_path: Path, grace: str) -> None:
    out = sftctl(tmp_path, "run", "cpu-smoke", "--grace", grace)
    assert out.returncode == 2 and "not a number of seconds" in out.stderr


@pytest.mark.swift
def test_h5_a_killed_model_build_leaves_nothing_behind(tmp_path: Path) -> None:
    """What a build killed by SIGTERM leaves (its temporary folder) is gone after the next."""
    models = tmp_path / "cache" / "models"
    stale = models / ".tiny-qwen3-v1.k1ll3d"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    code = "from sftctl.assets.builder import materialise; print(materialise('builtin:tiny-qwen3'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SFTCTL_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert not stale.exists()
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["tiny-qwen3-v1"]


def test_a_bug_is_exit_70_with_one_line_and_a_log(tmp_path: Path) -> None:
    """A fault planted in sftctl's own code (not bad input) is an internal error, never exit 1."""
    code = (
        "import sys; import sftctl.config.presets as p\n"
        "def broken(): raise RuntimeError('planted fault')\n"
        "p.list_presets = broken\n"
        "sys.argv = ['sftctl', 'presets']\n"
        "from sftctl.cli import main; main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert out.returncode == 70
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("sftctl: internal error: RuntimeError: planted fault; details in ")
    log = Path(line.rsplit(" ", 1)[-1])
    assert "Traceback" in log.read_text() and log.parent == tmp_path


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Any:
    """A real read-only file system (a tmpfs mounted ro); root ignores permission bits."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to mount a read-only tmpfs")
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    (folder / "home").mkdir()
    run_dir = folder / "out" / "v0-20261130-000000"
    run_dir.mkdir(parents=True)
    manifest = {"status": "running", "run_id": "gone", "supervisor_pid": 999999999, "supervisor_start": 1}
    (run_dir / "sftctl-manifest.json").write_text(json.dumps(manifest))
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_h9_read_only_places_are_one_line(tmp_path: Path, read_only_dir: Path) -> None:
    out = sftctl(tmp_path, "run", "cpu-smoke", "--set", f"output_dir={read_only_dir / 'new'}")
    assert out.returncode == 1 and "is not writable" in out.stderr and "nothing was started" in out.stderr
    home = {"HOME": str(read_only_dir / "home"), "XDG_CACHE_HOME": ""}
    out = sftctl(tmp_path, "run", "cpu-smoke", **home)
    assert out.returncode == 1 and "SFTCTL_CACHE" in out.stderr and "internal error" not in out.stderr
    out = sftctl(tmp_path, "stop", str(read_only_dir / "out" / "v0-20261130-000000"))
    assert out.returncode == 0 and "could not update" in out.stderr and "internal error" not in out.stderr


# Found by a second session trying to break the hardening.


def test_h9_a_nul_in_an_env_value_is_refused_by_validate(tmp_path: Path) -> None:
    cfg = write(tmp_path, "nul.yaml", 'extends: cpu-smoke\nenv:\n  FOO: "a\\0b"\n')
    out = sftctl(tmp_path, "validate", str(cfg))
    assert out.returncode == 1 and "env.FOO" in out.stderr and "NUL" in out.stderr


def test_h9_a_deeply_nested_manifest_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "out" / "v0-20261130-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "sftctl-manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    for command in ("show", "stop", "resume"):
        out = sftctl(tmp_path, command, str(run_dir))
        assert out.returncode == 1 and "nested too deeply" in out.stderr, (command, out.stderr)
    out = sftctl(tmp_path, "runs", str(tmp_path / "out"))
    assert out.returncode == 0 and "skipped" in out.stderr and "not readable" in out.stderr


def test_h9_record_text_never_drives_the_terminal(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    doc = {"run_id": "r1", "status": "\x1b[31mowned\n\x00", "target": "\x1b]0;title\x07"}
    (out_dir / "sftctl-manifest.json").write_text(json.dumps(doc))
    out = sftctl(tmp_path, "runs", str(out_dir))
    assert out.returncode == 0 and "\x1b" not in out.stdout + out.stderr and "\\x1b" in out.stdout


def test_h3_a_record_naming_a_live_stranger_is_lost_not_running(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        start = int(Path(f"/proc/{stranger.pid}/stat").read_bytes().split(b") ")[-1].split()[19])
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        doc = {"run_id": "r1", "status": "running", "supervisor_pid": stranger.pid, "supervisor_start": start}
        (out_dir / "sftctl-manifest.json").write_text(json.dumps(doc))
        out = sftctl(tmp_path, "runs", str(out_dir))
        assert " lost " in out.stdout and "running" not in out.stdout, out.stdout
    finally:
        stranger.kill()
        stranger.wait()
