"""Run records: which folder is this run's, several runs in one output_dir, and
`sftctl stop` never touching a process that merely reuses a recorded pid."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from sftctl.cli import app
from sftctl.config.resolve import Overrides, resolve
from sftctl.runtime.record import RunRecord, list_runs, read_manifest
from sftctl.runtime.supervise import proc_ref


def _record(output_dir: Path, run_id: str, in_place: bool = False) -> RunRecord:
    rec = RunRecord.create(output_dir, {"target": run_id, "status": "running"}, in_place, run_id=run_id)
    rec.log.write_text(f"output of {run_id}\n")
    return rec


def test_each_run_takes_the_folder_its_own_output_names(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = _record(out, "a"), _record(out, "b")
    (out / "v0-20261129-100000").mkdir()
    (out / "v1-20261129-100001").mkdir()
    # b's ms-swift announces first, and announces the newer folder.
    b.announce(f"[INFO:swift] output_dir: {out / 'v1-20261129-100001'}")
    a.announce("[INFO:swift] something else")
    a.announce(f"[INFO:swift] output_dir: {out / 'v0-20261129-100000'}")
    assert a.run_dir == out / "v0-20261129-100000" and b.run_dir == out / "v1-20261129-100001"
    assert (a.run_dir / "sftctl.log").read_text() == "output of a\n"
    assert (b.run_dir / "sftctl.log").read_text() == "output of b\n"
    assert sorted(r["target"] for r in list_runs(out)) == ["a", "b"]
    assert read_manifest(a.staging)[1]["target"] == "a"


def test_a_reused_folder_keeps_both_records(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _record(out, "first", in_place=True)
    first.announce(f"[INFO:swift] output_dir: {out}")
    (out / "logging.jsonl").write_text('{"loss": 1.0}\n')
    second = _record(out, "second", in_place=True)
    assert second.jsonl_offset == len('{"loss": 1.0}\n')  # its progress skips the old rows
    second.announce(f"[INFO:swift] output_dir: {out}")
    assert (out / "sftctl.log").read_text() == "output of first\n"
    assert (out / "sftctl-second.log").read_text() == "output of second\n"
    assert json.loads((out / "sftctl-manifest.json").read_text())["target"] == "first"
    assert sorted(r["target"] for r in list_runs(out)) == ["first", "second"]
    assert read_manifest(second.staging)[1]["target"] == "second"


def test_stop_leaves_a_process_that_reuses_a_recorded_pid_alone(tmp_path: Path, cli: CliRunner) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ref = proc_ref(bystander.pid)
        assert ref is not None
        staging = tmp_path / "out" / ".sftctl" / "x"
        staging.mkdir(parents=True)
        (staging / "manifest.json").write_text(
            json.dumps(
                {
                    "status": "running",
                    "supervisor_pid": 999999999,
                    "supervisor_start": 1,
                    "pid": bystander.pid,
                    "leader_start": ref.start - 1,
                }
            )
        )  # same pid, another process
        out = cli.invoke(app, ["stop", str(staging)])
        assert out.exit_code == 0
        assert "neither the supervisor nor any process of this run is running" in out.output
        assert bystander.poll() is None, "an unrelated process was killed"
        assert (
            json.loads((staging / "manifest.json").read_text())["status"] == "lost"
        )  # nothing of the run was running
    finally:
        bystander.kill()
        bystander.wait()


def test_env_names_and_secrets(write: Callable[[str, str], Path], cli: CliRunner) -> None:
    ok = write("ok.yaml", "extends: cpu-smoke\nenv: {TOKENIZERS_PARALLELISM: 'false', NCCL_DEBUG: INFO}\n")
    assert cli.invoke(app, ["validate", str(ok)]).exit_code == 0
    secret = write("s.yaml", "extends: cpu-smoke\nenv: {HF_TOKEN: hf_abc}\n")
    out = cli.invoke(app, ["validate", str(secret)])
    assert out.exit_code == 1 and "env.HF_TOKEN: looks like a secret" in out.output
    bad = write("b.yaml", "extends: cpu-smoke\nenv: {'A B; touch x #': v}\n")
    out = cli.invoke(app, ["validate", str(bad)])
    assert out.exit_code == 1 and "is not an environment variable name" in out.output


def test_several_nodes_need_the_address_where_they_meet(cli: CliRunner) -> None:
    out = cli.invoke(app, ["validate", "cpu-smoke", "--set", "launch.nnodes=2"])
    assert out.exit_code == 1 and "launch.master_addr: 2 nodes need the address of node 0" in out.output


def test_set_in_the_other_spelling_replaces_the_presets() -> None:
    r = resolve("cpu-smoke", Overrides(sets=("train_type=lora",), swift_version="4"))
    assert r.args["tuner_type"] == "lora" and "train_type" not in r.args
    r = resolve("zero2-qwen3-8b", Overrides(sets=("tuner_type=lora",), swift_version="3"))
    assert r.args["train_type"] == "lora" and "tuner_type" not in r.args


def test_a_folder_named_before_it_exists_is_taken_once_it_does(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rec = _record(out, "early")
    folder = out / "v0-20261129-100000"
    rec.announce(f"[INFO:swift] output_dir: {folder}")  # printed before the mkdir
    assert rec.discover() is None and rec.log == rec.staging / "sftctl.log"
    folder.mkdir(parents=True)
    assert rec.discover() == folder
    assert (folder / "sftctl.log").read_text() == "output of early\n"
