"""Where configs come from: shipped presets, the user's preset folder, YAML files;
``extends`` chains, deep merging with provenance, and command-line overrides."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from sftctl.checks.registry import report
from sftctl.config.yamlio import load_text
from sftctl.errors import ConfigError
from sftctl.swift.dialect import canonical
from sftctl.util.dirs import user_preset_dir
from sftctl.util.text import did_you_mean

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class PresetInfo:
    """A preset as listed by ``sftctl presets``."""

    name: str
    origin: str  # "builtin" or "user"
    description: str
    location: str


@dataclass(frozen=True)
class Layer:
    """One file of an ``extends`` chain, base first."""

    label: str  # preset name or file path, as shown to the user
    path: str
    text: str


@dataclass
class Loaded:
    """A config after ``extends`` is resolved and merged, before validation."""

    target: str
    preset: str | None
    data: dict[str, Any]
    origin: dict[str, str] = field(default_factory=dict)  # dotted key -> layer label
    layers: list[Layer] = field(default_factory=list)
    # A config read back from a run's manifest keeps the hash and files of the original.
    recorded_digest: str | None = None
    recorded_files: list[str] | None = None

    @property
    def files(self) -> list[str]:
        """The files of the extends chain, base first."""
        return self.recorded_files if self.recorded_files is not None else [x.label for x in self.layers]

    @property
    def digest(self) -> str:
        """A hash of every file in the chain: which exact preset text produced this run."""
        if self.recorded_digest is not None:
            return self.recorded_digest
        h = hashlib.sha256()
        for layer in self.layers:
            h.update(layer.label.encode() + b"\0" + layer.text.encode() + b"\0")
        return h.hexdigest()[:16]


@cache
def _builtin_texts() -> dict[str, tuple[str, str]]:
    root = resources.files("sftctl.configs")
    out: dict[str, tuple[str, str]] = {}
    for entry in root.iterdir():
        if entry.name.endswith(SUFFIXES) and entry.is_file():
            out[entry.name.rsplit(".", 1)[0]] = (
                f"sftctl/configs/{entry.name}",
                entry.read_text("utf-8"),
            )
    return out


def _user_files() -> dict[str, Path]:
    folder = user_preset_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in SUFFIXES and p.is_file()}


def _description(text: str) -> str:
    try:
        data = load_text(text, "preset")
    except ConfigError:
        return "(invalid)"
    return str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""


def list_presets() -> list[PresetInfo]:
    """Every preset, the user's first where a name exists in both."""
    found: dict[str, PresetInfo] = {}
    for name, (where, text) in _builtin_texts().items():
        found[name] = PresetInfo(name, "builtin", _description(text), where)
    for name, path in _user_files().items():
        origin = "user, shadows shipped" if name in found else "user"
        try:
            description = _description(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError):
            description = "(unreadable)"  # listed all the same; using it reports the exact problem
        found[name] = PresetInfo(name, origin, description, str(path))
    return [found[k] for k in sorted(found)]


def looks_like_path(target: str) -> bool:
    return target.endswith(SUFFIXES) or os.sep in target or target.startswith(".")


def _read_preset(name: str, where: str = "preset") -> Layer:
    user = _user_files()
    if name in user:
        return Layer(name, str(user[name]), user[name].read_text("utf-8"))
    builtin = _builtin_texts()
    if name in builtin:
        where, text = builtin[name]
        return Layer(name, where, text)
    known = sorted(set(builtin) | set(user))
    hint = did_you_mean(name, known) or "run 'sftctl presets' to list them"
    raise ConfigError(problems=[report("F008", where, f"unknown preset '{name}'", hint)])


def _read_file(path: Path, where: str | None = None) -> Layer:
    if not path.is_file():
        what = "is a folder, not a config file" if path.is_dir() else "no such file"
        raise ConfigError(
            problems=[
                report(
                    "F007",
                    where or str(path),
                    f"{path}: {what}" if where else what,
                    "give the path of a YAML file, or a preset name from 'sftctl presets'",
                )
            ]
        )
    try:
        return Layer(str(path), str(path), path.read_text("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            problems=[
                report(
                    "F006",
                    str(path),
                    f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r})",
                    "save the file as UTF-8",
                )
            ]
        ) from None


def _merge(
    base: dict[str, Any],
    child: dict[str, Any],
    origin: dict[str, str],
    label: str,
    prefix: str = "",
) -> dict[str, Any]:
    """Deep merge: mappings merge, the child wins, lists replace, ``null`` removes."""
    out = dict(base)
    for key, value in child.items():
        path = f"{prefix}{key}"
        if value is None:
            out.pop(key, None)
            for k in [k for k in origin if k == path or k.startswith(path + ".")]:
                del origin[k]
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, origin, label, path + ".")
        elif prefix == "args." and (same := other_spellings(out, str(key))):
            # A child's train_type replaces its parent's tuner_type: one argument, two names.
            for other in same:
                out.pop(other)
                origin.pop(f"args.{other}", None)
            out[key] = value
            origin[path] = label
        else:
            out[key] = value
            for k in [k for k in origin if k.startswith(path + ".")]:
                del origin[k]
            origin[path] = label
            if isinstance(value, dict):
                for sub in value:
                    origin[f"{path}.{sub}"] = label
    return out


def other_spellings(args: dict[str, Any], key: str) -> list[str]:
    """Keys of ``args`` that name the same ms-swift argument as ``key`` under another spelling."""
    want = canonical(key.replace("-", "_"))
    return [k for k in args if k != key and canonical(str(k).replace("-", "_")) == want]


def load(target: str) -> Loaded:
    """Load a preset name or a YAML path, following ``extends`` to its root."""
    is_path = looks_like_path(target) or Path(target).exists()
    first = _read_file(Path(target)) if is_path else _read_preset(target)
    chain: list[tuple[Layer, dict[str, Any]]] = []
    seen: list[str] = []
    layer: Layer | None = first
    while layer is not None:
        key = os.path.realpath(layer.path) if not layer.path.startswith("sftctl/") else layer.path
        if key in seen:
            cycle = " -> ".join([*[c[0].label for c in chain], layer.label])
            raise ConfigError(
                problems=[report("F009", "extends", f"cycle: {cycle}", "remove one of the 'extends' keys")]
            )
        seen.append(key)
        data = load_text(layer.text, layer.path)
        chain.append((layer, data))
        parent = data.get("extends")
        if parent is None:
            layer = None
        elif not isinstance(parent, str) or not parent.strip():
            raise ConfigError(
                problems=[
                    report(
                        "F010",
                        f"{layer.label}: extends",
                        f"must be a preset name or a path, got {parent!r}",
                        "write e.g. 'extends: zero2-qwen3-8b'",
                    )
                ]
            )
        elif looks_like_path(parent):
            base_dir = Path(layer.path).parent if not layer.path.startswith("sftctl/") else Path(".")
            layer = _read_file((base_dir / parent).expanduser(), f"{layer.label}: extends")
        else:
            layer = _read_preset(parent, f"{layer.label}: extends")
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for lay, data in reversed(chain):
        merged = _merge(merged, {k: v for k, v in data.items() if k != "extends"}, origin, lay.label)
    merged = _drop_nulls(merged)
    return Loaded(
        target=target,
        preset=None if is_path else target,
        data=merged,
        origin=origin,
        layers=[lay for lay, _ in reversed(chain)],
    )


def _drop_nulls(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _drop_nulls(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


def set_path(loaded: Loaded, dotted: str, value: Any, label: str) -> None:
    """Apply one override at a dotted path (``launch.gpus``, ``args.model``)."""
    parts = dotted.split(".")
    node = loaded.data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    if value is None:
        node.pop(parts[-1], None)
        loaded.origin.pop(dotted, None)
    else:
        node[parts[-1]] = value
        loaded.origin[dotted] = label
