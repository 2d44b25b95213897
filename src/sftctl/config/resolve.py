"""From a target and overrides to a validated run config, with every problem found.

The pipeline: load and merge (presets), pick the target ms-swift version, apply
overrides, check the shape (schema), the arguments, secrets and combinations
(checks.config), and the GPU layout (resources.layout, checks.layout). All problems
are collected, not just the first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from sftctl.checks import config as rules
from sftctl.checks import layout as layout_rules
from sftctl.checks.registry import report
from sftctl.config.presets import Loaded, load, other_spellings, set_path
from sftctl.config.schema import RunConfig, parse_gpus
from sftctl.errors import EXIT_USAGE, ConfigError, Problem, UsageError, errors_of
from sftctl.resources.layout import Layout, effective_batch, plan
from sftctl.swift import catalog, dialect
from sftctl.swift.values import parse_set_value
from sftctl.swift.version import VersionProblem, fallback_major, parse_major, target_major

# An ms-swift argument name, or a dotted config path of names (launch.gpus, env.HF_HOME).
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)?$")
_AUTO = re.compile(r"^auto(?::(\d+))?$")


class GpuPicker(Protocol):
    """Chooses the GPUs of ``launch.gpus: auto`` / ``auto:N``."""

    how: str  # what the choice is, for ``show``

    def __call__(self, count: int | None, multiple: int) -> list[int]:
        """``count`` GPUs (None: every free one, a multiple of ``multiple``)."""
        ...


@dataclass
class Unpicked:
    """For the commands that do not look at the host (validate, show): ``auto:N`` is checked
    as N GPUs (``auto`` as the count the config implies); ``render`` refuses it, since a
    script needs ids."""

    refuse: bool = False
    how: str = "checked as placeholder ids; sftctl run picks free GPUs and leases them"

    def __call__(self, count: int | None, multiple: int) -> list[int]:
        return list(range(count or max(multiple, 1)))


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
    notes: list[str] = field(default_factory=list)  # what sftctl decided for the user, for show
    warnings: list[Problem] = field(default_factory=list)  # config-phase warnings (they stop nothing)

    @property
    def effective_batch(self) -> int | None:
        """per-device batch x processes x accumulation x nodes, where all are known."""
        return effective_batch(self.args, self.layout)

    def document(self) -> dict[str, Any]:
        """The resolved config as one mapping (what a manifest records and ``show`` prints)."""
        doc: dict[str, Any] = self.config.model_dump(exclude={"extends", "args"}, exclude_none=True)
        doc["swift_version"] = self.major
        doc["args"] = dict(self.args)
        return doc


def _major(cli: str | None, config_value: object, env: Mapping[str, str]) -> tuple[int, str]:
    """--swift-version, else SFTCTL_SWIFT_VERSION, else the config, else the install, else 4.

    An invalid config value is that config's problem even when the command line overrides it."""
    config_major: int | None = None
    if config_value not in (None, ""):
        try:
            config_major = parse_major(config_value)
        except VersionProblem as exc:
            error = ConfigError(
                problems=[report("C006", "swift_version", str(exc), "write swift_version: 3 or 4")]
            )
            if "not supported" in str(exc):
                error.exit_code = EXIT_USAGE  # as --swift-version 2 is: exit 2 when it stands alone
            raise error from None
    try:
        chosen = target_major(cli, env)
    except VersionProblem as exc:
        raise UsageError(f"{exc} (fix: --swift-version 4)") from None
    if chosen is not None:
        return chosen
    if config_major is not None:
        return config_major, "config swift_version"
    return fallback_major()


def _apply_overrides(loaded: Loaded, ov: Overrides, cat: catalog.Catalog, problems: list[Problem]) -> None:
    for item in ov.sets:
        if "=" not in item:
            problems.append(
                report("C004", "--set", f"'{item}' is not KEY=VALUE", "write e.g. --set learning_rate=1e-4")
            )
            continue
        key, text = item.split("=", 1)
        key = key.strip()
        if not _KEY.match(key):
            what = f"'{item}' has no key" if not key else f"{key!r} is not a key"
            problems.append(
                report(
                    "C004",
                    "--set",
                    f"{what}: a key is an argument name or a dotted path of names",
                    "write e.g. --set learning_rate=1e-4 or --set launch.nproc_per_node=2",
                )
            )
            continue
        if not text.strip() and not _takes_empty(key, cat):
            problems.append(
                report(
                    "C007",
                    f"--set {key}",
                    "has an empty value",
                    f"write --set {key}=VALUE, or --set {key}=null to remove the inherited value",
                )
            )
            continue
        if "." in key:
            head = key.split(".", 1)[0]
            if head not in ("launch", "env", "args"):
                problems.append(
                    report(
                        "C005",
                        f"--set {key}",
                        f"unknown config section '{head}'",
                        "use an ms-swift argument name, or launch.*, env.*, args.*",
                    )
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


def _takes_empty(key: str, cat: catalog.Catalog) -> bool:
    """An empty ``--set`` value means the empty string only where a string is expected:
    environment variables, ``launch.gpus`` (no GPU) and string arguments."""
    if key.startswith("env.") or key == "launch.gpus":
        return True
    if key.startswith("launch."):
        return False
    arg = _lookup(cat, key.split(".", 1)[1] if key.startswith("args.") else key)
    return arg is not None and arg.type == "str" and not arg.is_list


def _drop_other_spellings(loaded: Loaded, key: str) -> None:
    """`--set train_type=lora` on a config that says tuner_type: the override replaces it."""
    args = loaded.data.get("args")
    if not isinstance(args, dict):
        return
    for other in other_spellings(args, key):
        set_path(loaded, f"args.{other}", None, "--set")


def _lookup(cat: catalog.Catalog, name: str) -> catalog.Argument | None:
    name = name.replace("-", "_")
    return cat.get(dialect.spelling(name, cat.major) or name)


def resolve(
    target: str,
    overrides: Overrides | None = None,
    *,
    env: Mapping[str, str] | None = None,
    visible: list[int] | None = None,
    picker: GpuPicker | None = None,
) -> Resolved:
    """Load ``target`` and return the validated run, or raise ConfigError with every problem.

    ``picker`` chooses the GPUs of ``launch.gpus: auto`` (default: :class:`Unpicked`)."""
    return resolve_loaded(load(target), overrides, env=env, visible=visible, picker=picker)


def resolve_loaded(
    loaded: Loaded,
    overrides: Overrides | None = None,
    *,
    env: Mapping[str, str] | None = None,
    visible: list[int] | None = None,
    picker: GpuPicker | None = None,
) -> Resolved:
    """Validate an already loaded (merged) config; see :func:`resolve`."""
    ov = overrides or Overrides()
    env = os.environ if env is None else env
    major, source = _major(ov.swift_version, loaded.data.get("swift_version"), env)
    cat = catalog.load(major)
    problems: list[Problem] = []
    before = _launch_counts(loaded.data)
    _apply_overrides(loaded, ov, cat, problems)
    notes = _pick_gpus(loaded, before, ov, picker or Unpicked(), problems)
    notes += _follow_gpus(loaded, before, ov)
    raw_args = loaded.data.get("args") or {}
    config: RunConfig | None = None
    try:
        config = RunConfig.model_validate({**loaded.data, "args": {}})
    except ValidationError as exc:
        # Reported with the rest: the arguments are still checked below.
        problems += rules.schema_problems(exc, loaded, cat)
    if not isinstance(raw_args, dict):
        problems.append(
            report(
                "C003",
                "args",
                f"must be a mapping of ms-swift arguments, got {type(raw_args).__name__}",
                "write 'args:' followed by 'name: value' lines",
            )
        )
        raw_args = {}
    written: dict[str, str] = {}
    args = rules.check_args(raw_args, cat, loaded, problems, written)
    # A non-mapping args (C003) or a flat ms-swift config (C008) has been said: no follow-on "no model".
    if isinstance(loaded.data.get("args", {}), dict) and not any(p.rule_id == "C008" for p in problems):
        rules.fill_templates(args, loaded.preset, problems)
    rules.check_combinations(args, cat, problems, written)
    rules.check_values(args, problems, written)
    if config is None:
        raise ConfigError(problems=problems)
    rules.check_env(config.env, problems)
    layout = plan(config.launch, args, visible)
    problems += layout_rules.check(config.launch, layout, args)
    if errors_of(problems):
        raise ConfigError(problems=problems)
    config = config.model_copy(update={"args": args})
    return Resolved(loaded, config, major, args, layout, source, notes, list(problems))


def _launch_counts(data: dict[str, Any]) -> tuple[int, int] | None:
    """(GPUs listed, processes) of a config that lists GPUs and a process count, else None."""
    launch = data.get("launch")
    if not isinstance(launch, dict):
        return None
    try:
        gpus = parse_gpus(launch["gpus"]) if isinstance(launch.get("gpus"), str) else launch.get("gpus")
    except ValueError:
        return None
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        gpus = [gpus]  # `gpus: 6`, one GPU
    nproc = launch.get("nproc_per_node", 1)
    if not isinstance(gpus, list) or not gpus or not isinstance(nproc, int) or isinstance(nproc, bool):
        return None
    return len(gpus), nproc


def _follow_gpus(loaded: Loaded, before: tuple[int, int] | None, ov: Overrides) -> list[str]:
    """The process count follows the GPUs: ``nproc_per_node: auto`` is one process per listed
    GPU, and when --gpus changes the count of a config whose processes follow its GPUs (one
    per GPU, or a fixed number of GPUs each), the process count keeps that ratio. An explicit
    --set launch.nproc_per_node always wins."""
    launch = loaded.data.get("launch")
    if not isinstance(launch, dict):
        return []
    explicit = _sets_nproc(ov)
    now = _launch_counts({"launch": {**launch, "nproc_per_node": 1}})
    listed = now[0] if now else None
    if launch.get("nproc_per_node") == "auto":
        if listed is None:
            gpus = launch.get("gpus")
            if gpus in ("", []):  # a CPU run: one process unless said otherwise
                launch["nproc_per_node"] = 1
                return ["nproc_per_node auto: 1 process (no GPU listed: a CPU run)"]
            if gpus is not None:
                launch["nproc_per_node"] = 1  # the GPU list is wrong: that is the one problem to say
            return []  # no GPU list: left as 'auto', the schema says what to write
        launch["nproc_per_node"] = listed
        return [f"nproc_per_node auto: {listed} process(es), one per listed GPU"]
    if explicit or ov.gpus is None or before is None or listed is None:
        return []
    gpus_before, nproc_before = before
    if nproc_before != launch.get("nproc_per_node") or gpus_before % nproc_before:
        return []
    per = gpus_before // nproc_before
    if listed % per or listed // per == nproc_before:
        return []
    launch["nproc_per_node"] = listed // per
    loaded.origin["launch.nproc_per_node"] = "--gpus"
    each = "one per GPU" if per == 1 else f"{per} GPUs each"
    return [
        f"nproc_per_node followed --gpus: {nproc_before} -> {listed // per} "
        f"({each}, as the config has on its {gpus_before} GPUs)"
    ]


def _sets_nproc(ov: Overrides) -> bool:
    """The command line sets the process count itself (--set launch.nproc_per_node=N)."""
    return any(item.split("=", 1)[0].strip() == "launch.nproc_per_node" for item in ov.sets)


def _pick_gpus(
    loaded: Loaded, before: tuple[int, int] | None, ov: Overrides, picker: GpuPicker, problems: list[Problem]
) -> list[str]:
    """``launch.gpus: auto`` / ``auto:N``: the picker's GPUs replace it. A config whose
    processes each take k GPUs (device_map) gets a multiple of k; with an explicit process
    count, plain ``auto`` takes as many GPUs as those processes need."""
    launch = loaded.data.get("launch")
    value = launch.get("gpus") if isinstance(launch, dict) else None
    if not isinstance(launch, dict) or not isinstance(value, str):
        return []
    match = _AUTO.match(value.strip().lower())
    if match is None:
        if value.strip().lower().startswith("auto"):
            problems.append(
                report(
                    "C002",
                    "launch.gpus",
                    f"'{value}' is not auto or auto:N",
                    "write auto, or auto:N with N >= 1",
                )
            )
            del launch["gpus"]  # said once: no follow-on layout problems
        return []
    count = int(match.group(1)) if match.group(1) else None
    where = loaded.origin.get("launch.gpus", "config")
    if count == 0:
        problems.append(
            report("C002", "launch.gpus", f"'{value}' asks for no GPU", "write auto:N with N >= 1")
        )
        del launch["gpus"]
        return []
    args = loaded.data.get("args")
    if isinstance(args, dict) and str(args.get("use_cpu")).lower() in ("true", "1", "yes"):
        launch["gpus"] = ""
        return [f"launch.gpus {value}: no GPU picked (use_cpu is true: the run trains on the CPU)"]
    per = before[0] // before[1] if before and before[0] % before[1] == 0 else 1
    nproc = launch.get("nproc_per_node")
    explicit = _sets_nproc(ov)
    if count is None and isinstance(nproc, int) and not isinstance(nproc, bool) and (explicit or not before):
        count = nproc * per
    if isinstance(picker, Unpicked) and count is None and before:
        count = before[0]  # checked as the config's own GPU count; run takes every free one
    if isinstance(picker, Unpicked) and picker.refuse:
        problems.append(
            report(
                "L008",
                "launch.gpus",
                f"'{value}' picks free GPUs when `sftctl run` starts; a rendered script needs GPU ids",
                f"give ids (--gpus 0,1), or see what run would pick: sftctl run ... --gpus {value} --dry-run",
            )
        )
    picked = picker(count, per)
    launch["gpus"] = ",".join(str(i) for i in picked)
    loaded.origin["launch.gpus"] = f"{where} ({value})"
    return [f"launch.gpus {value}: GPUs {launch['gpus']} ({picker.how})"]
