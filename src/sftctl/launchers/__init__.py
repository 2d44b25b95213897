"""Launchers: from a validated run to the exact command, one module per launcher.

Each launcher returns a :class:`Command` (environment to set, variables to remove,
argv). They know nothing of YAML or of how the command is shown or started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sftctl.swift import catalog
from sftctl.swift.values import tokens

if TYPE_CHECKING:
    from sftctl.config.resolve import Resolved


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


def build(
    resolved: Resolved, path_of: Mapping[str, str] | None = None, master_port: int | None = None
) -> Command:
    """The launch command of ``resolved``. ``path_of`` maps builtin refs to local paths;
    ``master_port`` is the port chosen at launch when the config fixes none."""
    from sftctl.launchers import swift, torchrun

    launch = resolved.config.launch
    env: dict[str, str] = {}
    if launch.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in launch.gpus)
    port = launch.master_port or master_port
    flags = swift_args(resolved, path_of)
    module = torchrun if launch.launcher == "torchrun" else swift
    cmd = module.command(launch, flags, port)
    env.update(cmd.env)
    env.update({k: _expand_env(v, path_of or {}) for k, v in resolved.config.env.items()})
    return Command(env=env, argv=cmd.argv, unset=cmd.unset)
