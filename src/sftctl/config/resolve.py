"""From a target and overrides to a validated run config, with every problem found.

The pipeline: load and merge (presets.py), pick the target ms-swift version, apply
overrides, check the shape (schema.py), the arguments (catalog), the GPU layout
(layout.py), secrets and required values. All problems are collected, not just the first.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sftctl.config.presets import Loaded, load, set_path
from sftctl.config.schema import LAUNCH_KEYS, TOP_LEVEL_KEYS, RunConfig
from sftctl.errors import ConfigError, Problem, ProblemList, UsageError
from sftctl.resources.layout import Layout, plan
from sftctl.swift import catalog, dialect
from sftctl.swift.values import ValueProblem, coerce, parse_set_value

DEFAULT_MAJOR = 4
PLACEHOLDER = re.compile(r"^<[A-Z][A-Z0-9_]*>$")
MODEL_NAME_TEMPLATE = "<model-name>"
# Environment variables through which trackers and hubs read their tokens.
TOKEN_ENV = ("SWANLAB_API_KEY", "WANDB_API_KEY", "HF_TOKEN", "MODELSCOPE_API_TOKEN")
# A name part, not a substring: TOKENIZERS_PARALLELISM is no secret, HF_TOKEN is.
_SECRET_ENV = re.compile(r"(^|_)(TOKEN|API_KEY|APIKEY|SECRET|PASSWORD|PASSWD)($|_)", re.I)
FLASH_ATTN = ("flash_attn", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flash_attn_3")
# Values ms-swift checks in code rather than with argparse choices.
TUNER_TYPES = (
    "full",
    "lora",
    "longlora",
    "adalora",
    "llamapro",
    "adapter",
    "vera",
    "boft",
    "fourierft",
    "reft",
    "bone",
    "ia3",
    "lora_llm",
    "dummy",
)
DEEPSPEED_BUILTINS = ("zero0", "zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")


@dataclass(frozen=True)
class Overrides:
    """What the command line changes on top of the config."""

    sets: Sequence[str] = ()
    gpus: str | None = None
    model: str | None = None
    swift_version: str | None = None


@dataclass
class Resolved:
    """A validated run: the merged config, its target version, arguments and layout."""

    loaded: Loaded
    config: RunConfig
    major: int
    args: dict[str, Any]  # target spelling, values coerced by the catalog
    layout: Layout
    version_source: str

    @property
    def effective_batch(self) -> int | None:
        """per-device batch x processes x accumulation x nodes, where all are known."""
        bs = self.args.get("per_device_train_batch_size")
        ga = self.args.get("gradient_accumulation_steps")
        if not isinstance(bs, int) or not isinstance(ga, int):
            return None
        return bs * self.layout.nproc * ga * self.layout.nnodes


def parse_major(value: object, source: str) -> int:
    """The ms-swift major version in ``value`` ('4', '4.6.0', 3); exit 2 if unsupported."""
    text = str(value).strip().lstrip("v")
    head = text.split(".", 1)[0]
    if not head.isdigit():
        raise UsageError(f"{source}: '{value}' is not an ms-swift version (fix: write 3 or 4)")
    major = int(head)
    if major not in catalog.SUPPORTED_MAJORS:
        extra = " (its flag names differ: sft_type)" if major < 3 else ""
        raise UsageError(
            f"{source}: ms-swift {major}.x is not supported{extra}; "
            f"sftctl targets {' and '.join(f'{m}.x' for m in catalog.SUPPORTED_MAJORS)} "
            "(fix: --swift-version 4)"
        )
    return major


def installed_swift_version() -> str | None:
    """The ms-swift version installed beside sftctl, from its dist-info folder's name.

    Nothing is imported, and sys.path is listed directly: importlib.metadata would read
    every installed distribution's metadata (about 20 ms in an ms-swift environment)."""
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                for item in it:
                    name = item.name
                    if name.startswith("ms_swift-") and name.endswith(".dist-info"):
                        return name[len("ms_swift-") : -len(".dist-info")]
        except OSError:
            continue
    return None


def _config_major(value: object) -> int:
    text = str(value).strip().lstrip("v")
    if not text.split(".", 1)[0].isdigit():
        raise ConfigError(
            problems=[
                Problem(
                    "swift_version",
                    f"'{value}' is not an ms-swift version",
                    "write swift_version: 3 or 4",
                )
            ]
        )
    return parse_major(value, "swift_version")


def target_major(cli: str | None, config_value: object, env: Mapping[str, str]) -> tuple[int, str]:
    """--swift-version, else SFTCTL_SWIFT_VERSION, else the config, else the install, else 4."""
    if config_value not in (None, ""):
        _config_major(config_value)  # an invalid value is an error even when overridden
    if cli:
        return parse_major(cli, "--swift-version"), "--swift-version"
    if env.get("SFTCTL_SWIFT_VERSION"):
        return parse_major(env["SFTCTL_SWIFT_VERSION"], "SFTCTL_SWIFT_VERSION"), "SFTCTL_SWIFT_VERSION"
    if config_value not in (None, ""):
        return _config_major(config_value), "config swift_version"
    installed = installed_swift_version()
    if installed:
        return parse_major(installed, "installed ms-swift"), f"installed ms-swift {installed}"
    return DEFAULT_MAJOR, "default"


def _did_you_mean(name: str, known: Sequence[str]) -> str | None:
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(n) for n in near)}?" if near else None


def _apply_overrides(loaded: Loaded, ov: Overrides, cat: catalog.Catalog, problems: ProblemList) -> None:
    for item in ov.sets:
        if "=" not in item:
            problems.add("--set", f"'{item}' is not KEY=VALUE", "write e.g. --set learning_rate=1e-4")
            continue
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            problems.add("--set", f"'{item}' has no key", "write e.g. --set learning_rate=1e-4")
            continue
        if "." in key:
            head = key.split(".", 1)[0]
            if head not in ("launch", "env", "args"):
                problems.add(
                    f"--set {key}",
                    f"unknown config section '{head}'",
                    "use an ms-swift argument name, or launch.*, env.*, args.*",
                )
                continue
            if head == "args":
                name = key.split(".", 1)[1]
                value = parse_set_value(_lookup(cat, name), text)
            elif head == "env":
                value = text
            else:
                value = parse_set_value(None, text)
            set_path(loaded, key, value, "--set")
        else:
            _drop_other_spellings(loaded, key)
            set_path(loaded, f"args.{key}", parse_set_value(_lookup(cat, key), text), "--set")
    if ov.gpus is not None:
        set_path(loaded, "launch.gpus", ov.gpus, "--gpus")
    if ov.model is not None:
        set_path(loaded, "args.model", ov.model, "--model")


def _drop_other_spellings(loaded: Loaded, key: str) -> None:
    """`--set train_type=lora` on a config that says tuner_type: the override replaces it."""
    args = loaded.data.get("args")
    if not isinstance(args, dict):
        return
    want = dialect.canonical(key.replace("-", "_"))
    for other in [k for k in args if k != key and dialect.canonical(str(k).replace("-", "_")) == want]:
        set_path(loaded, f"args.{other}", None, "--set")


def _lookup(cat: catalog.Catalog, name: str) -> catalog.Argument | None:
    name = name.replace("-", "_")
    return cat.get(dialect.spelling(name, cat.major) or name)


_FIELD_HINTS = {
    "launch.gpus": "list GPU ids, e.g. gpus: 0,1,2,3 (or a range 0-3)",
    "launch.nproc_per_node": "a whole number of processes per node, e.g. nproc_per_node: 2",
    "launch.nnodes": "a whole number of nodes, e.g. nnodes: 1",
    "launch.master_port": "a port number between 1 and 65535, e.g. master_port: 29500",
    "launch.launcher": "launcher: swift or launcher: torchrun",
    "env": "env is a mapping of NAME: value",
    "description": "a line of text",
    "swift_version": "swift_version: 3 or 4",
}


def _schema_hint(err: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    for depth in (2, 1):
        key = ".".join(loc[:depth])
        if key in _FIELD_HINTS:
            return _FIELD_HINTS[key]
    if err["type"] == "model_type":
        return f"{loc[0] if loc else 'this section'} must be a mapping of 'key: value' lines"
    return "see the README's section on writing your own config"


def _schema_problems(exc: ValidationError, loaded: Loaded) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        src = loaded.origin.get(loc)
        where = f"{loc} [from {src}]" if src not in (None, loaded.target) else loc
        if err["type"] == "extra_forbidden":
            known = LAUNCH_KEYS if len(err["loc"]) > 1 and err["loc"][0] == "launch" else TOP_LEVEL_KEYS
            hint = _did_you_mean(str(err["loc"][-1]), known) or f"known keys: {', '.join(known)}"
            out.append(Problem(where, "unknown key", hint))
        else:
            value = err.get("input")
            out.append(Problem(where, f"{err['msg']} (got {value!r})", _schema_hint(err)))
    return out


def _check_args(
    raw: dict[str, Any],
    cat: catalog.Catalog,
    loaded: Loaded,
    problems: ProblemList,
    written: dict[str, str],
) -> dict[str, Any]:
    """Arguments in the target's spelling, coerced; ``written`` maps each to the user's key."""
    out: dict[str, Any] = {}
    seen_from: dict[str, str] = {}
    for key, value in raw.items():
        loc = f"args.{key}"
        where = (
            f"{loc} [from {loaded.origin[loc]}]"
            if loaded.origin.get(loc) not in (None, loaded.target)
            else loc
        )
        name = str(key).replace("-", "_")
        target = dialect.spelling(name, cat.major) or name
        arg = cat.get(target)
        if arg is None:
            if name in dialect.LEGACY:
                problems.add(
                    where,
                    f"'{name}' is an ms-swift 2.x name",
                    f"write {dialect.spelling(dialect.LEGACY[name], cat.major) or dialect.LEGACY[name]}",
                )
            elif dialect.removed_hint(name, cat.major):
                problems.add(
                    where,
                    f"'{name}' was removed in ms-swift {cat.major}.x",
                    dialect.removed_hint(name, cat.major),
                )
            elif name.startswith("no_") and cat.get(name[3:]) is not None:
                problems.add(
                    where,
                    f"'{name}' is a command-line negation, not an argument",
                    f"write {name[3:]}: false",
                )
            elif cat.expansions(name):
                full = cat.expansions(name)
                problems.add(
                    where,
                    f"'{name}' is not an ms-swift {cat.major}.x argument; ms-swift would "
                    f"silently expand it to '{full[0]}'"
                    if len(full) == 1
                    else f"'{name}' is not an argument; ms-swift would read it as an abbreviation "
                    f"of one of {', '.join(full)}",
                    f"write the full name: {full[0]}" if len(full) == 1 else "write the full name",
                )
            else:
                near = cat.near(name)
                hint = (
                    f"did you mean {' or '.join(repr(n) for n in near)}?"
                    if near
                    else f"check the name against ms-swift {cat.major}.x's command-line parameters"
                )
                problems.add(where, f"unknown ms-swift {cat.major}.x argument '{name}'", hint)
            continue
        if target in seen_from:
            problems.add(
                where,
                f"'{name}' and '{seen_from[target]}' are the same argument "
                f"('{target}' in ms-swift {cat.major}.x)",
                "keep one of them",
            )
            continue
        seen_from[target] = name
        written[target] = str(key)
        if target.endswith("_token") or target.endswith("api_key"):
            env_name = "SWANLAB_API_KEY" if "swanlab" in target else "the tracker's or hub's token variable"
            problems.add(
                where,
                f"'{target}' is a secret: in a config, script or command line anyone "
                "on the host can read it (ps shows every argv)",
                f"remove it and export {env_name} in the environment instead",
            )
            continue
        if isinstance(value, str) and PLACEHOLDER.match(value):
            out[target] = value  # reported as missing once overrides are known
            continue
        try:
            out[target] = coerce(arg, value)
        except ValueProblem as exc:
            problems.add(where, str(exc), exc.hint)
    return out


def _fill_templates(args: dict[str, Any], preset: str | None, problems: ProblemList) -> None:
    for name, value in list(args.items()):
        if isinstance(value, str) and PLACEHOLDER.match(value):
            what = f"preset '{preset}'" if preset else "this config"
            problems.add(
                f"args.{name}",
                f"{what} leaves {name} to you ({value})",
                f"pass --{name.replace('_', '-')} ID" if name == "model" else f"pass --set {name}=VALUE",
            )
    if "model" not in args:
        what = f"preset '{preset}'" if preset else "this config"
        problems.add("args.model", f"{what} names no model", "pass --model ID or --set model=ID")
        return
    model = str(args["model"])
    if not model.strip():
        problems.add("args.model", "the model is empty", "pass --model ID (a hub id or a local folder)")
        return
    _builtin_defaults(args, problems)
    base = model.split(":", 1)[1] if model.startswith("builtin:") else model.rstrip("/").rsplit("/", 1)[-1]
    for name, value in args.items():
        if isinstance(value, str) and MODEL_NAME_TEMPLATE in value:
            args[name] = value.replace(MODEL_NAME_TEMPLATE, base)
        elif isinstance(value, list):
            args[name] = [v.replace(MODEL_NAME_TEMPLATE, base) if isinstance(v, str) else v for v in value]


def _builtin_defaults(args: dict[str, Any], problems: ProblemList) -> None:
    """``builtin:`` refs must name a shipped asset; a built-in model brings the
    model_type and template ms-swift cannot infer for a local folder."""
    from sftctl.assets.builder import BUILTINS

    for key in ("model", "dataset"):
        values = args.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value.startswith("builtin:"):
                if value not in BUILTINS:
                    known = ", ".join(sorted(BUILTINS))
                    problems.add(f"args.{key}", f"unknown built-in asset '{value}'", f"use one of {known}")
                elif key == "model":
                    for name, default in BUILTINS[value].get("swift_args", {}).items():
                        args.setdefault(name, default)


def _check_env(env: dict[str, str], problems: ProblemList) -> None:
    for name in env:
        if _SECRET_ENV.search(name):
            problems.add(
                f"env.{name}",
                "looks like a secret; a config is copied, committed and logged",
                f"remove it and export {name} in the shell that runs sftctl",
            )


def _check_combinations(args: dict[str, Any], problems: ProblemList, written: dict[str, str]) -> None:
    tuner = args.get("tuner_type", args.get("train_type"))
    if isinstance(tuner, str) and tuner not in TUNER_TYPES:
        key = written.get("tuner_type") or written.get("train_type") or "tuner_type"
        near = difflib.get_close_matches(tuner, TUNER_TYPES, n=1)
        problems.add(
            f"args.{key}",
            f"unknown {key} '{tuner}'",
            f"did you mean '{near[0]}'?" if near else f"use one of {', '.join(TUNER_TYPES)}",
        )
    ds = args.get("deepspeed")
    if (
        isinstance(ds, str)
        and ds not in DEEPSPEED_BUILTINS
        and not ds.endswith(".json")
        and not ds.lstrip().startswith("{")
    ):
        near = difflib.get_close_matches(ds, DEEPSPEED_BUILTINS, n=1)
        problems.add(
            "args.deepspeed",
            f"'{ds}' is not a DeepSpeed config ms-swift knows (ms-swift fails with a JSONDecodeError)",
            (f"did you mean '{near[0]}'? " if near else "")
            + f"use one of {', '.join(DEEPSPEED_BUILTINS)}, a .json path or inline JSON",
        )
    attn = args.get("attn_impl")
    for flag in ("packing", "padding_free"):
        if args.get(flag) is True and attn not in FLASH_ATTN:
            problems.add(
                f"args.{flag}",
                f"{flag} needs a flash-attention attn_impl, got {attn!r}",
                f"set attn_impl: flash_attn, or {flag}: false",
            )


def resolve(
    target: str,
    overrides: Overrides | None = None,
    *,
    env: Mapping[str, str] | None = None,
    visible: list[int] | None = None,
) -> Resolved:
    """Load ``target`` and return the validated run, or raise ConfigError with every problem."""
    return resolve_loaded(load(target), overrides, env=env, visible=visible)


def resolve_loaded(
    loaded: Loaded,
    overrides: Overrides | None = None,
    *,
    env: Mapping[str, str] | None = None,
    visible: list[int] | None = None,
) -> Resolved:
    """Validate an already loaded (merged) config; see :func:`resolve`."""
    ov = overrides or Overrides()
    env = os.environ if env is None else env
    major, source = target_major(ov.swift_version, loaded.data.get("swift_version"), env)
    cat = catalog.load(major)
    problems = ProblemList()
    _apply_overrides(loaded, ov, cat, problems)
    raw_args = loaded.data.get("args") or {}
    try:
        config = RunConfig.model_validate({**loaded.data, "args": {}})
    except ValidationError as exc:
        problems.extend(_schema_problems(exc, loaded))
        problems.raise_if_any()
        raise  # unreachable: a ValidationError always has errors
    if not isinstance(raw_args, dict):
        problems.add(
            "args",
            f"must be a mapping of ms-swift arguments, got {type(raw_args).__name__}",
            "write 'args:' followed by 'name: value' lines",
        )
        raw_args = {}
    written: dict[str, str] = {}
    args = _check_args(raw_args, cat, loaded, problems, written)
    _fill_templates(args, loaded.preset, problems)
    _check_env(config.env, problems)
    _check_combinations(args, problems, written)
    layout, layout_problems = plan(config.launch, args, visible)
    problems.extend(layout_problems)
    problems.raise_if_any()
    config = config.model_copy(update={"args": args})
    return Resolved(loaded, config, major, args, layout, source)
