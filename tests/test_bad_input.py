"""Bad input through the real console script: every mistake a user can make in a config
or on the command line ends in exit 1 (2 for usage errors) with `location: message
(fix: hint)` that names the key and the bad value, never a traceback, and never echoes
a secret back.

Most cases are checked with one `sftctl validate a.yaml b.yaml ...` call (validate
prints `TARGET: location: message` per problem), which keeps this file fast.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import sftctl_exe

pytestmark = pytest.mark.timeout(120)

MINIMAL_ARGS = "args:\n  model: Qwen/Qwen3-8B\n  train_type: full\n  dataset: org/data\n"
ONE_GPU = 'launch:\n  gpus: "0"\n'
VALID = MINIMAL_ARGS + ONE_GPU

SECRET_TOKEN = "sk-abc123SECRETvalue"
SECRET_ENV = "x-SECRET-wandb-9f8e7d"


@dataclass
class Result:
    rc: int
    out: str  # stdout and stderr together

    def lines_for(self, target: str) -> list[str]:
        """The problems validate printed for ``target``, without the ``TARGET: `` prefix
        (so a file's own name never satisfies a check)."""
        prefix = f"{target}: "
        return [line[len(prefix) :] for line in self.out.splitlines() if line.startswith(prefix)]


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_VISIBLE_DEVICES", "SFTCTL_SWIFT_VERSION", "FORCE_COLOR")
    }
    env.update(
        SFTCTL_SWIFT_VERSION="4",
        NO_COLOR="1",
        COLUMNS="120",
        SFTCTL_PRESETS=str(home / "no-user-presets"),
    )
    # `swift` next to this interpreter is what `run` would launch; --host looks it up on PATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def sftctl(args: Sequence[str], cwd: Path, **env_extra: str) -> Result:
    env = _env(cwd)
    env.update(env_extra)
    proc = subprocess.run(
        [*sftctl_exe(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    return Result(proc.returncode, proc.stdout + proc.stderr)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def fixes(text: str) -> list[str]:
    """The hints of every problem line: the text inside `(fix: ...)` at the line end."""
    return re.findall(r"\(fix: (.*)\)\s*$", text, flags=re.M)


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The commands `sftctl --help` lists (hints may only point at these)."""
    res = sftctl(["--help"], tmp_path_factory.mktemp("help"))
    assert res.rc == 0, res.out
    block = res.out.split("Commands:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^\s{2,}([a-z][a-z-]*)\s", block, flags=re.M)}


@pytest.fixture(scope="module")
def preset_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    res = sftctl(["presets", "--json"], tmp_path_factory.mktemp("presets"))
    assert res.rc == 0, res.out
    return {p["name"] for p in json.loads(res.out)}


def assert_sound(res: Result, commands: set[str], preset_names: set[str]) -> None:
    """Checks every output must pass: no traceback, hints point at things that exist."""
    assert "Traceback" not in res.out, res.out
    for hint in fixes(res.out):
        for cmd in re.findall(r"sftctl ([a-z][a-z-]*)", hint):
            assert cmd in commands, f"hint points at a command that does not exist: {hint!r}"
        for name in re.findall(r"extends: ([\w.-]+)", hint):
            assert name in preset_names or name.endswith((".yaml", ".yml")), (
                f"hint points at a preset that does not exist: {hint!r}"
            )


def assert_problem(lines: Sequence[str] | str, *needles: str, fix: Sequence[str] = ()) -> None:
    """One problem line holds every needle and a `(fix: ...)` hint holding every `fix` word."""
    text = "\n".join(lines) if not isinstance(lines, str) else lines
    assert text.strip(), "no problem reported"
    assert "(fix: " in text, f"no fix hint in:\n{text}"
    for needle in needles:
        assert needle in text, f"{needle!r} missing from:\n{text}"
    hints = " ".join(fixes(text))
    for word in fix:
        assert word in hints, f"fix hint lacks {word!r}: {hints!r}\nfull output:\n{text}"


# ---------------------------------------------------------------------------------------
# File-based cases checked with one `validate` call: (file name, YAML text, needles, fix words)

CASES: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    # malformed YAML: file:line:col
    ("malformed.yaml", "args:\n  model: [a\n  x: 1\n", ("malformed.yaml:3:", "YAML"), ()),
    ("blank.yaml", "", ("empty",), ()),
    ("top_seq.yaml", "- a\n- b\n", ("mapping", "list"), ()),
    ("top_scalar.yaml", "hello\n", ("mapping",), ()),
    ("section_seq.yaml", "args: [a, b]\n" + ONE_GPU, ("args", "list"), ()),
    # unknown or misspelled keys, each level
    ("unknown_top.yaml", MINIMAL_ARGS + 'lanch:\n  gpus: "0"\n', ("lanch",), ("launch",)),
    (
        "unknown_launch.yaml",
        MINIMAL_ARGS + ONE_GPU + "  nproc_per_nodes: 1\n",
        ("launch.nproc_per_nodes",),
        ("nproc_per_node",),
    ),
    (
        "unknown_arg.yaml",
        MINIMAL_ARGS + "  lerning_rate: 1e-4\n" + ONE_GPU,
        ("args.lerning_rate",),
        ("learning_rate",),
    ),
    ("unknown_arg_no_near.yaml", MINIMAL_ARGS + "  zqxwvk: 1\n" + ONE_GPU, ("args.zqxwvk",), ()),
    # duplicate keys
    (
        "dup_top.yaml",
        VALID + 'launch:\n  gpus: "1"\n',
        ("dup_top.yaml:7:", "duplicate", "launch"),
        (),
    ),
    (
        "dup_args.yaml",
        MINIMAL_ARGS + "  learning_rate: 1e-4\n  learning_rate: 2e-4\n" + ONE_GPU,
        ("dup_args.yaml:6:", "duplicate", "learning_rate"),
        (),
    ),
    # wrong types
    (
        "type_lr.yaml",
        MINIMAL_ARGS + "  learning_rate: abc\n" + ONE_GPU,
        ("args.learning_rate", "abc"),
        (),
    ),
    (
        "type_epochs.yaml",
        MINIMAL_ARGS + "  num_train_epochs: [1]\n" + ONE_GPU,
        ("args.num_train_epochs", "[1]"),
        (),
    ),
    (
        "type_nproc.yaml",
        MINIMAL_ARGS + ONE_GPU + "  nproc_per_node: two\n",
        ("launch.nproc_per_node", "two"),
        (),
    ),
    (
        "type_launcher.yaml",
        MINIMAL_ARGS + ONE_GPU + "  launcher: mpirun\n",
        ("launch.launcher", "mpirun"),
        (),
    ),
    # values outside ms-swift's choices
    (
        "choice_dtype.yaml",
        MINIMAL_ARGS + "  torch_dtype: float8\n" + ONE_GPU,
        ("args.torch_dtype", "float8"),
        ("bfloat16",),
    ),
    (
        "choice_deepspeed.yaml",
        MINIMAL_ARGS + "  deepspeed: zero5\n" + ONE_GPU,
        ("args.deepspeed", "zero5"),
        ("zero2",),
    ),
    # the user wrote train_type: the problem must name train_type, not only its 4.x spelling
    (
        "choice_train_type.yaml",
        VALID.replace("train_type: full", "train_type: lroa"),
        ("args.train_type", "lroa"),
        ("lora",),
    ),
    # an abbreviation ms-swift would silently expand
    ("abbrev.yaml", MINIMAL_ARGS + "  lora_r: 16\n" + ONE_GPU, ("args.lora_r",), ("lora_rank",)),
    # secrets (value must never be echoed; checked below)
    (
        "secret_arg.yaml",
        MINIMAL_ARGS + f"  swanlab_token: {SECRET_TOKEN}\n" + ONE_GPU,
        ("args.swanlab_token",),
        ("SWANLAB_API_KEY",),
    ),
    (
        "secret_env.yaml",
        VALID + f"env:\n  WANDB_API_KEY: {SECRET_ENV}\n",
        ("env.WANDB_API_KEY",),
        ("WANDB_API_KEY",),
    ),
    # GPU layout
    (
        "layout_more_procs.yaml",
        MINIMAL_ARGS + 'launch:\n  gpus: "0,1"\n  nproc_per_node: 3\n',
        ("launch.nproc_per_node", "3", "0,1"),
        ("2",),
    ),
    (
        "layout_not_divisible.yaml",
        MINIMAL_ARGS + 'launch:\n  gpus: "0,1,2,3"\n  nproc_per_node: 3\n',
        ("launch.nproc_per_node", "3", "4 GPUs"),
        ("2",),
    ),
    (
        "layout_zero2_device_map.yaml",
        MINIMAL_ARGS + '  deepspeed: zero2\nlaunch:\n  gpus: "0,1,2,3,4,5,6,7"\n  nproc_per_node: 4\n',
        ("launch.nproc_per_node", "device_map", "deepspeed"),
        ("8",),
    ),
    (
        "layout_dup_ids.yaml",
        MINIMAL_ARGS + 'launch:\n  gpus: "0,0,1"\n',
        ("launch.gpus", "twice", "0"),
        (),
    ),
    ("layout_negative.yaml", MINIMAL_ARGS + 'launch:\n  gpus: "-1"\n', ("launch.gpus", "-1"), ()),
    (
        "layout_no_gpu.yaml",
        MINIMAL_ARGS + 'launch:\n  gpus: ""\n  nproc_per_node: 2\n',
        ("launch.nproc_per_node", "2"),
        ("use_cpu",),
    ),
    # a GPU id that is not a plain integer must not be read as another number (1_0 -> 10)
    (
        "layout_underscore_id.yaml",
        MINIMAL_ARGS + 'launch:\n  gpus: "1_0"\n',
        ("launch.gpus", "1_0"),
        (),
    ),
    # extends
    (
        "cyc/a.yaml",
        "extends: b.yaml\n" + MINIMAL_ARGS,
        ("extends", "cycle", "a.yaml", "b.yaml"),
        (),
    ),
    (
        "parent_missing_file.yaml",
        "extends: ./nothere.yaml\n" + VALID,
        ("extends", "nothere.yaml"),
        (),
    ),
    (
        "parent_unknown_preset.yaml",
        "extends: nothere-preset\n" + VALID,
        ("extends", "nothere-preset"),
        (),
    ),
]
EXTRA_FILES = {"cyc/b.yaml": "extends: a.yaml\n" + ONE_GPU}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Result]]:
    """Validate every case in one call; per file if that call crashed, so blame is precise."""
    folder = tmp_path_factory.mktemp("bad")
    for name, text, _, _ in CASES:
        write(folder, name, text)
    for name, text in EXTRA_FILES.items():
        write(folder, name, text)
    names = [c[0] for c in CASES]
    res = sftctl(["validate", *names], folder)
    if res.rc not in (0, 1) or "Traceback" in res.out:
        # blame the right file: one call each
        per_file = {n: sftctl(["validate", n], folder) for n in names}
        return folder, {n: Result(r.rc, "\n".join(r.lines_for(n)) or r.out) for n, r in per_file.items()} | {
            "": res
        }
    return folder, {n: Result(res.rc, "\n".join(res.lines_for(n))) for n in names} | {"": res}


@pytest.mark.parametrize(
    "name,needles,fix_words",
    [pytest.param(c[0], c[2], c[3], id=c[0].removesuffix(".yaml")) for c in CASES],
)
def test_bad_config_is_reported(
    batch: tuple[Path, dict[str, Result]],
    commands: set[str],
    preset_names: set[str],
    name: str,
    needles: tuple[str, ...],
    fix_words: tuple[str, ...],
) -> None:
    _, results = batch
    res = results[name]
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, f"exit {res.rc}:\n{res.out}"
    assert res.out != "ok", f"{name} passed validation"
    assert_problem(res.out, *needles, fix=fix_words)


def test_batch_output_never_echoes_secrets(batch: tuple[Path, dict[str, Result]]) -> None:
    whole = batch[1][""].out
    assert "Traceback" not in whole
    assert SECRET_TOKEN not in whole
    assert SECRET_ENV not in whole


# ---------------------------------------------------------------------------------------
# Cases that need their own call


def test_valid_config_passes(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", VALID)
    res = sftctl(["validate", "ok.yaml", "lora-7b", "--model", "Qwen/Qwen2.5-7B-Instruct"], tmp_path)
    assert res.rc == 0, res.out
    assert "ok.yaml: ok" in res.out and "lora-7b: ok" in res.out
    assert "Traceback" not in res.out


def test_valid_config_renders(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", VALID)
    res = sftctl(["render", "ok.yaml", "--format", "json"], tmp_path)
    assert res.rc == 0, res.out
    data = json.loads(res.out)
    assert data["argv"][:2] == ["swift", "sft"]
    assert data["env"]["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe not utf-8\n", b"args:\n  model: \xe9\n"], ids=["bom-utf16", "latin1"]
)
def test_file_that_is_not_utf8(
    tmp_path: Path, commands: set[str], preset_names: set[str], raw: bytes
) -> None:
    (tmp_path / "enc.yaml").write_bytes(raw)
    res = sftctl(["validate", "enc.yaml"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.out, "enc.yaml", "UTF-8")


def test_mapping_key_that_is_a_list(tmp_path: Path, commands: set[str], preset_names: set[str]) -> None:
    write(tmp_path, "complex_key.yaml", MINIMAL_ARGS + "  ? [a]\n  : 1\n" + ONE_GPU)
    res = sftctl(["validate", "complex_key.yaml"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.out, "complex_key.yaml:5:")


def test_bad_swift_version_in_config_is_a_config_problem(
    tmp_path: Path, commands: set[str], preset_names: set[str]
) -> None:
    """A config's swift_version that is no version at all is reported like any bad value,
    per file (the other targets still get checked), even when the environment picks 4."""
    write(tmp_path, "sv.yaml", "swift_version: abc\n" + VALID)
    write(tmp_path, "ok.yaml", VALID)
    res = sftctl(["validate", "sv.yaml", "ok.yaml"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.lines_for("sv.yaml"), "swift_version", "abc")
    assert "ok.yaml: ok" in res.out


def test_shape_error_hint_works_on_the_broken_config(
    tmp_path: Path, commands: set[str], preset_names: set[str]
) -> None:
    """A hint must not send the user to a command that fails on the same config. A shape
    error (a word where a number goes) stops `show` and `render` as well, so the hint
    names neither: it says what to write instead, in the key's own words."""
    write(tmp_path, "np.yaml", VALID + "  nproc_per_node: two\n")
    res = sftctl(["validate", "np.yaml"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.out, "launch.nproc_per_node", "two")
    hint = " ".join(fixes(res.out))
    assert re.search(r"\bnproc_per_node: \d+\b", hint), hint
    for cmd in ("show", "render"):
        other = sftctl([cmd, "np.yaml"], tmp_path)
        assert_sound(other, commands, preset_names)
        assert other.rc == 1, f"sftctl {cmd} accepts what validate refuses:\n{other.out}"
        assert_problem(other.out, "launch.nproc_per_node", "two")
        assert f"sftctl {cmd}" not in hint, f"hint {hint!r} points at 'sftctl {cmd}', which fails too"


def test_gpu_range_is_not_misread(tmp_path: Path, commands: set[str], preset_names: set[str]) -> None:
    """`gpus: 0-7` is a range (launch.gpus documents `0-3`): GPUs 0..7, never GPU -7.
    A range that runs backwards is rejected, naming it as written."""
    write(tmp_path, "range.yaml", MINIMAL_ARGS + "launch:\n  gpus: 0-7\n")
    res = sftctl(["render", "range.yaml", "--format", "json"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 0, res.out
    assert json.loads(res.out)["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    write(tmp_path, "backwards.yaml", MINIMAL_ARGS + "launch:\n  gpus: 7-0\n")
    res = sftctl(["render", "backwards.yaml", "--format", "json"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.out, "launch.gpus", "7-0")
    assert "CUDA_VISIBLE_DEVICES" not in res.out, res.out


@pytest.mark.parametrize(
    "sets,needles,fix_words",
    [
        (["--set", "foo"], ("--set", "foo", "KEY=VALUE"), ()),
        (["--set", "lerning_rate=1"], ("lerning_rate",), ("learning_rate",)),
        (["--set", "learning_rate=abc"], ("learning_rate", "abc"), ()),
        (["--set", "bogus.section=1"], ("bogus",), ()),
        (["--model", ""], ("model",), ("--model",)),
    ],
    ids=["no-equals", "misspelled", "wrong-type", "unknown-section", "empty-model"],
)
def test_bad_command_line_override(
    tmp_path: Path,
    commands: set[str],
    preset_names: set[str],
    sets: list[str],
    needles: tuple[str, ...],
    fix_words: tuple[str, ...],
) -> None:
    write(tmp_path, "ok.yaml", VALID)
    res = sftctl(["validate", "ok.yaml", *sets], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.out, *needles, fix=fix_words)


# ---------------------------------------------------------------------------------------
# render


def test_render_unknown_preset_lists_near_names(
    tmp_path: Path, commands: set[str], preset_names: set[str]
) -> None:
    res = sftctl(["render", "zero2-qwen3-8"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.out, "zero2-qwen3-8", fix=("zero2-qwen3-8b",))


def test_render_preset_without_model(tmp_path: Path, commands: set[str], preset_names: set[str]) -> None:
    res = sftctl(["render", "lora-7b"], tmp_path)
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.out, "args.model", "lora-7b", fix=("--model",))


def test_render_refuses_secret_without_echoing_it(tmp_path: Path) -> None:
    write(
        tmp_path,
        "tok.yaml",
        MINIMAL_ARGS
        + f"  swanlab_token: {SECRET_TOKEN}\n"
        + ONE_GPU
        + f"env:\n  WANDB_API_KEY: {SECRET_ENV}\n",
    )
    res = sftctl(["render", "tok.yaml", "--format", "json"], tmp_path)
    assert res.rc == 1, res.out
    assert "Traceback" not in res.out
    assert SECRET_TOKEN not in res.out and SECRET_ENV not in res.out
    assert_problem(res.out, "args.swanlab_token", fix=("SWANLAB_API_KEY",))
    assert_problem(res.out, "env.WANDB_API_KEY", fix=("WANDB_API_KEY",))


def test_render_layout_violation(tmp_path: Path) -> None:
    write(tmp_path, "l.yaml", MINIMAL_ARGS + 'launch:\n  gpus: "0,1"\n  nproc_per_node: 3\n')
    res = sftctl(["render", "l.yaml"], tmp_path)
    assert res.rc == 1, res.out
    assert "Traceback" not in res.out
    assert "swift sft" not in res.out  # nothing rendered
    assert_problem(res.out, "launch.nproc_per_node", "3", fix=("2",))


def test_unsupported_swift_version_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", VALID)
    res = sftctl(["render", "ok.yaml", "--swift-version", "2"], tmp_path)
    assert res.rc == 2, res.out
    assert "Traceback" not in res.out
    assert "2.x" in res.out and "not supported" in res.out
    assert "(fix: " in res.out


def test_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", VALID)
    res = sftctl(["render", "ok.yaml", "--format", "xml"], tmp_path)
    assert res.rc == 2, res.out
    assert "Traceback" not in res.out
    assert "--format" in res.out and "xml" in res.out
    assert "(fix: " in res.out and "json" in res.out


# ---------------------------------------------------------------------------------------
# validate --host


def test_host_checks_local_paths_only(tmp_path: Path, commands: set[str], preset_names: set[str]) -> None:
    data = VALID.replace("dataset: org/data", "dataset: {}")
    write(tmp_path, "missing_file.yaml", data.format("./data/missing.jsonl"))
    write(tmp_path, "missing_sampled.yaml", data.format("'missing.jsonl#100'"))
    write(
        tmp_path,
        "missing_model.yaml",
        VALID.replace("Qwen/Qwen3-8B", "./models/none").replace("org/data", "org/name"),
    )
    write(tmp_path, "hub_only.yaml", data.format("org/name"))
    res = sftctl(
        [
            "validate",
            "--host",
            "missing_file.yaml",
            "missing_sampled.yaml",
            "missing_model.yaml",
            "hub_only.yaml",
        ],
        tmp_path,
    )
    assert_sound(res, commands, preset_names)
    assert res.rc == 1, res.out
    assert_problem(res.lines_for("missing_file.yaml"), "args.dataset", "./data/missing.jsonl")
    assert_problem(res.lines_for("missing_sampled.yaml"), "args.dataset", "missing.jsonl#100")
    assert_problem(res.lines_for("missing_model.yaml"), "args.model", "./models/none")
    # a hub id is not a local path: never reported as missing
    assert "org/name" not in "\n".join(res.lines_for("hub_only.yaml") + res.lines_for("missing_model.yaml"))
