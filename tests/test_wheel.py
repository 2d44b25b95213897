"""The wheel carries the presets and the catalogs: installed outside the checkout,
`sftctl presets` lists exactly the files in configs/ and renders with the catalogs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env


@pytest.mark.timeout(600)
def test_wheel_ships_presets_and_catalogs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # Build from a copy of the tracked files: a build writes build/ and *.egg-info into
    # its source folder, and tests leave the checkout as they found it.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in tracked.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("sftctl-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = clean_env(SFTCTL_PRESETS=str(tmp_path / "none"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def sftctl(*args: str) -> str:
        out = subprocess.run(
            [str(venv / "bin" / "sftctl"), *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = json.loads(sftctl("presets", "--json"))
    assert sorted(p["name"] for p in listed) == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    assert all(p["location"].startswith("sftctl/configs/") for p in listed)
    for major in ("3", "4"):
        doc = json.loads(sftctl("render", "zero2-qwen3-8b", "--format", "json", "--swift-version", major))
        assert ("--train_type" if major == "3" else "--tuner_type") in doc["argv"]
    shipped = {p.name for p in (REPO / "src/sftctl/swift/data").glob("*.json")}
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sftctl.swift.data as d, os; print(os.path.dirname(d.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=elsewhere,
    ).stdout.strip()
    assert str(REPO) not in site
    assert {p.name for p in Path(site).glob("*.json")} == shipped
