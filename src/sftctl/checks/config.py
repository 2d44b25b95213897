"""Config-phase checks: the shape of a config, its ms-swift arguments, secrets, and the
combinations ms-swift would refuse only after start-up. Nothing here reads the machine."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import ValidationError

from sftctl.checks.registry import report
from sftctl.config.presets import Loaded
from sftctl.config.schema import LAUNCH_KEYS, TOP_LEVEL_KEYS
from sftctl.errors import Problem
from sftctl.swift import catalog, dialect
from sftctl.swift.values import ValueProblem, coerce
from sftctl.util.secrets import is_secret_name
from sftctl.util.text import did_you_mean

PLACEHOLDER = re.compile(r"^<[A-Z][A-Z0-9_]*>$")
MODEL_NAME_TEMPLATE = "<model-name>"
FLASH_ATTN = ("flash_attn", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flash_attn_3")
DEEPSPEED_BUILTINS = ("zero0", "zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")

_FIELD_HINTS = {
    "launch.gpus": "list GPU ids, e.g. gpus: 0,1,2,3 (or a range 0-3), or auto / auto:N for free GPUs",
    "launch.nproc_per_node": "a whole number of processes per node, e.g. nproc_per_node: 2, "
    "or auto (one per GPU) with launch.gpus listed",
    "launch.nnodes": "a whole number of nodes, e.g. nnodes: 2",
    "launch.node_rank": "this node's rank, 0 to nnodes-1, e.g. --node-rank 1",
    "launch.master_addr": "the host name or IP address of node 0, e.g. master_addr: 10.0.0.1",
    "launch.rdzv": "rdzv: static or rdzv: c10d",
    "launch.rdzv_id": "letters, digits, '.', '_' or '-', e.g. rdzv_id: qwen3-8b-run1",
    "launch.rdzv_timeout": "seconds, e.g. rdzv_timeout: 600",
    "launch.master_port": "a port number between 1 and 65535, e.g. master_port: 29500",
    "launch.launcher": "launcher: swift or launcher: torchrun",
    "env": "env is a mapping of NAME: value",
    "description": "a line of text",
    "swift_version": "swift_version: 3 or 4",
}


def where(loaded: Loaded, loc: str) -> str:
    """``loc``, with the file that set it when that is not the target itself."""
    src = loaded.origin.get(loc)
    return f"{loc} [from {src}]" if src not in (None, loaded.target) else loc


def _schema_fix(err: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    for depth in (2, 1):
        key = ".".join(loc[:depth])
        if key in _FIELD_HINTS:
            return _FIELD_HINTS[key]
    if err["type"] == "model_type":
        return f"{loc[0] if loc else 'this section'} must be a mapping of 'key: value' lines"
    return "see the README's section on writing your own config"


def schema_problems(exc: ValidationError, loaded: Loaded, cat: catalog.Catalog) -> list[Problem]:
    """pydantic's findings on the config's shape, as problems with the key and a fix.

    Top-level keys that are ms-swift arguments mean a flat ms-swift config (the format of
    ``swift sft --config``): one problem says to put them under ``args:``."""
    out: list[Problem] = []
    errors = exc.errors()
    flat = [
        str(e["loc"][0])
        for e in errors
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1 and _is_argument(str(e["loc"][0]), cat)
    ]
    if flat:
        out.append(
            report(
                "C008",
                loaded.target,
                f"{', '.join(flat)}: ms-swift argument{'s' if len(flat) > 1 else ''} at the top level; "
                "this looks like a flat ms-swift config",
                "indent them under an 'args:' line (sftctl keeps description, extends, launch and env "
                "at the top level)",
            )
        )
    for err in errors:
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1 and str(err["loc"][0]) in flat:
            continue
        loc = ".".join(str(p) for p in err["loc"])
        at = where(loaded, loc)
        if err["type"] == "extra_forbidden":
            known = LAUNCH_KEYS if len(err["loc"]) > 1 and err["loc"][0] == "launch" else TOP_LEVEL_KEYS
            fix = did_you_mean(str(err["loc"][-1]), known) or f"known keys: {', '.join(known)}"
            out.append(report("C001", at, "unknown key", fix))
        else:
            value = err.get("input")
            msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's wording, not the user's
            if any(is_secret_name(str(part)) for part in err["loc"]):
                got = "value not shown: the key names a secret"
            elif isinstance(value, (dict, list)) and len(repr(value)) > 80:
                got = f"got a {type(value).__name__}"
            else:
                got = f"got {value!r}"
            out.append(report("C002", at, f"{msg} ({got})", _schema_fix(err)))
    return out


def _is_argument(name: str, cat: catalog.Catalog) -> bool:
    name = name.replace("-", "_")
    return (dialect.spelling(name, cat.major) or name) in cat


def _unknown_argument(name: str, at: str, cat: catalog.Catalog) -> Problem:
    """Why ``name`` is not an argument of ``cat``'s ms-swift, most specific reason first."""
    if name in dialect.LEGACY:
        new = dialect.LEGACY[name]
        return report(
            "A003",
            at,
            f"'{name}' is an ms-swift 2.x name",
            f"write {dialect.spelling(new, cat.major) or new}",
        )
    removed = dialect.removed_hint(name, cat.major)
    if removed:
        return report("A002", at, f"'{name}' was removed in ms-swift {cat.major}.x", removed)
    if name.startswith("no_") and cat.get(name[3:]) is not None:
        return report(
            "A004", at, f"'{name}' is a command-line negation, not an argument", f"write {name[3:]}: false"
        )
    full = cat.expansions(name)
    if len(full) == 1:
        return report(
            "A005",
            at,
            f"'{name}' is not an ms-swift {cat.major}.x argument; "
            f"ms-swift would silently expand it to '{full[0]}'",
            f"write the full name: {full[0]}",
        )
    if full:
        return report(
            "A005",
            at,
            f"'{name}' is not an argument; "
            f"ms-swift would read it as an abbreviation of one of {', '.join(full)}",
            "write the full name",
        )
    if name in LAUNCH_KEYS:
        return report(
            "A001",
            at,
            f"'{name}' is not an ms-swift argument but a launch setting",
            f"write it under launch: (--set launch.{name}=VALUE)",
        )
    fix = (
        did_you_mean(name, cat.arguments)
        or f"check the name against ms-swift {cat.major}.x's command-line parameters"
    )
    return report("A001", at, f"unknown ms-swift {cat.major}.x argument '{name}'", fix)


def check_args(
    raw: dict[str, Any],
    cat: catalog.Catalog,
    loaded: Loaded,
    problems: list[Problem],
    written: dict[str, str],
) -> dict[str, Any]:
    """Arguments in the target's spelling, coerced; ``written`` maps each to the user's key."""
    out: dict[str, Any] = {}
    seen_from: dict[str, str] = {}
    for key, value in raw.items():
        at = where(loaded, f"args.{key}")
        name = str(key).replace("-", "_")
        target = dialect.spelling(name, cat.major) or name
        arg = cat.get(target)
        if arg is None:
            problems.append(_unknown_argument(name, at, cat))
            continue
        if target in seen_from:
            problems.append(
                report(
                    "A006",
                    at,
                    f"'{name}' and '{seen_from[target]}' are the same argument "
                    f"('{target}' in ms-swift {cat.major}.x)",
                    "keep one of them",
                )
            )
            continue
        seen_from[target] = name
        written[target] = str(key)
        if is_secret_name(target):
            env_name = "SWANLAB_API_KEY" if "swanlab" in target else "the tracker's or hub's token variable"
            problems.append(
                report(
                    "S001",
                    at,
                    f"'{target}' is a secret: in a config, script or command line anyone "
                    "on the host can read it (ps shows every argv)",
                    f"remove it and export {env_name} in the environment instead",
                )
            )
            continue
        if isinstance(value, str) and PLACEHOLDER.match(value):
            out[target] = value  # reported as missing once overrides are known
            continue
        try:
            out[target] = coerce(arg, value)
        except ValueProblem as exc:
            problems.append(report("A007", at, str(exc), exc.hint))
    return out


def fill_templates(args: dict[str, Any], preset: str | None, problems: list[Problem]) -> None:
    """Report values left to the user; fill ``<model-name>`` and a built-in model's defaults."""
    what = f"preset '{preset}'" if preset else "this config"
    for name, value in list(args.items()):
        if isinstance(value, str) and PLACEHOLDER.match(value):
            problems.append(
                report(
                    "A008",
                    f"args.{name}",
                    f"{what} leaves {name} to you ({value})",
                    f"pass --{name.replace('_', '-')} ID" if name == "model" else f"pass --set {name}=VALUE",
                )
            )
    if "model" not in args:
        problems.append(
            report("A009", "args.model", f"{what} names no model", "pass --model ID or --set model=ID")
        )
        return
    model = str(args["model"])
    if not model.strip():
        problems.append(
            report("A010", "args.model", "the model is empty", "pass --model ID (a hub id or a local folder)")
        )
        return
    _builtin_defaults(args, problems)
    base = model.split(":", 1)[1] if model.startswith("builtin:") else model.rstrip("/").rsplit("/", 1)[-1]
    for name, value in args.items():
        if isinstance(value, str) and MODEL_NAME_TEMPLATE in value:
            args[name] = value.replace(MODEL_NAME_TEMPLATE, base)
        elif isinstance(value, list):
            args[name] = [v.replace(MODEL_NAME_TEMPLATE, base) if isinstance(v, str) else v for v in value]


def _builtin_defaults(args: dict[str, Any], problems: list[Problem]) -> None:
    """``builtin:`` refs must name a shipped asset; a built-in model brings the
    model_type and template ms-swift cannot infer for a local folder."""
    from sftctl.assets.builder import BUILTINS

    for key in ("model", "dataset"):
        values = args.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value.startswith("builtin:"):
                if value not in BUILTINS:
                    known = ", ".join(sorted(BUILTINS))
                    problems.append(
                        report(
                            "A011", f"args.{key}", f"unknown built-in asset '{value}'", f"use one of {known}"
                        )
                    )
                elif key == "model":
                    for name, default in BUILTINS[value].get("swift_args", {}).items():
                        args.setdefault(name, default)


# Variables sftctl renders from launch: settings; an env entry would override them behind
# the layout checks' back (NPROC_PER_NODE=3 with no GPU and no use_cpu, say).
LAUNCH_ENV = {
    "CUDA_VISIBLE_DEVICES": "launch.gpus",
    "NPROC_PER_NODE": "launch.nproc_per_node",
    "NNODES": "launch.nnodes",
    "MASTER_PORT": "launch.master_port",
    "NODE_RANK": "launch.node_rank",
    "MASTER_ADDR": "launch.master_addr",
    "WORLD_SIZE": "launch.nproc_per_node",
}


def check_env(env: dict[str, str], problems: list[Problem]) -> None:
    """Secrets belong in the shell's environment, never in a config that is copied around;
    the launch layout belongs to launch:, where it is checked."""
    for name, value in env.items():
        if "\x00" in value:
            problems.append(report("A017", f"env.{name}", "the value holds a NUL character", "remove it"))
        if name in LAUNCH_ENV:
            problems.append(
                report(
                    "C009",
                    f"env.{name}",
                    f"{name} is rendered from {LAUNCH_ENV[name]}; "
                    "setting it here would bypass the layout checks",
                    f"remove it and set {LAUNCH_ENV[name]} instead",
                )
            )
        elif is_secret_name(name):
            problems.append(
                report(
                    "S002",
                    f"env.{name}",
                    "looks like a secret; a config is copied, committed and logged",
                    f"remove it and export {name} in the shell that runs sftctl",
                )
            )


def tuner_types(cat: catalog.Catalog) -> tuple[str, ...]:
    """The tuner types of ``cat``'s ms-swift, from the catalog's own choices."""
    arg = cat.get(dialect.spelling("tuner_type", cat.major) or "tuner_type")
    return (arg.choices or arg.help_choices or ()) if arg is not None else ()


# Ranges that ms-swift, transformers or torch check only after start-up, each with the check
# it mirrors. Sentinels stay legal (max_steps: -1 means "by epochs").
RANGES: dict[str, tuple[float, float, str]] = {
    "learning_rate": (0.0, math.inf, "torch.optim: Invalid learning rate"),
    "per_device_train_batch_size": (1, math.inf, "torch DataLoader: batch_size should be a positive integer"),
    "per_device_eval_batch_size": (1, math.inf, "torch DataLoader: batch_size should be a positive integer"),
    "gradient_accumulation_steps": (1, math.inf, "transformers Trainer: steps per update"),
    "num_train_epochs": (0.0, math.inf, "transformers Trainer: epochs to train"),
    "save_total_limit": (1, math.inf, "transformers: checkpoints to keep"),
    "warmup_ratio": (0.0, 1.0, "transformers TrainingArguments: warmup_ratio must lie in range [0,1]"),
    "weight_decay": (0.0, math.inf, "torch.optim: Invalid weight_decay value"),
    "lora_rank": (1, math.inf, "peft LoraConfig: r must be positive"),
    "max_length": (1, math.inf, "ms-swift template: tokens per sample"),
    "dataloader_num_workers": (0, math.inf, "torch DataLoader: num_workers option should be non-negative"),
    "logging_steps": (0.0, math.inf, "transformers TrainingArguments: logging_steps"),
    "save_steps": (0.0, math.inf, "transformers TrainingArguments: save_steps"),
    "eval_steps": (0.0, math.inf, "transformers TrainingArguments: eval_steps"),
}


def check_values(args: dict[str, Any], problems: list[Problem], written: dict[str, str]) -> None:
    """Numbers out of range and values that ms-swift's parser would take for a flag."""
    for name, value in args.items():
        key = f"args.{written.get(name, name)}"
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and "\x00" in item:
                problems.append(
                    report(
                        "A017", key, f"a value of {name} holds a NUL character", "remove the NUL character"
                    )
                )
            elif isinstance(item, str) and item.startswith("--"):
                problems.append(
                    report(
                        "A015",
                        key,
                        f"{item!r} would be read by ms-swift as a flag, not as a value of {name}",
                        "remove it, or give the flag its own key",
                    )
                )
        if name in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high, mirrors = RANGES[name]
            finite = not isinstance(value, float) or math.isfinite(value)  # huge ints are finite
            if not (finite and low <= value <= high):
                span = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
                span = span if finite else f"finite and {span}"
                problems.append(
                    report(
                        "A016",
                        key,
                        f"{name} must be {span}, got {value} ({mirrors})",
                        f"set {name} to a value {span}",
                    )
                )


def check_combinations(
    args: dict[str, Any], cat: catalog.Catalog, problems: list[Problem], written: dict[str, str]
) -> None:
    """Values and pairs that ms-swift checks in code, after start-up, rather than in its parser."""
    tuner = args.get("tuner_type", args.get("train_type"))
    known = tuner_types(cat)
    if isinstance(tuner, str) and known and tuner not in known:
        key = written.get("tuner_type") or written.get("train_type") or "tuner_type"
        problems.append(
            report(
                "A012",
                f"args.{key}",
                f"unknown {key} '{tuner}' for ms-swift {cat.major}.x",
                did_you_mean(tuner, known, n=1) or f"use one of {', '.join(known)}",
            )
        )
    ds = args.get("deepspeed")
    if (
        isinstance(ds, str)
        and ds not in DEEPSPEED_BUILTINS
        and not ds.endswith(".json")
        and not ds.lstrip().startswith("{")
    ):
        near = did_you_mean(ds, DEEPSPEED_BUILTINS, n=1)
        problems.append(
            report(
                "A013",
                "args.deepspeed",
                f"'{ds}' is not a DeepSpeed config ms-swift knows (ms-swift fails with a JSONDecodeError)",
                (f"{near} " if near else "")
                + f"use one of {', '.join(DEEPSPEED_BUILTINS)}, a .json path or inline JSON",
            )
        )
    if args.get("quant_bits") not in (None, "") and args.get("quant_method") in (None, ""):
        problems.append(
            report(
                "A018",
                "args.quant_bits",
                f"quant_bits {args['quant_bits']} without quant_method: ms-swift quantizes only when "
                "quant_method is set, so the model would load unquantized",
                "add quant_method: bnb (QLoRA with bitsandbytes)",
            )
        )
    attn = args.get("attn_impl")
    for flag in ("packing", "padding_free"):
        if args.get(flag) is True and attn not in FLASH_ATTN:
            problems.append(
                report(
                    "A014",
                    f"args.{flag}",
                    f"{flag} needs a flash-attention attn_impl, got {attn!r}",
                    f"set attn_impl: flash_attn, or {flag}: false",
                )
            )
