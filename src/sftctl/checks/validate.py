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
    for target in targets:
        try:
            resolved = resolve(target, overrides)
        except SftctlError as exc:
            if not exc.problems:
                raise  # not about this target (a usage error): it stops the whole call
            out[target] = exc.problems
            continue
        if host:
            from sftctl.checks import host as hostcheck

            out[target] = hostcheck.check(resolved, os.environ, path_of=builtin_paths(resolved))
        else:
            out[target] = []
    return out
