"""sftctl's own folders: the user's presets and the cache, each overridable by a variable.

platformdirs decides where they live; it is imported only off Linux, where the answer
needs it: on Linux it is the XDG folder, read directly (start-up time matters here).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _platform_dir(kind: str) -> Path:
    if sys.platform.startswith("linux"):
        var, default = ("XDG_CONFIG_HOME", ".config") if kind == "config" else ("XDG_CACHE_HOME", ".cache")
        return Path(os.environ.get(var) or Path.home() / default) / "sftctl"
    import platformdirs

    return Path(
        platformdirs.user_config_dir("sftctl") if kind == "config" else platformdirs.user_cache_dir("sftctl")
    )


def user_preset_dir() -> Path:
    """The user's own presets: ``$SFTCTL_PRESETS``, else ``<config dir>/presets``."""
    env = os.environ.get("SFTCTL_PRESETS")
    return Path(env).expanduser() if env else _platform_dir("config") / "presets"


def cache_dir() -> Path:
    """Root of sftctl's cache: ``$SFTCTL_CACHE``, else the user cache folder."""
    env = os.environ.get("SFTCTL_CACHE")
    return Path(env).expanduser() if env else _platform_dir("cache")
