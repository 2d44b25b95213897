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


# Multi-node defaults: every node must agree on the port, so none is picked at launch; a
# rank that dies or hangs must end the others within a finite time (ms-swift's own
# ddp_timeout is 18,000,000 s), and NCCL must turn a failed collective into an error.
MULTI_NODE_PORT = 29500
DDP_TIMEOUT = 1800
NCCL_ERRORS = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}


def run_id_of(resolved: Resolved) -> str:
    """A multi-node run's id, the same on every node: ``launch.rdzv_id``, or one derived
    from the config (all but the node's rank)."""
    import hashlib
    import json

    launch = resolved.config.launch
    if launch.rdzv_id:
        return launch.rdzv_id
    doc = resolved.document()
    doc.get("launch", {}).pop("node_rank", None)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
    return f"sftctl-{digest[:12]}"


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
    if launch.nnodes > 1:
        port = launch.master_port or MULTI_NODE_PORT
        env.update(NCCL_ERRORS)
        if resolved.args.get("ddp_timeout") is None:
            flags += ["--ddp_timeout", str(DDP_TIMEOUT)]
    module = torchrun if launch.launcher == "torchrun" else swift
    cmd = (
        torchrun.command(launch, flags, port, run_id_of(resolved))
        if module is torchrun
        else swift.command(launch, flags, port)
    )
    env.update(cmd.env)
    env.update({k: _expand_env(v, path_of or {}) for k, v in resolved.config.env.items()})
    return Command(env=env, argv=cmd.argv, unset=cmd.unset)
