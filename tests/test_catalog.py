"""The shipped argument catalogs: equal to the real ms-swift, and every difference
between 3.x and 4.x sorted into renamed, removed or new, with renames handled."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env
from typer.testing import CliRunner

from sftctl.cli import app
from sftctl.swift import catalog, dialect

DATA = REPO / "src" / "sftctl" / "swift" / "data"


@pytest.mark.swift
@pytest.mark.timeout(300)
def test_shipped_4x_catalog_equals_a_live_dump(tmp_path: Path) -> None:
    pytest.importorskip("swift", reason="ms-swift not installed")
    out = tmp_path / "live.json"
    subprocess.run(
        [sys.executable, "-m", "sftctl.swift.dump", str(out)],
        check=True,
        timeout=240,
        capture_output=True,
        env=clean_env(HF_HUB_OFFLINE="1", HOME=str(tmp_path)),
    )
    live = json.loads(out.read_text())
    shipped = json.loads((DATA / "swift4.json").read_text())
    assert live["swift_version"] == shipped["swift_version"] == "4.6.0"
    assert live == shipped


@pytest.mark.parametrize("major", [3, 4])
def test_every_flag_spells_its_argument(major: int) -> None:
    """Each catalog entry's flags are exactly what HfArgumentParser makes of the field
    name: `--name` first, its dashed form, and for a bool that defaults to True the
    `--no_name` / `--no-name` negations; no other spelling, no `--_`, no `---`."""
    raw = json.loads((DATA / f"swift{major}.json").read_text())["arguments"]
    assert len(raw) > 300
    for name, spec in raw.items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name), name
        dashed = name.replace("_", "-")
        expected = {f"--{name}", f"--{dashed}"}
        negatable = spec["type"] == "bool" and spec["default"] is True
        assert bool(spec.get("negatable")) is negatable, (name, spec)
        if negatable:
            expected |= {f"--no_{name}", f"--no-{dashed}"}
        flags = spec["flags"]
        assert flags[0] == f"--{name}" and len(flags) == len(set(flags)), (name, flags)
        assert set(flags) == expected, (name, flags)
        assert all(re.fullmatch(r"--[A-Za-z][A-Za-z0-9_-]*", f) for f in flags), (name, flags)


def test_every_difference_is_sorted() -> None:
    v3, v4 = set(catalog.load(3).arguments), set(catalog.load(4).arguments)
    diff = catalog.version_diff()
    renamed: dict[str, str] = diff["renamed"]
    assert v3 - v4 == set(renamed) | set(diff["removed"])
    assert v4 - v3 == set(renamed.values()) | set(diff["new"])
    assert not set(renamed) & set(diff["removed"])
    for old, instead in diff["superseded_by"].items():
        assert old in diff["removed"] and instead in v4


def test_dialect_handles_every_rename() -> None:
    assert catalog.version_diff()["renamed"] == dialect.RENAMED_3_TO_4


@pytest.mark.parametrize("old,new", sorted(dialect.RENAMED_3_TO_4.items()))
def test_each_rename_renders_in_the_target_spelling(
    old: str, new: str, cli: CliRunner, tmp_path: Path
) -> None:
    value = {"metric": "acc", "save_safetensors": "false", "train_type": "full"}[old]
    for written in (old, new):
        cfg = tmp_path / f"{written}.yaml"
        cfg.write_text(f"launch: {{gpus: '0'}}\nargs:\n  model: o/m\n  {written}: {value}\n")
        for major, spelled in (("3", old), ("4", new)):
            out = cli.invoke(app, ["render", str(cfg), "--format", "json", "--swift-version", major])
            assert out.exit_code == 0, out.output
            argv = json.loads(out.stdout)["argv"]
            assert argv[argv.index(f"--{spelled}") + 1] == value
            # Passed once, in the target major's spelling only: the other major's name
            # is not passed as well, in any form argparse reads (dashed, negated).
            other = new if spelled == old else old
            names = [a.removeprefix("--").replace("-", "_") for a in argv[2:] if a.startswith("--")]
            assert names.count(spelled) == 1, argv
            assert not {other, f"no_{other}"} & set(names), argv


def test_both_spellings_at_once_is_an_error(cli: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "both.yaml"
    cfg.write_text("args:\n  model: o/m\n  train_type: full\n  tuner_type: lora\n")
    out = cli.invoke(app, ["validate", str(cfg)])
    assert out.exit_code == 1
    assert "'tuner_type' and 'train_type' are the same argument" in out.output


def test_a_removed_3x_argument_says_what_to_use(cli: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "old.yaml"
    cfg.write_text("args:\n  model: o/m\n  no_cuda: true\n")
    out = cli.invoke(app, ["validate", str(cfg), "--swift-version", "4"])
    assert out.exit_code == 1
    assert "'no_cuda' was removed in ms-swift 4.x" in out.output and "use_cpu" in out.output
    assert cli.invoke(app, ["validate", str(cfg), "--swift-version", "3"]).exit_code == 0
