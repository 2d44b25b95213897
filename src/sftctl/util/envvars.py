"""Environment tweaks sftctl makes for its own process, and undoes for the runs it starts."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

PLUGINS_VAR = "PYDANTIC_DISABLE_PLUGINS"
MARK = "SFTCTL_SET_PYDANTIC_DISABLE_PLUGINS"


def quiet_pydantic_plugins(env: MutableMapping[str, str] = os.environ) -> None:
    """pydantic scans every installed distribution's entry points for plugins on first
    use: 0.1-0.2 s in an ms-swift environment, on every `render` and `validate`.
    sftctl's own models need no plugins, so the scan is switched off for sftctl alone."""
    if PLUGINS_VAR not in env:
        env[PLUGINS_VAR] = "__all__"
        env[MARK] = "1"


def undo(env: MutableMapping[str, str]) -> None:
    """Give a child process the environment the user had."""
    if env.pop(MARK, None) is not None:
        env.pop(PLUGINS_VAR, None)
