"""The examples users copy from stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from sftctl.cli import app

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = cli.invoke(app, ["validate", str(path)])
    assert out.exit_code == 0, out.output
    assert cli.invoke(app, ["render", str(path), "--format", "json"]).exit_code == 0


def test_the_cpu_example_finds_its_data_on_this_host(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = cli.invoke(app, ["validate", "--host", str(REPO / "examples" / "cpu-lora-own-data.yaml")])
    assert out.exit_code == 0, out.output


def test_a_missing_local_dataset_is_found_before_launch(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ./data/train.jsonl does not exist here
    out = cli.invoke(app, ["validate", "--host", str(REPO / "examples" / "my-zero2-run.yaml")])
    assert out.exit_code == 1
    assert "local dataset './data/train.jsonl' does not exist" in out.output
