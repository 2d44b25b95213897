"""Pure rendering: a validated run and its Command -> sh, json or swift-yaml text.

The launchers build argv lists, never a shell string; ``to_sh`` quotes every token
with shlex so ``bash script`` runs exactly that argv.
"""

from __future__ import annotations

import difflib
import json
import shlex
from pathlib import Path
from typing import Any

from sftctl import __version__
from sftctl.checks.registry import report
from sftctl.config.resolve import Resolved
from sftctl.config.yamlio import dump
from sftctl.errors import ConfigError
from sftctl.launchers import Command
from sftctl.swift.values import as_texts
from sftctl.util.text import one_line

FORMATS = ("sh", "json", "swift-yaml")


def header_lines(resolved: Resolved) -> list[str]:
    """Comment lines naming what was rendered, from what, for which ms-swift."""
    source = resolved.loaded.preset or resolved.loaded.target
    kind = "preset" if resolved.loaded.preset else "config"
    lines = [
        f"Rendered by sftctl {__version__} from {kind} {source} "
        f"for ms-swift {resolved.major}.x ({resolved.version_source})",
        f"Layout: {resolved.layout.description}",
    ]
    if resolved.config.description:
        lines.append(f"Purpose: {resolved.config.description.strip().splitlines()[0]}")
    # File names and descriptions are the user's text: they must not end the comment.
    return [one_line(line) for line in lines]


def _reports_to(resolved: Resolved, tracker: str) -> bool:
    value = resolved.args.get("report_to")
    return tracker in as_texts(value)


def to_sh(resolved: Resolved, cmd: Command) -> str:
    """A bash script: env first, every token quoted, then exec of the argv."""
    lines = ["#!/usr/bin/env bash"]
    lines += [f"# {line}" for line in header_lines(resolved)]
    lines.append("set -euo pipefail")
    if cmd.unset:
        lines.append(f"unset {' '.join(cmd.unset)}")
    for name, value in cmd.env.items():
        lines.append(f"export {name}={shlex.quote(value)}")
    if _reports_to(resolved, "swanlab"):
        # The token is read from the environment at run time, never written here.
        lines.append(
            'if [ -z "${SWANLAB_API_KEY:-}" ] && [ -n "${SWANLAB_TOKEN:-}" ]; then '
            'export SWANLAB_API_KEY="$SWANLAB_TOKEN"; fi'
        )
    body = _wrap(cmd.argv)
    lines.append("exec " + body)
    return "\n".join(lines) + "\n"


def _wrap(argv: list[str]) -> str:
    """One flag and its values per line, for a reader; bash joins the lines back."""
    parts: list[str] = []
    current: list[str] = []
    for tok in argv:
        if (
            tok.startswith("--")
            and current
            and current[0].startswith("--")
            or (tok.startswith("--") and current and current[-1] == "sft")
        ):
            parts.append(" ".join(shlex.quote(t) for t in current))
            current = []
        current.append(tok)
    if current:
        parts.append(" ".join(shlex.quote(t) for t in current))
    return " \\\n    ".join(parts)


def to_json(resolved: Resolved, cmd: Command) -> str:
    """``{"env", "argv", "unset", ...}`` for CI dry runs."""
    doc: dict[str, Any] = {
        "env": cmd.env,
        "argv": cmd.argv,
        "unset": cmd.unset,
        "swift_version": resolved.major,
        "target": resolved.loaded.target,
        "layout": resolved.layout.mode,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_swift_yaml(resolved: Resolved, cmd: Command) -> str:
    """ms-swift's own config file (``swift sft FILE.yaml``), with the launch line on top."""
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in cmd.env.items())
    launcher = cmd.argv[: cmd.argv.index("sft") + 1]
    head = [f"# {line}" for line in header_lines(resolved)]
    head.append(one_line(f"# Run: {prefix + ' ' if prefix else ''}{' '.join(launcher)} THIS_FILE.yaml"))
    if cmd.unset:
        head.append(f"# with {', '.join(cmd.unset)} unset")
    return "\n".join(head) + "\n" + dump(dict(resolved.args))


def text(resolved: Resolved, cmd: Command, fmt: str) -> str:
    """``cmd`` in one of :data:`FORMATS` (checked by the caller)."""
    if fmt == "json":
        return to_json(resolved, cmd)
    if fmt == "swift-yaml":
        return to_swift_yaml(resolved, cmd)
    return to_sh(resolved, cmd)


def check_drift(path: Path, text: str) -> None:
    """Raise when ``path`` differs from ``text`` (the rendering), with a diff."""
    try:
        current = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            problems=[
                report("R001", str(path), f"cannot read: {exc.strerror}", "render it once with -o FILE")
            ]
        ) from None
    if current != text:
        diff = "".join(
            difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(path), "rendered")
        )
        raise ConfigError(f"{path}: differs from the rendering (fix: re-render with -o {path})\n{diff}")
