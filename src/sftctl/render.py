"""Pure rendering: a validated run -> the command (env, argv, unset), and its text forms.

The renderer returns argv lists, never a shell string; ``to_sh`` quotes every token
with shlex so ``bash script`` runs exactly that argv.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sftctl import __version__, catalog
from sftctl.resolve import Resolved
from sftctl.values import as_texts, tokens
from sftctl.yamlio import dump

# Under torchrun, each rank runs `swift sft`; an inherited NPROC_PER_NODE or NNODES
# would make every rank start a nested torchrun.
TORCHRUN_UNSET = ("NPROC_PER_NODE", "NNODES")


@dataclass(frozen=True)
class Command:
    """The exact command: environment to set, variables to remove, and argv."""

    env: dict[str, str]
    argv: list[str]
    unset: list[str] = field(default_factory=list)

    def apply_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: ``base`` less ``unset``, plus ``env``."""
        out = {k: v for k, v in base.items() if k not in self.unset}
        out.update(self.env)
        return out


def swift_args(resolved: Resolved, path_of: Mapping[str, str] | None = None) -> list[str]:
    """``--name value...`` tokens for every argument, in config order."""
    cat = catalog.load(resolved.major)
    out: list[str] = []
    for name, value in resolved.args.items():
        if value is None:
            continue
        if path_of:
            value = _substitute(value, path_of)
        arg = cat.get(name)
        out.append(f"--{name}")
        out.extend(tokens(value, arg.is_list if arg else isinstance(value, list)))
    return out


def _substitute(value: Any, path_of: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return path_of.get(value, value)
    if isinstance(value, list):
        return [path_of.get(v, v) if isinstance(v, str) else v for v in value]
    return value


def _expand_env(value: str, path_of: Mapping[str, str]) -> str:
    for key, path in path_of.items():
        if key.startswith("<"):
            value = value.replace(key, path)
    return value


def command(
    resolved: Resolved, path_of: Mapping[str, str] | None = None, master_port: int | None = None
) -> Command:
    """Render the launch command. ``path_of`` maps builtin refs to local paths;
    ``master_port`` is the port chosen at launch when the config fixes none."""
    launch = resolved.config.launch
    env: dict[str, str] = {}
    unset: list[str] = []
    if launch.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in launch.gpus)
    port = launch.master_port or master_port
    flags = swift_args(resolved, path_of)
    if launch.launcher == "torchrun":
        unset.extend(TORCHRUN_UNSET)
        argv = ["torchrun", f"--nproc_per_node={launch.nproc_per_node}"]
        if port:
            argv.append(f"--master_port={port}")
        argv += ["--no_python", "swift", "sft", *flags]
    else:
        if launch.nproc_per_node > 1:
            env["NPROC_PER_NODE"] = str(launch.nproc_per_node)
            if port:
                env["MASTER_PORT"] = str(port)
        else:
            # One process: an inherited NPROC_PER_NODE would switch ms-swift to torchrun.
            unset.append("NPROC_PER_NODE")
        if launch.nnodes == 1:
            unset.append("NNODES")
        argv = ["swift", "sft", *flags]
    env.update({k: _expand_env(v, path_of or {}) for k, v in resolved.config.env.items()})
    return Command(env=env, argv=argv, unset=unset)


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
    return lines


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
    head.append(f"# Run: {prefix + ' ' if prefix else ''}{' '.join(launcher)} THIS_FILE.yaml")
    if cmd.unset:
        head.append(f"# with {', '.join(cmd.unset)} unset")
    return "\n".join(head) + "\n" + dump(dict(resolved.args))
