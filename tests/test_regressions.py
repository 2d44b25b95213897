"""Regression tests for defects found by trying sftctl as a new user would and by review.

Each test names its defect (D<N>, the item of the issue that reported it) and runs the
installed console script or the Typer app, so it exercises what a user runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env, sftctl_exe

pytestmark = pytest.mark.timeout(120)


def sftctl(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script, as a user runs it, with no inherited GPU or version hints."""
    full = clean_env(SFTCTL_PRESETS=str(cwd / "presets"), COLUMNS="200", **env)
    full["PATH"] = str(Path(sys.executable).parent) + os.pathsep + full.get("PATH", "")
    return subprocess.run(
        [*sftctl_exe(), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60
    )


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


VALID = 'args:\n  model: Qwen/Qwen3-8B\n  train_type: full\n  dataset: org/data\nlaunch:\n  gpus: "0"\n'


def test_d2_one_unsupported_swift_version_is_that_files_problem(tmp_path: Path) -> None:
    old = write(tmp_path, "old.yaml", "swift_version: 2\n" + VALID)
    good = write(tmp_path, "good.yaml", VALID)
    out = sftctl(tmp_path, "validate", str(old), str(good))
    assert out.returncode == 1, out.stderr
    assert f"{good}: ok" in out.stdout
    assert f"{old}: swift_version: ms-swift 2.x is not supported" in out.stderr
    alone = sftctl(tmp_path, "validate", str(old))
    assert alone.returncode == 2 and "swift_version" in alone.stderr  # alone: the usage error (exit 2)
    # The command line's own choice stays a usage error (exit 2).
    assert sftctl(tmp_path, "validate", str(good), "--swift-version", "2").returncode == 2


def test_d8_an_empty_set_value_is_an_error_not_a_deletion(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", "save_steps=")
    assert out.returncode == 1
    assert "--set save_steps: has an empty value" in out.stderr
    assert "--set save_steps=null" in out.stderr
    # A string argument takes the empty string; null still deletes.
    assert sftctl(tmp_path, "validate", "cpu-smoke", "--set", "run_name=").returncode == 0
    shown = sftctl(tmp_path, "render", "cpu-smoke", "--set", "save_steps=null", "--format", "json")
    assert shown.returncode == 0 and "--save_steps" not in json.loads(shown.stdout)["argv"]


@pytest.mark.parametrize("name", ["IMAGE_MAX_TOKEN_NUM", "VIDEO_MAX_TOKEN_NUM", "TOKENIZERS_PARALLELISM"])
def test_d9_token_counts_are_not_secrets(tmp_path: Path, name: str) -> None:
    cfg = write(tmp_path, "vl.yaml", VALID + f"env:\n  {name}: '1024'\n")
    out = sftctl(tmp_path, "validate", str(cfg))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "MY_SECRET", "DB_PASSWORD"])
def test_d9_real_secret_names_are_still_refused(tmp_path: Path, name: str) -> None:
    cfg = write(tmp_path, "leak.yaml", VALID + f"env:\n  {name}: x\n")
    out = sftctl(tmp_path, "validate", str(cfg), "--json")
    assert out.returncode == 1
    (problem,) = json.loads(out.stdout)[str(cfg)]
    assert (problem["id"], problem["location"]) == ("S002", f"env.{name}")


@pytest.mark.parametrize(
    ("parent_key", "child_key"), [("tuner_type", "train_type"), ("train_type", "tuner_type")]
)
def test_d10_a_child_spelling_replaces_the_parents(tmp_path: Path, parent_key: str, child_key: str) -> None:
    write(tmp_path, "base.yaml", f"args:\n  model: Qwen/Qwen3-8B\n  {parent_key}: full\n  dataset: org/d\n")
    child = write(
        tmp_path, "child.yaml", f"extends: base.yaml\nlaunch:\n  gpus: '0'\nargs:\n  {child_key}: lora\n"
    )
    for major in ("3", "4"):
        out = sftctl(tmp_path, "render", str(child), "--format", "json", "--swift-version", major)
        assert out.returncode == 0, out.stderr
        argv = json.loads(out.stdout)["argv"]
        flag = "--train_type" if major == "3" else "--tuner_type"
        assert argv[argv.index(flag) + 1] == "lora" and argv.count(flag) == 1


def test_d10_lora_llm_is_not_a_3x_tuner(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", "train_type=lora_llm", "--swift-version", "3")
    assert out.returncode == 1 and "unknown train_type 'lora_llm' for ms-swift 3.x" in out.stderr
    assert sftctl(tmp_path, "validate", "cpu-smoke", "--set", "tuner_type=lora_llm").returncode == 0


def test_d11_a_float_hint_uses_the_arguments_own_default(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", "num_train_epochs=two")
    assert out.returncode == 1
    assert "(fix: write e.g. num_train_epochs: 3)" in out.stderr and "1e-4" not in out.stderr


def test_d11_too_few_gpus_for_zero2_says_the_one_setting_that_works(tmp_path: Path) -> None:
    # An explicit process count wins over the follow rule, and is checked.
    out = sftctl(
        tmp_path, "validate", "zero2-qwen3-8b", "--gpus", "4,5,6,7", "--set", "launch.nproc_per_node=8"
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "--set launch.nproc_per_node=4" in lines[0] and "or fewer" not in lines[0]
    fixed = sftctl(
        tmp_path, "validate", "zero2-qwen3-8b", "--gpus", "4,5,6,7", "--set", "launch.nproc_per_node=4"
    )
    assert fixed.returncode == 0, fixed.stderr


def test_d11_duplicate_gpus_are_not_counted(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "validate", "zero2-qwen3-8b", "--gpus", "0,0,1,2")
    assert out.returncode == 1
    assert "GPU ids listed twice: [0]" in out.stderr and "gpus: 0,1,2" in out.stderr
    assert "visible GPU" not in out.stderr


def test_d11_use_cpu_false_is_not_called_unset(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke-ddp", "--set", "use_cpu=false")
    assert out.returncode == 1 and "use_cpu is false" in out.stderr and "use_cpu unset" not in out.stderr


def test_d11_a_missing_file_is_named_once(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "validate", "missing.yaml")
    assert out.returncode == 1
    assert out.stderr.count("missing.yaml") == 1, out.stderr


def test_d11_a_folder_is_not_called_missing(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    out = sftctl(tmp_path, "validate", "configs")
    assert out.returncode == 1 and "is a folder, not a config file" in out.stderr
    assert "unknown preset" not in out.stderr and "no such" not in out.stderr


@pytest.mark.parametrize("key", ["nproc_per_node", "gpus", "master_port", "nnodes"])
def test_d11_launch_settings_set_as_arguments_point_to_launch(tmp_path: Path, key: str) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", f"{key}=4")
    assert out.returncode == 1 and f"--set launch.{key}=" in out.stderr


def test_d11_a_flat_ms_swift_yaml_says_to_use_args(tmp_path: Path) -> None:
    flat = write(
        tmp_path, "flat.yaml", "model: Qwen/Qwen3-8B\ntrain_type: lora\ndataset: org/d\nlearning_rate: 1e-4\n"
    )
    out = sftctl(tmp_path, "validate", str(flat), "--json")
    assert out.returncode == 1
    problems = json.loads(out.stdout)[str(flat)]
    assert [p["id"] for p in problems] == ["C008"], problems
    assert "model, train_type, dataset, learning_rate" in problems[0]["message"]
    assert "args:" in problems[0]["fix"]


def test_d11_runs_on_a_missing_folder_fails(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "runs", str(tmp_path / "nowhere"))
    assert out.returncode == 1 and "nowhere" in out.stderr and "Traceback" not in out.stderr


def test_d11_a_user_preset_that_shadows_a_shipped_one_says_so(tmp_path: Path) -> None:
    write(tmp_path, "presets/cpu-smoke.yaml", "description: mine\nextends: cpu-lora-own\n")
    out = sftctl(tmp_path, "presets", "--json")
    row = next(r for r in json.loads(out.stdout) if r["name"] == "cpu-smoke")
    assert row["origin"] == "user, shadows shipped"
    table = sftctl(tmp_path, "presets")
    assert "shadows shipped" in table.stdout


# Found by a session trying to break sftctl after the fixes above.


@pytest.mark.parametrize("name", ["NPROC_PER_NODE", "CUDA_VISIBLE_DEVICES", "MASTER_PORT"])
def test_env_cannot_bypass_the_layout(tmp_path: Path, name: str) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", f"env.{name}=3", "--json")
    assert out.returncode == 1
    (problem,) = json.loads(out.stdout)["cpu-smoke"]
    assert (problem["id"], problem["location"]) == ("C009", f"env.{name}")
    assert "launch." in problem["fix"]


@pytest.mark.parametrize("item", ["args.=1", "x\ny=1", "=1", "launch..gpus=1"])
def test_set_keys_must_be_names(tmp_path: Path, item: str) -> None:
    out = sftctl(tmp_path, "validate", "cpu-smoke", "--set", item)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a key" in lines[0] or "has no key" in lines[0], lines
    assert len(out.stderr) < 400  # not every argument of ms-swift as an "abbreviation"


def test_preset_option_takes_names_not_paths(tmp_path: Path) -> None:
    out = sftctl(tmp_path, "render", "--preset", "../../etc/passwd")
    assert out.returncode == 2 and "--preset takes a preset name" in out.stderr


def test_a_schema_error_does_not_hide_argument_problems(tmp_path: Path) -> None:
    cfg = write(tmp_path, "b.yaml", "launch:\n  bogus: 1\nargs:\n  model: a\n  lerning_rate: 1\n")
    out = sftctl(tmp_path, "validate", str(cfg), "--json")
    ids = [p["id"] for p in json.loads(out.stdout)[str(cfg)]]
    assert out.returncode == 1 and ids == ["C001", "A001"], ids


def test_args_not_a_mapping_has_no_follow_on_problem(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", "args: [1, 2]\n")
    out = sftctl(tmp_path, "validate", str(cfg), "--json")
    assert [p["id"] for p in json.loads(out.stdout)[str(cfg)]] == ["C003"]


@pytest.mark.parametrize("where", ["/proc/nope.sh", "."])
def test_render_output_errors_are_usage_errors(tmp_path: Path, where: str) -> None:
    out = sftctl(tmp_path, "render", "cpu-smoke", "-o", where)
    assert out.returncode == 2 and "cannot write it" in out.stderr and "internal error" not in out.stderr


def test_d11_two_in_place_runs_are_told_apart_in_runs(tmp_path: Path) -> None:
    """Two add_version: false runs share one folder; their manifests (named as sftctl names
    them, the second with its run id) show as two rows with their ids."""
    out_dir = tmp_path / "output"
    out_dir.mkdir()
    for name, run_id, started in (
        ("sftctl-manifest.json", "20261130-010101-111", "2026-11-30T01:01:01+00:00"),
        ("sftctl-manifest-20261130-020202-222.json", "20261130-020202-222", "2026-11-30T02:02:02+00:00"),
    ):
        doc = {"run_id": run_id, "run_dir": str(out_dir), "status": "succeeded", "started_at": started}
        (out_dir / name).write_text(json.dumps(doc))
    table = sftctl(tmp_path, "runs", str(out_dir))
    assert table.returncode == 0, table.stderr
    assert "20261130-010101-111" in table.stdout and "20261130-020202-222" in table.stdout


def test_version_short_help_and_completion(tmp_path: Path) -> None:
    from sftctl import __version__

    assert sftctl(tmp_path, "--version").stdout.strip() == f"sftctl {__version__}"
    short = sftctl(tmp_path, "-h")
    assert short.returncode == 0 and "--install-completion" in short.stdout
    assert sftctl(tmp_path, "render", "-h").returncode == 0
