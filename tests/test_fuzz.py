"""Fuzzing what users type (derandomized Hypothesis: fixed seed, bounded examples, no deadline).

- Random --set items and random config files through validate, render and show end in exit
  0, 1 or 2, never in an unexpected exception (which the console script turns into 70).
- Every rendered sh script, run by bash with a stand-in `swift` (a process-boundary double
  that prints its argv and environment as JSON), runs exactly `render --format json`'s argv
  with its env and unset.
- Every swift-yaml rendering parses back (as ms-swift's PyYAML reads it) to the same arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sftctl.cli import app

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ARGS = [
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
    "tuner_type", "train_type", "dataset", "model", "deepspeed", "attn_impl", "packing", "system",
    "lora_rank", "target_modules", "max_length", "save_total_limit", "eval_strategy", "use_cpu",
    "output_dir", "report_to", "torch_dtype", "warmup_ratio", "add_version", "lerning_rate", "no_cuda",
]  # fmt: skip
KEYS = st.one_of(
    st.sampled_from(ARGS),
    st.sampled_from(["launch.gpus", "launch.nproc_per_node", "launch.master_port", "launch.launcher"]),
    st.from_regex(r"env\.[A-Z][A-Z0-9_]{0,12}", fullmatch=True),
    st.text(max_size=12),
)
SCALARS = st.one_of(
    st.text(max_size=24),
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "~", "", "1e-4", "0-3", "[a, b]", "{k: v}", "--x", "&a [*a]"]),
)
SETS = st.lists(st.builds(lambda k, v: f"{k}={v}", KEYS, SCALARS), max_size=4)
RUNNER = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "SFTCTL_SWIFT_VERSION": "4"})


def invoke(*argv: str) -> Any:
    result = RUNNER.invoke(app, list(argv))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"sftctl {argv!r} raised {result.exception!r}") from result.exception
    assert result.exit_code in (0, 1, 2), (argv, result.exit_code, result.output[-2000:])
    return result


@FUZZ
@given(sets=SETS, target=st.sampled_from(["cpu-smoke", "zero2-qwen3-8b", "lora-7b"]))
def test_random_overrides_never_crash(sets: list[str], target: str) -> None:
    flags = [f for item in sets for f in ("--set", item)]
    for command in (["validate"], ["render", "--format", "json"], ["show"]):
        invoke(*command, target, *flags)


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(), st.text(max_size=16)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
CONFIGS = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "extends": st.sampled_from(["cpu-smoke", "nope", "../x.yaml", ""]),
            "launch": YAML_VALUES,
            "env": YAML_VALUES,
            "args": st.one_of(YAML_VALUES, st.dictionaries(st.sampled_from(ARGS), YAML_VALUES, max_size=5)),
            "swift_version": st.one_of(st.integers(0, 9), st.text(max_size=4)),
        },
    ).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.text(max_size=200),
)


@FUZZ
@given(text=CONFIGS)
def test_random_config_files_never_crash(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "fuzz.yaml"
    cfg.write_text(text, encoding="utf-8", errors="surrogatepass")
    for command in (["validate"], ["render"], ["show"]):
        invoke(*command, str(cfg))


# A stand-in for ms-swift's launcher at the process boundary: what bash would exec.
STAND_IN_SWIFT = """#!/usr/bin/env python3
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}))
"""
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
RENDERABLE = st.lists(
    st.one_of(
        st.builds(lambda v: f"system={v}", SAFE_TEXT),
        st.builds(lambda v: f"output_dir=./out/{v}", SAFE_TEXT.filter(lambda t: not t.startswith("-"))),
        st.builds(lambda v: f"env.FUZZ_VALUE={v}", SAFE_TEXT),
        st.builds(lambda v: f"learning_rate={v}", st.sampled_from(["1e-4", "0.0002", "3e-05", "1"])),
        st.builds(lambda v: f"launch.gpus={v}", st.sampled_from(["", "0", "0-3", "1,2"])),
    ),
    max_size=4,
)


@pytest.fixture(scope="module")
def stand_in_swift_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stand-in-swift-bin")
    exe = folder / "swift"
    exe.write_text(STAND_IN_SWIFT)
    exe.chmod(0o755)
    return folder


@FUZZ
@given(sets=RENDERABLE)
def test_the_script_runs_exactly_the_json_argv(stand_in_swift_bin: Path, sets: list[str]) -> None:
    flags = [f for item in sets for f in ("--set", item)]
    as_json = invoke("render", "cpu-smoke", "--format", "json", *flags)
    if as_json.exit_code != 0:
        return  # refused: nothing to compare (validate says why)
    doc = json.loads(as_json.stdout)
    script = invoke("render", "cpu-smoke", *flags).stdout
    env = {"PATH": f"{stand_in_swift_bin}{os.pathsep}/usr/bin:/bin", "NPROC_PER_NODE": "7", "NNODES": "3"}
    ran = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert ["swift", *seen["argv"]] == doc["argv"]
    for name, value in doc["env"].items():
        assert seen["env"][name] == value
    for name in doc["unset"]:
        assert name not in seen["env"]


def _tokens(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return ["true" if v is True else "false" if v is False else str(v) for v in items]


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


@FUZZ
@given(sets=RENDERABLE)
def test_swift_yaml_parses_back_to_the_same_arguments(sets: list[str]) -> None:
    flags = [f for item in sets for f in ("--set", item)]
    rendered = invoke("render", "cpu-smoke", "--format", "swift-yaml", *flags)
    if rendered.exit_code != 0:
        return
    doc = yaml.safe_load(rendered.stdout)  # ms-swift reads its config with PyYAML
    argv = json.loads(invoke("render", "cpu-smoke", "--format", "json", *flags).stdout)["argv"]
    flags_in_argv = {tok[2:] for tok in argv if tok.startswith("--")}
    assert set(doc) == flags_in_argv
    for name, value in doc.items():
        i = argv.index(f"--{name}")
        after = argv[i + 1 : i + 1 + len(_tokens(value))]
        if name in ("model", "dataset"):
            continue  # builtin: refs become cache paths in argv, stay refs in the YAML
        assert all(_same(a, b) for a, b in zip(_tokens(value), after, strict=True)), (name, value, after)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
# Field names sftctl reads from a manifest, with random values (no real pid can match a
# recorded start time, so nothing is ever signalled).
MANIFESTS = st.one_of(
    st.binary(max_size=64),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            k: JSON_VALUES
            for k in (
                "status",
                "run_id",
                "run_dir",
                "config_yaml",
                "moved_to",
                "manifest",
                "started_at",
                "argv",
                "env",
            )
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(content=MANIFESTS, command=st.sampled_from(["show", "runs", "resume", "stop"]))
def test_random_manifests_never_crash(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, command: str
) -> None:
    out_dir = tmp_path_factory.mktemp("fuzz-run")
    run_dir = out_dir / "v0-20261130-000000"
    run_dir.mkdir()
    (run_dir / "sftctl-manifest.json").write_bytes(content)
    invoke(command, str(out_dir if command == "runs" else run_dir))
