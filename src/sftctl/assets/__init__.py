"""Built-in offline assets (``builtin:`` refs): where they live, without building them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sftctl.swift.values import as_texts

if TYPE_CHECKING:
    from sftctl.config.resolve import Resolved

CACHE_PLACEHOLDER = "<sftctl-cache>"


def builtin_paths(resolved: Resolved) -> dict[str, str]:
    """Where the built-in assets live (or will, once materialised), and the cache folder
    that ``<sftctl-cache>`` in env values stands for."""
    if not _uses_builtins(resolved):
        return {}  # most configs: no need to work out (and import) the cache location
    from sftctl.assets.builder import BUILTINS
    from sftctl.util.dirs import cache_dir

    root = cache_dir()
    out = {CACHE_PLACEHOLDER: str(root)}
    for ref, spec in BUILTINS.items():
        if spec["kind"] == "model":
            out[ref] = str(root / "models" / spec["dirname"])
        else:
            out[ref] = str(root / "datasets" / spec["filename"])
    return out


def _uses_builtins(resolved: Resolved) -> bool:
    values = [v for value in resolved.args.values() for v in as_texts(value)]
    return any(v.startswith("builtin:") for v in values) or any(
        CACHE_PLACEHOLDER in v for v in resolved.config.env.values()
    )
