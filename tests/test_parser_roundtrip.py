"""Every shipped preset, rendered for ms-swift 4, parses with the real ms-swift 4.x parser.

Parse only, no training: the argparse level of ``HfArgumentParser([SftArguments])``
(``parse_known_args``), so no dataclass is built and no ``__post_init__`` runs (it may
try to download models). ``allow_abbrev`` is off, so a prefix like ``--lora_r`` stays in
the remainder instead of being silently expanded to ``--lora_rank``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from sftctl.assets import builtin_paths
from sftctl.cli import app
from sftctl.config.resolve import Overrides, resolve

pytestmark = pytest.mark.swift

# For presets that leave the model to the user (`model: <MODEL_ID>`).
SOME_MODEL = "Org/Some-Model-7B"
PLACEHOLDER_MESSAGE = "leaves model to you"


def _runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "120", "TERM": "dumb"})


def _builtin_presets() -> list[str]:
    result = _runner().invoke(app, ["presets", "--json"])
    assert result.exit_code == 0, result.stderr
    return [p["name"] for p in json.loads(result.stdout) if p["origin"] == "builtin"]


PRESETS = _builtin_presets()


@pytest.fixture(scope="module")
def sft_parser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[argparse.ArgumentParser]:
    """ms-swift 4.x's ``swift sft`` argument parser, built once per module (~12-30 s)."""
    try:
        import swift  # noqa: F401
    except ImportError:
        pytest.skip("ms-swift not installed")
    cache = tmp_path_factory.mktemp("swift-cache")
    with pytest.MonkeyPatch.context() as mp:
        # Keep ms-swift's import-time caches out of the user's home, and never go online.
        for name in ("MODELSCOPE_CACHE", "HF_HOME", "MPLCONFIGDIR", "TORCH_EXTENSIONS_DIR"):
            mp.setenv(name, str(cache / name.lower()))
        mp.setenv("HF_HUB_OFFLINE", "1")
        from swift.arguments import SftArguments
        from swift.utils.utils import _patch_get_type_hints
        from transformers import HfArgumentParser

        with _patch_get_type_hints():
            parser = HfArgumentParser([SftArguments])
        parser.allow_abbrev = False
        yield parser


def _render(preset: str) -> tuple[dict[str, Any], str | None]:
    """Render ``preset`` for ms-swift 4; pass a model only where the preset leaves it open."""
    base = ["render", preset, "--format", "json", "--swift-version", "4"]
    result = _runner().invoke(app, base)
    model: str | None = None
    if result.exit_code != 0 and PLACEHOLDER_MESSAGE in result.stderr:
        model = SOME_MODEL
        result = _runner().invoke(app, [*base, "--model", model])
    assert result.exit_code == 0, (
        f"render {preset} exited {result.exit_code}\nstderr: {result.stderr}\nexception: {result.exception!r}"
    )
    return json.loads(result.stdout), model


def _swift_flags(argv: list[str]) -> list[str]:
    i = argv.index("swift")
    assert argv[i + 1] == "sft", argv
    return argv[i + 2 :]


def _same(expected: Any, parsed: Any) -> bool:
    """Does the parser's value mean the config's value?"""
    if (
        isinstance(expected, (dict, list))
        and isinstance(parsed, str)
        and not (isinstance(expected, list) and all(isinstance(e, str) for e in expected))
    ):
        parsed = json.loads(parsed)  # JSON-typed args (gradient_checkpointing_kwargs) stay text
    if isinstance(expected, bool):
        return isinstance(parsed, bool) and parsed is expected
    if isinstance(expected, float) or (isinstance(expected, int) and isinstance(parsed, float)):
        # floats by value: `1e-4` in the config and 0.0001 from the parser are the same
        return (
            isinstance(parsed, (int, float))
            and not isinstance(parsed, bool)
            and float(parsed) == float(expected)
        )
    if isinstance(expected, int):
        return isinstance(parsed, int) and not isinstance(parsed, bool) and parsed == expected
    if isinstance(expected, list):
        return (
            isinstance(parsed, list)
            and len(parsed) == len(expected)
            and all(_same(e, p) for e, p in zip(expected, parsed, strict=True))
        )
    if isinstance(expected, dict):
        return isinstance(parsed, dict) and parsed == expected
    return type(parsed) is str and parsed == expected


def test_presets_are_listed() -> None:
    assert len(PRESETS) >= 10
    for name in (
        "ddp-device_map-qwen3-8b",
        "zero2-qwen3-8b",
        "zero2-qwen3-30b-a3b",
        "lora-7b",
        "lora-8b",
        "lora-20b",
        "oom-fallback",
        "lora-qwen2.5-7b",
    ):
        assert name in PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_parses_with_real_swift(preset: str, sft_parser: argparse.ArgumentParser) -> None:
    doc, model = _render(preset)
    flags = _swift_flags(doc["argv"])
    namespace, remaining = sft_parser.parse_known_args(flags)
    assert remaining == [], f"ms-swift 4 does not know {remaining}"

    resolved = resolve(preset, Overrides(swift_version="4", model=model))
    assert resolved.major == 4
    rendered_names = {f[2:] for f in flags if f.startswith("--")}
    assert rendered_names == {k for k, v in resolved.args.items() if v is not None}
    paths = builtin_paths(resolved)  # builtin:... refs render as their local paths
    for name, expected in resolved.args.items():
        if expected is None:
            continue
        if isinstance(expected, list):
            expected = [paths.get(e, e) if isinstance(e, str) else e for e in expected]
        elif isinstance(expected, str):
            expected = paths.get(expected, expected)
        assert hasattr(namespace, name), f"ms-swift 4 has no argument {name}"
        parsed = getattr(namespace, name)
        assert _same(expected, parsed), f"{name}: config {expected!r}, ms-swift parsed {parsed!r}"


def test_abbreviation_is_not_expanded(sft_parser: argparse.ArgumentParser) -> None:
    """The check above would miss a flag ms-swift reads as an abbreviation otherwise."""
    _, remaining = sft_parser.parse_known_args(["--lora_r", "16"])
    assert remaining == ["--lora_r", "16"]


def test_seed_3x_spelling_is_unknown_to_swift4(sft_parser: argparse.ArgumentParser) -> None:
    """Why the dialect exists: 4.x has no --train_type alias (ms-swift-facts.md)."""
    _, remaining = sft_parser.parse_known_args(["--train_type", "full"])
    assert remaining == ["--train_type", "full"]
