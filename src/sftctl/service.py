"""What the commands do, in library form: the CLI calls these and prints the results."""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sftctl.errors import ConfigError, Problem, SftctlError, UsageError
from sftctl.resolve import Overrides, Resolved, resolve
from sftctl.values import as_texts

FORMATS = ("sh", "json", "swift-yaml")


def render_text(target: str, overrides: Overrides, fmt: str) -> str:
    """Resolve ``target`` and render it in ``fmt``."""
    from sftctl import render

    if fmt not in FORMATS:
        raise UsageError(f"--format: unknown format '{fmt}' (fix: use one of {', '.join(FORMATS)})")
    resolved = resolve(target, overrides)
    cmd = render.command(resolved, builtin_paths(resolved))
    if fmt == "json":
        return render.to_json(resolved, cmd)
    if fmt == "swift-yaml":
        return render.to_swift_yaml(resolved, cmd)
    return render.to_sh(resolved, cmd)


CACHE_PLACEHOLDER = "<sftctl-cache>"


def builtin_paths(resolved: Resolved) -> dict[str, str]:
    """Where the built-in assets live (or will, once materialised), and the cache folder
    that ``<sftctl-cache>`` in env values stands for."""
    if not _uses_builtins(resolved):
        return {}  # most configs: no need to work out (and import) the cache location
    from sftctl.assets.builder import BUILTINS, cache_dir

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


def check_drift(path: Path, text: str) -> None:
    """Raise when ``path`` differs from ``text`` (the rendering), with a diff."""
    try:
        current = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            problems=[Problem(str(path), f"cannot read: {exc.strerror}", "render it once with -o FILE")]
        ) from None
    if current != text:
        diff = "".join(
            difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(path), "rendered")
        )
        raise ConfigError(f"{path}: differs from the rendering (fix: re-render with -o {path})\n{diff}")


def write_atomic(path: Path, text: str, executable: bool = False) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if executable:
            os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate_many(
    targets: Sequence[str], overrides: Overrides, host: bool = False
) -> dict[str, list[Problem]]:
    """Every problem of every target; ``host`` adds the checks that depend on this machine."""
    out: dict[str, list[Problem]] = {}
    for target in targets:
        try:
            resolved = resolve(target, overrides)
        except UsageError:
            raise
        except SftctlError as exc:
            out[target] = exc.problems or [Problem("", str(exc))]
            continue
        if host:
            from sftctl import hostcheck

            out[target] = hostcheck.check(resolved, os.environ, path_of=builtin_paths(resolved))
        else:
            out[target] = []
    return out
