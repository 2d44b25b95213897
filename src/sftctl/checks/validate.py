"""``sftctl validate``: every problem of every target, config and (optionally) host."""

from __future__ import annotations

import os
from collections.abc import Sequence

from sftctl.assets import builtin_paths
from sftctl.config.resolve import Overrides, resolve
from sftctl.errors import Problem, SftctlError


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
            from sftctl.checks import host as hostcheck
            from sftctl.resources.leases import holders

            gpu_run = bool(resolved.config.launch.gpus) and not resolved.layout.use_cpu
            out[target] = resolved.warnings + hostcheck.check(
                resolved,
                os.environ,
                path_of=builtin_paths(resolved),
                view=picker.view if gpu_run else None,
                leased=holders(os.environ, picker.view) if gpu_run else None,
            )
        else:
            out[target] = list(resolved.warnings)
    return out
