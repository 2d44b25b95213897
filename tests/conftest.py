"""Shared fixtures: an isolated user preset folder and cache, a CLI runner, config files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads or writes the real user's presets or cache, or the host's GPU leases."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SFTCTL_PRESETS", str(home / "presets"))
    monkeypatch.setenv("SFTCTL_LEASE_DIR", str(home / "leases"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("SFTCTL_SWIFT_VERSION", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield


@pytest.fixture
def cli() -> CliRunner:
    """Typer's runner with a fixed terminal width."""
    return CliRunner(env={"COLUMNS": "120", "TERM": "dumb"})


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a config file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write


def sftctl_exe() -> list[str]:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "sftctl"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("sftctl")
    return [found] if found else [sys.executable, "-m", "sftctl"]


def default_signals() -> None:
    """preexec_fn: start sftctl with default signal handling, as from a terminal.

    A shell that starts a job in the background (as CI may run the suite) sets SIGINT to
    ignored, the child inherits that, and sftctl, like nohup, keeps an ignored signal ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess of sftctl, without inherited GPU or version hints."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SFTCTL_SWIFT_VERSION", "CUDA_VISIBLE_DEVICES", "NPROC_PER_NODE", "NNODES")
    }
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


# --- Shared by the end-to-end files (tests/test_e2e_*.py): real ms-swift runs. ---


@pytest.fixture(scope="session")
def e2e_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SFTCTL_CACHE for every real run of the session: the tiny model is built once
    and DeepSpeed's ops compile once (cpu-smoke puts TORCH_EXTENSIONS_DIR under it).
    Opt-in: SFTCTL_E2E_CACHE names a folder kept between sessions (a CI cache)."""
    kept = os.environ.get("SFTCTL_E2E_CACHE")
    if kept:
        path = Path(kept).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("sftctl-cache")


def pause_hook(
    folder: Path,
    env: dict[str, str],
    *,
    after_step: int | None = None,
    marker: Path | None = None,
    step_delay: float = 0.0,
    pause_s: float = 600,
) -> dict[str, str]:
    """`env` with tests/procs/pause_hook.py installed as the `sitecustomize` of every
    Python process started with it (a folder first on PYTHONPATH). It acts only in
    ms-swift's training process: each training step sleeps `step_delay` s first, and once
    the checkpoint of global step `after_step` is written it creates `marker` and sleeps
    `pause_s` s, so a test can act at that point however fast the host trains."""
    if (after_step is None) != (marker is None):
        raise ValueError("after_step and marker go together")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "tests" / "procs" / "pause_hook.py", folder / "sitecustomize.py")
    settings = {
        "after_step": after_step,
        "marker": None if marker is None else str(marker),
        "step_delay": step_delay,
        "pause_s": pause_s,
    }
    (folder / "pause_hook.json").write_text(json.dumps(settings), encoding="utf-8")
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p)}


def hooked_processes(folder: Path) -> list[dict[str, object]]:
    """What pause_hook recorded in `folder`: one entry (pid, argv0, settings) per
    process in which it patched transformers' Trainer."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("patched-*.json"))]
