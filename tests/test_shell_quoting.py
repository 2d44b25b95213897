"""The rendered script runs exactly the JSON argv, whatever the values contain."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import clean_env, sftctl_exe

NASTY = {
    "system": "You are 'helpful'; say \"hi\" & don't $(touch {canary}) `touch {canary}` $HOME",
    "model_author": ["a b", "c\nd", "中文 作者"],
    "model_name": ["机器人 $USER", "semi;colon|pipe>redir"],
    "output_dir": "out dir/with spaces/{{x}}",
}


def test_bash_runs_exactly_the_json_argv(tmp_path: Path) -> None:
    canary = tmp_path / "executed"
    values = {k: (v.format(canary=canary) if isinstance(v, str) else v) for k, v in NASTY.items()}
    cfg = {
        "launch": {"gpus": "0"},
        "env": {"NOTE": f"a 'quoted' $(touch {canary}) value"},
        "args": {"model": "org/m", "train_type": "lora", "dataset": "org/d", **values},
    }
    path = tmp_path / "nasty.yaml"
    path.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")  # JSON is YAML

    env = clean_env(SFTCTL_SWIFT_VERSION="4")
    as_json = json.loads(
        subprocess.run(
            [*sftctl_exe(), "render", str(path), "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    script = subprocess.run(
        [*sftctl_exe(), "render", str(path)], env=env, capture_output=True, text=True, check=True
    ).stdout

    # A fake `swift` first on PATH prints the argv and environment it was given.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "swift"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        'print(json.dumps({"argv": sys.argv[1:], "note": os.environ.get("NOTE"),'
        ' "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}))\n'
    )
    fake.chmod(0o755)
    (tmp_path / "run.sh").write_text(script, encoding="utf-8")
    out = subprocess.run(
        ["bash", str(tmp_path / "run.sh")],
        capture_output=True,
        text=True,
        env={**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"},
        check=True,
    )
    seen = json.loads(out.stdout)

    assert ["swift", *seen["argv"]] == as_json["argv"]
    assert seen["note"] == cfg["env"]["NOTE"] == as_json["env"]["NOTE"]
    assert seen["cvd"] == "0"
    assert not canary.exists(), "a value was executed by the shell"
    assert as_json["argv"][as_json["argv"].index("--system") + 1] == values["system"]
    i = as_json["argv"].index("--model_author")
    assert as_json["argv"][i + 1 : i + 4] == values["model_author"]
