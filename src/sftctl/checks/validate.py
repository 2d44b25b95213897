"""``sftctl validate``: every problem of every target, config and (optionally) host."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sftctl.assets import builtin_paths
from sftctl.config.resolve import Overrides, Resolved, resolve
from sftctl.errors import Problem, SftctlError

if TYPE_CHECKING:
    from sftctl.resources.leases import Picker


def validate_many(
    targets: Sequence[str], overrides: Overrides, host: bool = False
) -> dict[str, list[Problem]]:
    """Every problem of every target; ``host`` adds the checks that depend on this machine."""
    out: dict[str, list[Problem]] = {}
    picker = None
    if host:
        from sftctl.resources.gpus import host_view
        from sftctl.resources.leases import Picker

        picker = Picker(os.environ, host_view, take=False)  # --gpus auto: what is free now
    for target in targets:
        try:
            resolved = resolve(target, overrides, picker=picker)
        except SftctlError as exc:
            if not exc.problems:
                raise  # not about this target (a usage error): it stops the whole call
            out[target] = exc.problems
            continue
        if host and picker is not None:
            out[target] = resolved.warnings + _host_problems(resolved, picker)
        else:
            out[target] = list(resolved.warnings)
    return out


def _host_problems(resolved: Resolved, picker: Picker) -> list[Problem]:
    """What `run` would check on this machine, short of taking anything."""
    from sftctl.checks import host as hostcheck
    from sftctl.resources.leases import LeaseDirError, holders

    gpu_run = bool(resolved.config.launch.gpus) and not resolved.layout.use_cpu
    try:
        leased = holders(os.environ, picker.view) if gpu_run else None
    except LeaseDirError:
        leased = None  # run says what is wrong with the lease folder when it takes leases
    paths = builtin_paths(resolved)
    problems = hostcheck.check(
        resolved, os.environ, path_of=paths, view=picker.view if gpu_run else None, leased=leased
    )
    cwd = Path.cwd()
    return problems + hostcheck.check_disk(
        resolved, hostcheck.output_dir_of(resolved, cwd), hostcheck.model_dir_of(resolved, paths, cwd)
    )
