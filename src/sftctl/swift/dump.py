"""Dump the argument catalog of the installed ms-swift ``swift sft`` command.

Developer tool: ``python -m sftctl.swift.dump OUT.json`` (run by
``scripts/gen_catalogs.py`` in a scratch venv per ms-swift major version).
ms-swift, transformers and torch are imported inside :func:`dump_catalog` only,
so importing this module (or sftctl's CLI) never pulls them in.

The catalog mirrors what ``transformers.HfArgumentParser`` builds over the
argument dataclass that ``swift sft`` parses (4.x ``swift.arguments.SftArguments``,
3.x ``swift.llm.TrainArguments``), one entry per argparse ``dest``:

``flags``      every option string for the dest, including the ``--no_<name>``
               negations that HfArgumentParser adds for booleans defaulting to True
``type``       normalised: "str" | "int" | "float" | "bool" | "json"
``py_type``    the dataclass field's annotation in one spelling for both majors
               (``str | None``, ``list[str]``, ``Literal['a', None]``)
``nargs``      argparse's nargs ("+", "*", "?" or null)
``choices``    list or null
``default``    JSON value; odd objects as their repr, dataclass MISSING as null
``required``   argparse's required
``negatable``  true when ``--no_<name>`` exists
``help``       the field's help text (a ``choices: [...]`` list in it sorted)
``help_choices`` the sorted names listed as ``choices: [...]`` in the help, or null:
               tuner_type/train_type, model_type, template, loss_func. argparse does
               not check them, ms-swift does later (``Unknown tuner_type: ...``)

Defaults and help are scrubbed of machine-specific text (see :func:`_scrub`):
the dump must be identical on every machine. Checked for 3.12.6 and 4.6.0: no
default or help holds the home, working or venv directory, and no default reads
the environment (HOME, cwd, USE_HF, LOCAL_RANK, CUDA_VISIBLE_DEVICES, HF_HOME,
MODELSCOPE_CACHE varied: same dump). The one unstable text was the set-ordered
tuner_type/train_type list in help, now sorted. The scrub stays as a guard.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import json
import os
import re
import sys
import typing
from contextlib import AbstractContextManager, nullcontext
from typing import Any

_JSON_SCALARS = (str, int, float, bool, type(None))


def _load_args_class() -> tuple[type, str, int, AbstractContextManager[Any]]:
    """Return (argument dataclass, swift version, major, type-hint patch context).

    Both 3.x and 4.x build their parser inside ``swift.utils.utils._patch_get_type_hints``
    (it turns ``Optional[Union[str, dict]]`` into ``Optional[Union[dict, str]]`` so that
    HfArgumentParser keeps such fields as ``str``, parsed with json later); do the same.
    """
    swift = importlib.import_module("swift")
    version = str(getattr(swift, "__version__", "0"))
    major = int(version.split(".")[0])
    cls: type
    if major >= 4:
        cls = importlib.import_module("swift.arguments").SftArguments
    else:
        cls = importlib.import_module("swift.llm").TrainArguments
    ctx: AbstractContextManager[Any] = nullcontext()
    patch = getattr(importlib.import_module("swift.utils.utils"), "_patch_get_type_hints", None)
    if patch is not None:
        ctx = patch()
    return cls, version, major, ctx


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is typing.Union or type(tp).__name__ == "UnionType"


def _type_repr(tp: Any) -> str:
    """One spelling for an annotation, whatever the source wrote.

    ``Optional[X]``, ``Union[X, None]`` and ``X | None`` all read ``X | None``;
    ``List[str]`` reads ``list[str]``; typing's prefixes are dropped.
    """
    if tp is type(None) or tp is None:
        return "None"
    if _is_union(tp):
        return " | ".join(_type_repr(a) for a in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in typing.get_args(tp)) + "]"
    if origin is not None:
        args = typing.get_args(tp)
        name = getattr(origin, "__name__", None) or _type_repr(origin)
        if not args:
            return str(name)
        return f"{name}[" + ", ".join(_type_repr(a) for a in args) + "]"
    if isinstance(tp, type):
        return tp.__name__
    text = re.sub(r"\btyping(_extensions)?\.", "", repr(tp))
    return re.sub(r"<class '([\w.]+)'>", r"\1", text)


def _contains_dict(tp: Any) -> bool:
    if tp is dict or typing.get_origin(tp) is dict:
        return True
    if isinstance(tp, type) and issubclass(tp, dict):
        return True
    if _is_union(tp):
        return any(_contains_dict(a) for a in typing.get_args(tp))
    return False


def _home_dirs() -> list[str]:
    dirs = {os.path.expanduser("~"), os.getcwd(), sys.prefix}
    dirs |= {os.path.realpath(d) for d in list(dirs)}
    # The longest first, so that a path under the venv wins over one under /tmp.
    return sorted((d for d in dirs if d and d != "/"), key=len, reverse=True)


def _scrub(text: str, dirs: list[str]) -> str:
    """Replace machine-specific directories in a default or help string."""
    labels = {
        os.path.realpath(os.path.expanduser("~")): "~",
        os.path.expanduser("~"): "~",
        os.getcwd(): "<cwd>",
        os.path.realpath(os.getcwd()): "<cwd>",
        sys.prefix: "<prefix>",
        os.path.realpath(sys.prefix): "<prefix>",
    }
    for d in dirs:
        if d in text:
            text = text.replace(d, labels.get(d, "<dir>"))
    return text


_HELP_CHOICES = re.compile(r"choices: \[((?:'[^'\\]*', )*'[^'\\]*')\]")


def _help_choices(text: str) -> list[str] | None:
    """The list in a help text of the form ``... choices: ['a', 'b']``, sorted.

    ms-swift writes the registered names of tuner_type (3.x train_type), model_type,
    template and loss_func into their help (argparse knows no choices for them, but
    ms-swift rejects other values later). train_type/tuner_type build theirs from a
    set, so their order changes with PYTHONHASHSEED: sorting makes the dump stable.
    """
    m = _HELP_CHOICES.search(text)
    if m is None:
        return None
    return sorted(item[1:-1] for item in m.group(1).split(", "))


def _sort_help_choices(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        items = sorted(m.group(1).split(", "))
        return "choices: [" + ", ".join(items) + "]"

    return _HELP_CHOICES.sub(repl, text)


def _jsonable(value: Any, dirs: list[str]) -> Any:
    if value is dataclasses.MISSING:
        return None
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, dirs)
    if isinstance(value, str):
        return _scrub(value, dirs)
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return "nan"
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, dirs) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v, dirs) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, dirs) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return _scrub(repr(value), dirs)


def _norm_type(action: argparse.Action, field_type: Any) -> str:
    string_to_bool = importlib.import_module("transformers.hf_argparser").string_to_bool
    if field_type is not None and _contains_dict(field_type):
        return "json"
    atype = action.type
    if atype is string_to_bool or field_type is bool:
        return "bool"
    for builtin in (int, float, str, bool):
        if atype is builtin:
            return builtin.__name__
    if action.choices is not None:  # Literal / Enum: typed by its choices
        kinds = {type(c) for c in action.choices}
        if kinds == {bool}:
            return "bool"
        if kinds == {int}:
            return "int"
        if kinds <= {int, float} and kinds:
            return "float"
    return "str"


def dump_catalog() -> dict[str, Any]:
    """Build the catalog of the installed ms-swift's ``swift sft`` arguments."""
    hf_parser_cls = importlib.import_module("transformers").HfArgumentParser
    cls, version, major, ctx = _load_args_class()
    with ctx:
        parser = hf_parser_cls([cls])
        hints = typing.get_type_hints(cls)
    field_types: dict[str, Any] = {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}
    dirs = _home_dirs()

    entries: dict[str, dict[str, Any]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest == argparse.SUPPRESS:
            continue
        dest = action.dest
        negation = isinstance(action, argparse._StoreFalseAction) and all(
            s.lstrip("-").startswith("no") for s in action.option_strings
        )
        if negation and dest in entries:
            entry = entries[dest]
            entry["flags"] = entry["flags"] + list(action.option_strings)
            entry["negatable"] = True
            continue
        ftype = field_types.get(dest)
        choices = None
        if action.choices is not None:
            choices = [
                c if isinstance(c, _JSON_SCALARS) else str(getattr(c, "value", c)) for c in action.choices
            ]
            choices = [_jsonable(c, dirs) for c in choices]
        help_text = _sort_help_choices(_scrub(action.help or "", dirs))
        entries[dest] = {
            "flags": list(action.option_strings),
            "type": _norm_type(action, ftype),
            "py_type": _type_repr(ftype) if ftype is not None else None,
            "nargs": action.nargs,
            "choices": choices,
            "default": _jsonable(action.default, dirs),
            "required": bool(action.required),
            "negatable": False,
            "help": help_text or None,
            "help_choices": _help_choices(help_text),
        }
    return {
        "swift_version": version,
        "major": major,
        "arguments": {k: entries[k] for k in sorted(entries)},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sftctl.swift.dump OUT.json", file=sys.stderr)
        return 2
    catalog = dump_catalog()
    with open(args[0], "w", encoding="utf-8") as fh:
        fh.write(json.dumps(catalog, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{args[0]}: ms-swift {catalog['swift_version']}, {len(catalog['arguments'])} arguments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
