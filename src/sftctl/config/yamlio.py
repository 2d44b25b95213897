"""YAML as users write it: YAML 1.2 scalars, no duplicate keys, numbers kept as written.

PyYAML implements YAML 1.1, where ``no`` is false and ``1e-4`` is a string; ms-swift
users write ``eval_strategy: no`` and ``learning_rate: 1e-4`` and mean a string and a
float. Duplicate keys are silently collapsed by PyYAML; here they are errors.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sftctl.checks.registry import report
from sftctl.errors import ConfigError


class WrittenFloat(float):
    """A float that remembers its source text, so ``1e-4`` renders as ``1e-4``."""

    text: str

    def __new__(cls, text: str) -> WrittenFloat:
        obj = super().__new__(cls, float(text.replace("_", "")))
        obj.text = text
        return obj

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[WrittenFloat], tuple[str]]:
        return (WrittenFloat, (self.text,))


_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


# libyaml's parser when PyYAML was built with it (several times faster), else PyYAML's own.
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """A safe loader with YAML 1.2 core-schema scalars and duplicate-key detection."""


# Start from no implicit resolvers, then add the YAML 1.2 core schema.
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789.n"))


def _construct_bool(loader: _Loader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    return int(text, 0) if text[:2] in ("0o", "0x") else int(text)


def _construct_float(loader: _Loader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node))
    if text.lower().lstrip("+-") in (".inf", ".nan"):
        return float(text.replace(".", ""))
    return WrittenFloat(text)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            mark = key_node.start_mark
            raise _BadKey(
                f"a key must be a plain name, not a {type(key).__name__}",
                mark.line + 1,
                mark.column + 1,
            )
        if key in result:
            mark = key_node.start_mark
            raise _DuplicateKey(str(key), mark.line + 1, mark.column + 1)
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _BadKey(Exception):
    def __init__(self, what: str, line: int, column: int) -> None:
        super().__init__(what)
        self.what, self.line, self.column = what, line, column


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, column: int) -> None:
        super().__init__(key)
        self.key, self.line, self.column = key, line, column


# More values than any real config holds; aliases that expand beyond it are refused
# (a 1 KB "billion laughs" document would otherwise take gigabytes downstream).
MAX_VALUES = 100_000


class TooLarge(Exception):
    """A document whose aliases expand to more than MAX_VALUES values, or refer to themselves."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Count the values the document stands for once its aliases are expanded."""
    sizes: dict[int, int] = {}
    started: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > MAX_VALUES:
                raise TooLarge(f"its aliases expand to more than {MAX_VALUES:,} values")
            continue
        if key in sizes:
            continue
        if key in started:
            raise TooLarge("an alias refers to the node that contains it")
        started.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _load(text: str) -> Any:
    """Parse with the YAML 1.2 loader, refusing documents whose aliases blow up."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_scalar(text: str) -> Any:
    """Parse one value the way a YAML file would (used for ``--set`` and flow lists)."""
    try:
        return _load(text)
    except (yaml.YAMLError, _DuplicateKey, _BadKey, TooLarge):
        return text


def load_text(text: str, source: str) -> dict[str, Any]:
    """Load a config document; the top level must be a non-empty mapping."""
    try:
        data = _load(text)
    except TooLarge as exc:
        raise ConfigError(
            problems=[report("F011", source, f"refused: {exc}", "write the values out; keep aliases small")]
        ) from None
    except _DuplicateKey as exc:
        raise ConfigError(
            problems=[
                report(
                    "F002",
                    f"{source}:{exc.line}:{exc.column}",
                    f"duplicate key '{exc.key}' (YAML would silently keep only the last one)",
                    "keep one of them",
                )
            ]
        ) from None
    except _BadKey as exc:
        raise ConfigError(
            problems=[
                report(
                    "F003",
                    f"{source}:{exc.line}:{exc.column}",
                    exc.what,
                    "write keys as plain names, e.g. learning_rate:",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            problems=[report("F001", where, f"malformed YAML: {what}", "fix the syntax at that line")]
        ) from None
    if data is None:
        raise ConfigError(
            problems=[
                report("F004", source, "the file is empty", "write a mapping, e.g. 'extends: cpu-smoke'")
            ]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            problems=[
                report(
                    "F005",
                    source,
                    f"the top level must be a mapping of keys, not a {type(data).__name__}",
                    "write 'key: value' lines (description, extends, launch, env, args)",
                )
            ]
        )
    return data


class _Dumper(yaml.SafeDumper):
    """YAML 1.1 output (what ms-swift's PyYAML reads): typed-looking strings quoted."""


class _Dumper12(yaml.SafeDumper):
    """YAML 1.2 output for people: numbers exactly as written."""


_Dumper12.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def _represent_written_11(dumper: _Dumper, value: WrittenFloat) -> yaml.ScalarNode:
    # YAML 1.1 reads 1e-4 as a string; write a form it reads as a float.
    text = value.text if _resolves_to_float_11(value.text) else repr(float(value))
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


def _resolves_to_float_11(text: str) -> bool:
    return isinstance(yaml.safe_load(text), float)


def _represent_written_12(dumper: _Dumper12, value: WrittenFloat) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:float", value.text)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Quote strings that a YAML 1.1 or 1.2 reader would turn into bools or numbers.
    style = None
    if any(not (ch.isprintable() or ch in " \n") for ch in value):
        style = '"'  # control characters only survive as escapes in a double-quoted scalar
    elif "\n" in value:
        style = "|"
    elif _looks_typed(value):
        style = "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _looks_typed(value: str) -> bool:
    """A plain scalar a YAML reader would not read back as this very string."""
    if not value or value.strip() != value:
        return False
    try:
        as_11 = yaml.safe_load(value)
    except yaml.YAMLError:
        return True  # not even a plain scalar (a lone quote, say): quote it
    return not isinstance(as_11, str) or as_11 != value or not isinstance(parse_scalar(value), str)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    flat = all(not isinstance(v, (dict, list)) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


for _d in (_Dumper, _Dumper12):
    _d.add_representer(list, _represent_list)
_Dumper.add_representer(WrittenFloat, _represent_written_11)
_Dumper.add_representer(str, _represent_str)
_Dumper12.add_representer(WrittenFloat, _represent_written_12)
_Dumper12.add_representer(str, _represent_str)


def dump(data: Any, *, for_people: bool = False) -> str:
    """Dump YAML: for ms-swift (YAML 1.1 reader) or, with ``for_people``, as written."""
    return yaml.dump(
        data,
        Dumper=_Dumper12 if for_people else _Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
