"""The record of a run: its folder, its log, and a manifest of exactly what ran.

ms-swift creates the run folder itself (``<output_dir>/v<N>-<YYYYMMDD-HHMMSS>/``, or
``<output_dir>`` with ``add_version false``) a few seconds after start. Until it exists,
the log and manifest live in ``<output_dir>/.sftctl/<run-id>/``; once it appears (the
first new ``v<N>-...`` folder), both move into it and the staging folder keeps a pointer.
When ms-swift dies before creating it, they stay in the staging folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from sftctl.config.presets import Loaded
from sftctl.config.yamlio import load_text
from sftctl.errors import ConfigError
from sftctl.swift.outputs import ANNOUNCE, RUN_FOLDER, complete_checkpoints
from sftctl.util.fs import load_json, write_json_atomic

MANIFEST = "sftctl-manifest.json"
MANIFEST_LIMIT = 16 * 2**20  # far beyond any manifest sftctl writes
LOG = "sftctl.log"
STAGING = ".sftctl"
POINTER = "manifest.json"


def staging_name(run_id: str, node: str | None) -> str:
    """The staging folder's name of a run (of one node of a multi-node run)."""
    return run_id if node is None else f"{run_id}-node{node}"


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    """Versions that decide what a run does, from package metadata (nothing imported)."""
    import platform

    from sftctl import __version__

    out: dict[str, str | None] = {"sftctl": __version__, "python": platform.python_version()}
    for dist in ("ms-swift", "torch", "transformers", "deepspeed", "peft"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


@dataclass
class RunRecord:
    """The manifest and log of one launch, and where they currently live."""

    output_dir: Path
    run_id: str
    data: dict[str, Any]
    in_place: bool  # add_version false: ms-swift writes into output_dir itself
    run_dir: Path | None = None
    log_name: str = LOG
    manifest_name: str = MANIFEST
    jsonl_offset: int = 0  # logging.jsonl bytes of an earlier run in the same folder
    node: str | None = None  # a multi-node run's node (its rank): every node keeps its own record
    _before: set[str] = field(default_factory=set)
    _announced: Path | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _created: float = field(default_factory=time.time)
    write_error: str | None = None
    folder_lock: Any = None  # ownership.Held on the run folder once adopted

    @classmethod
    def create(
        cls,
        output_dir: Path,
        data: dict[str, Any],
        in_place: bool,
        run_id: str | None = None,
        node: str | None = None,
    ) -> RunRecord:
        rec = cls(output_dir, run_id or new_run_id(), data, in_place, node=node)
        if node is not None:
            # The nodes share the run folder (ms-swift names it once for all of them).
            rec.log_name, rec.manifest_name = f"sftctl-node{node}.log", f"sftctl-manifest-node{node}.json"
            rec.data["node"] = node
            if node.isdigit():
                rec.data["node_rank"] = int(node)
        rec.staging.mkdir(parents=True, exist_ok=True)
        rec._before = {p.name for p in output_dir.iterdir()} if output_dir.is_dir() else set()
        if in_place and (output_dir / "logging.jsonl").is_file():
            rec.jsonl_offset = (output_dir / "logging.jsonl").stat().st_size
        rec.data.setdefault("run_id", rec.run_id)
        rec.data["staging_dir"] = str(rec.staging)
        rec.data["log"] = str(rec.log)
        rec.write()
        return rec

    @property
    def staging(self) -> Path:
        return self.output_dir / STAGING / staging_name(self.run_id, self.node)

    @property
    def log(self) -> Path:
        return (self.run_dir / self.log_name) if self.run_dir else (self.staging / LOG)

    @property
    def manifest_path(self) -> Path:
        return (self.run_dir / self.manifest_name) if self.run_dir else (self.staging / POINTER)

    def write(self) -> bool:
        """Write the manifest; a failing disk is said once and never stops the run."""
        with self._lock:
            try:
                write_json_atomic(self.manifest_path, self.data)
            except OSError as exc:
                if self.write_error is None:
                    with contextlib.suppress(OSError):
                        print(
                            f"sftctl: cannot write the run's manifest ({exc.strerror}); supervision goes on",
                            file=sys.stderr,
                            flush=True,
                        )
                self.write_error = f"{self.manifest_path}: {exc.strerror}"
                return False
            self.write_error = None
            return True

    def discover(self) -> Path | None:
        """The run folder of this run, once ms-swift has named and created it.

        With add_version false ms-swift names no folder: it writes into output_dir itself,
        and its args.json, written as training starts, tells that this run has begun there."""
        if self.run_dir is None and self._announced is not None and self._announced.is_dir():
            self.adopt(self._announced)
        if self.run_dir is None and self.in_place:
            args = self.output_dir / "args.json"
            with contextlib.suppress(OSError):
                if args.stat().st_mtime >= self._created:
                    self.adopt(self.output_dir)
        return self.run_dir

    def announce(self, line: str) -> None:
        """Watch the command's output for the folder ms-swift says it writes to.

        ms-swift prints `[INFO:swift] output_dir: PATH` as it creates the folder. Reading
        it from this run's own output is exact even when several runs share an output_dir."""
        if self.run_dir is not None or "output_dir: " not in line:
            return
        match = ANNOUNCE.search(line)
        if match and self._announced is None:
            path = Path(match.group(1).strip())
            # ms-swift may print the name a moment before it creates the folder.
            self._announced = path if path.is_absolute() else Path(self.data.get("cwd") or ".") / path
            with contextlib.suppress(OSError):  # the progress thread or finish() retries
                self.discover()

    def _scan(self) -> None:
        """Fallback when the output never named the folder: the first new v<N>-... folder
        that no other run has claimed."""
        if self.in_place:
            if (self.output_dir / "args.json").exists() or (self.output_dir / "logging.jsonl").exists():
                self.adopt(self.output_dir)
            return
        if not self.output_dir.is_dir():
            return
        for cand in sorted(
            p
            for p in self.output_dir.iterdir()
            if p.is_dir() and RUN_FOLDER.match(p.name) and p.name not in self._before
        ):
            if not (cand / MANIFEST).exists():
                self.adopt(cand)
                return

    def adopt(self, run_dir: Path) -> None:
        """Move the log and manifest into the run folder; leave a pointer behind."""
        with self._lock:
            if self.run_dir is not None:
                return
            if self.node is None and ((run_dir / MANIFEST).exists() or (run_dir / LOG).exists()):
                # Another run's record is there (a reused output_dir): keep both.
                self.log_name = f"sftctl-{self.run_id}.log"
                self.manifest_name = f"sftctl-manifest-{self.run_id}.json"
            old_log = self.staging / LOG
            self.run_dir = run_dir
            if old_log.exists():
                os.replace(old_log, self.log)  # the open log descriptor follows the file
                # `tail -F` on the staging path (what --detach prints) follows it here.
                with contextlib.suppress(OSError):
                    old_log.symlink_to(self.log)
            else:
                self._recover_log(old_log)
            self.data["run_dir"] = str(run_dir)
            self.data["log"] = str(self.log)
            self._hold(run_dir)
            self.write()
            pointer = {"moved_to": str(run_dir), "manifest": str(self.manifest_path), "run_id": self.run_id}
            with contextlib.suppress(OSError):  # the run folder holds the record; the pointer helps find it
                write_json_atomic(self.staging / POINTER, pointer)

    def _hold(self, run_dir: Path) -> None:
        """Hold the run folder itself (as an add_version: false run holds its output_dir):
        a later run pointed at this folder with add_version false is refused while this
        one writes there (out-of-memory recovery trains in it in place)."""
        if self.in_place or run_dir == self.output_dir:
            return  # the output_dir's own lock already covers it
        from sftctl.runtime import ownership

        info = {"pid": os.getpid(), "output_dir": str(run_dir), "started_at": self.data.get("started_at")}
        with contextlib.suppress(ownership.Busy, OSError):
            self.folder_lock = ownership.acquire(
                run_dir / STAGING, self.run_id, exclusive=self.node is None, info=info
            )

    def release(self) -> None:
        """Let go of the run folder (at the end of the run)."""
        if self.folder_lock is not None:
            self.folder_lock.release()
            self.folder_lock = None

    def _recover_log(self, old_log: Path) -> None:
        """The staging folder was deleted under a running run: its log lives on only as
        this process's open descriptor. Copy what it holds into the run folder and point
        that descriptor at the new file, so nothing written before or after is lost."""
        gone = f"{old_log} (deleted)"
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if os.readlink(f"/proc/self/fd/{name}") != gone:
                    continue
                fd = int(name)
                with open(f"/proc/self/fd/{fd}", "rb") as src, open(self.log, "ab") as dst:
                    shutil.copyfileobj(src, dst)
                new = os.open(self.log, os.O_WRONLY | os.O_APPEND)
                os.dup2(new, fd)
                os.close(new)
                with contextlib.suppress(OSError):
                    print(
                        f"sftctl: the staging folder was deleted; the log goes on in {self.log}",
                        file=sys.stderr,
                    )
                return

    def finish(self, **fields: Any) -> bool:
        """Record the end; False (with ``write_error`` set) when the disk would not take it."""
        if self.discover() is None:
            self._scan()
        self.data.update(fields)
        self.data["ended_at"] = now_iso()
        folder = self.run_dir
        if folder is not None:
            done = complete_checkpoints(folder)
            self.data["last_checkpoint"] = str(done[-1]) if done else None
        return self.write()


def base_manifest(**fields: Any) -> dict[str, Any]:
    """The fields every manifest starts with."""
    return {
        "host": socket.gethostname(),
        "versions": versions(),
        "started_at": now_iso(),
        "status": "starting",
        **fields,
    }


# The fields sftctl reads back, with the types it writes; a record with any other type is
# not one of sftctl's (hand-edited, truncated by a tool, or crafted) and is refused.
_FIELDS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        ("status", "run_id", "run_dir", "staging_dir", "config_yaml", "moved_to", "manifest", "started_at",
         "ended_at", "cwd", "target", "log", "last_checkpoint", "host", "layout", "gpus", "preset", "reason",
         "node",
         "preset_hash"),
        (str, type(None)),
    ),
    **dict.fromkeys(("pid", "leader_start", "supervisor_pid", "supervisor_start", "exit_code", "signal",
                     "node_rank", "nnodes", "peak_rss_bytes", "peak_process_rss_bytes", "peak_gpu_bytes"),
                    (int, type(None))),
    **dict.fromkeys(
        ("peak_gpu_memory_gib", "first_loss", "last_loss", "wall_seconds", "steps_per_second"),
        (int, float, type(None)),
    ),
    **dict.fromkeys(("argv", "unset", "descendants", "files", "watchdog", "attempts"), (list, type(None))),
    **dict.fromkeys(
        ("env", "config", "versions", "estimate", "peak_gpu_bytes_per_process"), (dict, type(None))
    ),
    "grace": (int, float, type(None)),
    "swift_version": (int, str, type(None)),
}  # fmt: skip


def shape_problem(data: Any) -> str | None:
    """Why ``data`` is not a record sftctl wrote, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}"
    for key, types in _FIELDS.items():
        if key in data and (
            not isinstance(data[key], types) or isinstance(data[key], bool) and bool not in types
        ):
            return f"its {key} is a {type(data[key]).__name__}"
    for key in ("peak_rss_bytes", "peak_process_rss_bytes", "peak_gpu_bytes", "peak_gpu_memory_gib"):
        value = data.get(key)
        if value is not None and not 0 <= value <= 2**62:
            return f"its {key} is out of range"
    for key in ("argv", "unset", "files"):
        if any(not isinstance(item, str) for item in data.get(key) or []):
            return f"its {key} holds something other than text"
    if any(not isinstance(v, str) for v in (data.get("env") or {}).values()):
        return "its env holds something other than text"
    if any(not isinstance(row, dict) for row in data.get("attempts") or []):
        return "its attempts hold something other than records"
    return None


def _no_manifest(path: Path, why: str) -> ConfigError:
    from sftctl.checks.registry import report

    return ConfigError(
        problems=[
            report("R002", str(path), why, "give a run folder (v<N>-...) or its output_dir/.sftctl/<id>")
        ]
    )


def read_manifest(path: Path, _seen: frozenset[str] = frozenset()) -> tuple[Path, dict[str, Any]]:
    """The manifest of a run folder, a staging folder, or a manifest file; follows pointers.

    Anything else (missing, unreadable, not JSON, not a record, a pointer loop) is R002."""
    try:
        if path.is_file():
            candidates = [path]
        else:
            extra = sorted(path.glob("sftctl-manifest-*.json"), key=lambda p: p.stat().st_mtime)
            candidates = [path / POINTER, *reversed(extra), path / MANIFEST]
        cand = next((c for c in candidates if c.is_file()), None)
        if cand is None:
            raise _no_manifest(path, "no sftctl manifest here")
        if os.path.realpath(cand) in _seen:
            raise _no_manifest(path, "the manifest's pointer leads back to itself")
        data = load_json(cand, MANIFEST_LIMIT)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else f"{exc.__class__.__name__}: {exc}"
        raise _no_manifest(path, f"not a readable sftctl manifest ({why})") from None
    wrong = shape_problem(data)
    if wrong is not None:
        raise _no_manifest(cand, f"not an sftctl manifest ({wrong})")
    if "moved_to" in data:
        target = data.get("manifest") or data.get("moved_to")
        if not isinstance(target, str):
            raise _no_manifest(cand, "a pointer that names no manifest")
        return read_manifest(Path(target), _seen | {os.path.realpath(cand)})
    return cand, data


def effective_status(data: dict[str, Any]) -> str:
    """The recorded status, or ``lost`` for a run recorded as running whose supervisor is
    gone (killed hard before it could record anything)."""
    from sftctl.runtime.ownership import is_sftctl
    from sftctl.runtime.supervise import proc_ref

    status = str(data.get("status", ""))
    if status not in ("starting", "running"):
        return status
    pid, start = data.get("supervisor_pid"), data.get("supervisor_start")
    ref = proc_ref(pid) if isinstance(pid, int) else None
    # A live process that is not an sftctl run (a crafted or stale record) is not its supervisor.
    return status if ref is not None and ref.start == start and is_sftctl(ref.pid) else "lost"


def list_runs(output_dir: Path, broken: list[str] | None = None) -> list[dict[str, Any]]:
    """Every run sftctl recorded under ``output_dir``, oldest first; records that cannot
    be read are named in ``broken`` (path and why) instead."""
    seen: dict[str, dict[str, Any]] = {}
    paths = [*output_dir.glob("*/sftctl-manifest*.json"), *output_dir.glob("sftctl-manifest*.json")]
    paths += list((output_dir / STAGING).glob(f"*/{POINTER}"))
    for path in paths:
        try:
            data = load_json(path, MANIFEST_LIMIT)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            if broken is not None:
                broken.append(f"{path}: not readable ({exc.__class__.__name__})")
            continue
        wrong = shape_problem(data)
        if wrong is not None:
            if broken is not None:
                broken.append(f"{path}: not an sftctl manifest ({wrong})")
            continue
        if "moved_to" in data:
            continue
        data["_manifest"] = str(path)
        key = str(data.get("run_id") or path)
        node = data.get("node")
        if isinstance(node, str) and key in seen:
            # One row per multi-node run: node 0's record, with every node's status.
            first = seen[key]
            statuses = {**first.get("node_status", {}), node: data.get("status")}
            if node == "0":
                first = data
            seen[key] = {**first, "node_status": statuses, "nodes": len(statuses)}
            continue
        if isinstance(node, str):
            data = {**data, "node_status": {node: data.get("status")}, "nodes": 1}
        seen[key] = data
    return sorted(seen.values(), key=lambda d: str(d.get("started_at", "")))


def loaded_from_record(run_dir: Path, data: dict[str, Any] | None = None) -> Loaded:
    """The config a recorded run last ran with (after out-of-memory recovery: its last
    attempt's), as a loaded config to resolve again."""
    if data is None:
        run_dir, data = read_manifest(run_dir)
    if not data.get("config_yaml"):
        from sftctl.checks.registry import report

        raise ConfigError(
            problems=[report("R002", str(run_dir), "the record holds no config", "start it with sftctl run")]
        )
    # The YAML keeps numbers as they were written (1e-4), unlike the JSON copy.
    config = load_text(str(data["config_yaml"]), str(run_dir))
    args = config.get("args")
    config["args"] = dict(args) if isinstance(args, dict) else {}
    return Loaded(
        target=str(run_dir),
        preset=data.get("preset"),
        data=config,
        origin={f"args.{k}": "manifest" for k in config["args"]},
        recorded_digest=data.get("preset_hash"),
        recorded_files=list(data.get("files") or []),
    )
