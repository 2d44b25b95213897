"""Launch a validated run for real: refusals before start, supervision of the whole
process tree, a manifest of exactly what ran, and progress while it runs."""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sftctl import launchers
from sftctl.assets import builtin_paths
from sftctl.checks import host as hostcheck
from sftctl.checks.registry import report
from sftctl.config.presets import Loaded
from sftctl.config.resolve import Overrides, Resolved, resolve, resolve_loaded
from sftctl.config.schema import Launch
from sftctl.config.yamlio import dump
from sftctl.errors import ConfigError, LaunchError, Problem, RefusedError, errors_of
from sftctl.resources import gpus, leases, memory
from sftctl.resources.params import human
from sftctl.runtime import ownership, supervise, watchdog
from sftctl.runtime.record import (
    LOG,
    POINTER,
    STAGING,
    RunRecord,
    base_manifest,
    loaded_from_record,
    new_run_id,
    now_iso,
    read_manifest,
    staging_name,
)
from sftctl.swift.outputs import complete_checkpoints
from sftctl.swift.values import as_texts
from sftctl.util import envvars
from sftctl.util.fs import write_json_atomic, write_json_if_absent
from sftctl.util.secrets import redact


@dataclass(frozen=True)
class RunOptions:
    """How `sftctl run` behaves around the training command."""

    detach: bool = False
    resume: bool = False
    grace: float = 30.0
    quiet: bool = False
    run_id: str | None = None  # set by a detached parent for its child
    lock_fd: int | None = None  # the output folder's lock, handed down by a detached parent
    wait: bool = False  # wait for leased GPUs instead of refusing
    force: bool = False  # launch although the memory estimate says it will not fit
    leases: str | None = None  # GPU leases handed down by a detached parent: gpu=fd,...


def _say(text: str) -> None:
    """A status line to stderr. When the terminal is gone (closed window: EIO; a closed
    pipe: EPIPE), sftctl's own output is dropped and the run and its record carry on."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - stays open for the process's life
        sys.stdout = sys.stderr = devnull


def _materialise(resolved: Resolved) -> dict[str, str]:
    """Build or copy the built-in assets the run refers to; map refs to paths."""
    refs = [
        v
        for key in ("model", "dataset")
        for v in as_texts(resolved.args.get(key))
        if v.startswith("builtin:")
    ]
    paths = builtin_paths(resolved)
    if refs:
        from sftctl.assets.builder import materialise

        for ref in refs:
            paths[ref] = str(materialise(ref))
    return paths


def _finished(checkpoint: Path) -> bool:
    """The checkpoint is the end of its training (its trainer state reached max_steps)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return bool(state.get("max_steps")) and int(state["global_step"]) >= int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _resume_point(resolved: Resolved, cwd: Path) -> Path:
    """For ``--resume``: the checkpoint to continue from (set in the args), refused when none."""
    if "resume_from_checkpoint" in resolved.args:
        return Path(str(resolved.args["resume_from_checkpoint"]))
    output_dir = hostcheck.output_dir_of(resolved, cwd)
    last = _last_checkpoint(output_dir, resolved.args.get("add_version", True) is False)
    if last is None:
        raise RefusedError(
            problems=[
                report(
                    "H010",
                    "--resume",
                    f"no complete checkpoint under {output_dir}",
                    "start the run without --resume",
                )
            ]
        )
    resolved.args["resume_from_checkpoint"] = str(last)
    return last


def dry_run_text(target: str, overrides: Overrides, opts: RunOptions, cwd: Path | None = None) -> str:
    """Exactly what ``run`` would start, as a script (the checkpoint ``--resume`` picks included)."""
    from sftctl import render

    # A dry run shows the GPUs free now; it neither leases nor waits for them.
    looking = RunOptions(**{**opts.__dict__, "wait": False})
    resolved = resolve(target, overrides, env=os.environ, picker=_picker(os.environ, looking, take=False))
    if opts.resume:
        _resume_point(resolved, cwd or Path.cwd())
    return render.to_sh(resolved, launchers.build(resolved, builtin_paths(resolved)))


def _last_checkpoint(output_dir: Path, in_place: bool) -> Path | None:
    """The newest complete checkpoint of the latest run under ``output_dir``."""
    folders = (
        [output_dir]
        if in_place
        else sorted((p for p in output_dir.glob("v*-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    )
    for folder in reversed(folders):
        done = complete_checkpoints(folder)
        if done:
            return done[-1]
    return None


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def prepare(
    resolved: Resolved,
    env: Mapping[str, str],
    opts: RunOptions,
    cwd: Path,
    view: gpus.HostGpus | None = None,
    guess: memory.Estimate | None = None,
) -> tuple[launchers.Command, dict[str, str], Path, list[str]]:
    """Every check that can refuse the run, then the exact command. Starts nothing."""
    try:
        paths = _materialise(resolved)
    except OSError as exc:
        raise RefusedError(
            problems=[
                report(
                    "H013",
                    "SFTCTL_CACHE",
                    f"the built-in assets cannot be written to sftctl's cache ({exc})",
                    "set SFTCTL_CACHE to a writable folder",
                )
            ]
        ) from None
    problems = resolved.warnings + hostcheck.check(resolved, env, cwd=cwd, path_of=paths, view=view)
    output_dir = hostcheck.output_dir_of(resolved, cwd)
    problems += hostcheck.check_output_dir(resolved, output_dir, opts.resume)
    launch = resolved.config.launch
    port = launch.master_port
    distributed = _distributed(launch)
    # On several nodes only node 0 listens on master_port (c10d: whichever node hosts it).
    listens = launch.nnodes == 1 or (launch.rdzv == "static" and launch.node_rank in (None, 0))
    taken = port is not None and distributed and listens and supervise.port_in_use(port)
    problems += hostcheck.check_port(port, taken)
    problems += hostcheck.check_disk(resolved, output_dir, hostcheck.model_dir_of(resolved, paths, cwd))
    problems += _check_fit(resolved, view, guess, opts.force)
    if errors_of(problems):
        raise RefusedError(problems=errors_of(problems))
    warnings = [p.render() for p in problems]
    chosen = _port_for(resolved)
    return launchers.build(resolved, paths, master_port=chosen), paths, output_dir, warnings


def estimate_of(resolved: Resolved, cwd: Path) -> memory.Estimate | None:
    """The run's memory estimate, or None when sftctl has no shape for its model."""
    try:
        return memory.for_resolved(resolved, cwd=cwd)
    except (ConfigError, ArithmeticError, ValueError):
        return None  # an estimate that cannot be made never stops a run


def _check_fit(
    resolved: Resolved, view: gpus.HostGpus | None, guess: memory.Estimate | None, force: bool
) -> list[Problem]:
    """A GPU run whose estimated peak exceeds its GPUs' free memory is refused (--force: warned)."""
    listed = resolved.config.launch.gpus
    if resolved.layout.use_cpu or not listed or view is None or not view.described or guess is None:
        return []
    problems = hostcheck.check_fit(guess.peak_bytes, memory.CUDA_CONTEXT_BYTES, list(listed), view)
    if force:
        return [replace(p, severity="warning") for p in problems]
    return problems


def child_env(cmd: launchers.Command, env: Mapping[str, str]) -> dict[str, str]:
    """The training command's environment; SWANLAB_TOKEN feeds SWANLAB_API_KEY."""
    out = cmd.apply_env(env)
    envvars.undo(out)
    exe = hostcheck.find_executable(cmd.argv[0], out)
    if exe and not shutil.which(cmd.argv[0], path=out.get("PATH")):
        # sftctl runs from a venv that is not activated: its bin folder goes first, so
        # `swift` and `torchrun` (and the ranks they start) are the venv's.
        out["PATH"] = os.pathsep.join([str(Path(exe).parent), out.get("PATH", "")])
    if not out.get("SWANLAB_API_KEY") and out.get("SWANLAB_TOKEN"):
        out["SWANLAB_API_KEY"] = out["SWANLAB_TOKEN"]
    return out


def run(
    target: str,
    overrides: Overrides,
    opts: RunOptions,
    cwd: Path | None = None,
    loaded: Loaded | None = None,
) -> int:
    """Check, launch, supervise; return the training command's exit code (or 128+N)."""
    env = dict(os.environ)
    cwd = cwd or Path.cwd()
    picker = _picker(env, opts, take=True)
    try:
        return _checked_run(target, overrides, opts, cwd, loaded, env, picker)
    finally:
        picker.leases.release()


def _node_record(run_dir: Path, node_rank: int | None) -> Path:
    """The record to resume: node K's in a multi-node run folder (which holds one per node)."""
    nodes = sorted(run_dir.glob("sftctl-manifest-node*.json")) if run_dir.is_dir() else []
    if node_rank is not None:
        mine = run_dir / f"sftctl-manifest-node{node_rank}.json"
        if mine in nodes:
            return mine
        why = f"no record of node {node_rank} here" if nodes else "not a multi-node run's folder"
        raise RefusedError(problems=[report("R002", str(run_dir), why, "give the node's own rank, or none")])
    if len(nodes) > 1:
        raise RefusedError(
            problems=[
                report(
                    "R002",
                    str(run_dir),
                    f"a run of {len(nodes)} nodes: each node resumes itself",
                    f"sftctl resume {run_dir} --node-rank K on each node",
                )
            ]
        )
    return run_dir


def _next_rung_for_resume(loaded: Loaded, folder: Path, data: dict[str, Any], overrides: Overrides) -> Loaded:
    """The recorded run's config one rung up the out-of-memory ladder, when recovery is on;
    as it was otherwise."""
    from sftctl.runtime import recover

    env = dict(os.environ)
    resolved = resolve_loaded(loaded, overrides, env=env)
    if resolved.config.launch.on_oom != "recover":
        return loaded
    nxt = recover.next_attempt(resolved, folder, len(data.get("attempts") or []) or 1, env)
    if isinstance(nxt, recover.GiveUp):
        raise RefusedError(problems=[report("R004", str(folder), nxt.why, nxt.fix)])
    _say(f"sftctl: the run ran out of memory; resuming at the next rung: {nxt.rung.why}")
    return nxt.resolved.loaded


def _picker(env: Mapping[str, str], opts: RunOptions, take: bool) -> leases.Picker:
    """Chooses (``--gpus auto``) and leases the run's GPUs; ``take`` false only looks."""
    return leases.Picker(env, gpus.host_view, take=take, wait=opts.wait, say=_say, given=opts.leases)


def _lease_listed(resolved: Resolved, picker: leases.Picker) -> None:
    """Lease the GPUs a config lists (``auto`` leased its own while picking). GPUs this
    machine does not have are left to the host check, which refuses them."""
    listed = resolved.config.launch.gpus
    if resolved.layout.use_cpu or not listed:
        return
    have = picker.view.ids
    if have == []:
        return
    picker.lease([g for g in listed if have is None or g in have])


def _checked_run(
    target: str,
    overrides: Overrides,
    opts: RunOptions,
    cwd: Path,
    loaded: Loaded | None,
    env: dict[str, str],
    picker: leases.Picker,
) -> int:
    visible = gpus.visible_gpus(env)
    resolved = (
        resolve_loaded(loaded, overrides, env=env, visible=visible, picker=picker)
        if loaded is not None
        else resolve(target, overrides, env=env, visible=visible, picker=picker)
    )
    _lease_listed(resolved, picker)
    from sftctl.checks.layout import needs_node_rank

    missing = needs_node_rank(resolved.config.launch)
    if missing is not None:
        raise RefusedError(problems=[missing])
    if opts.resume:
        point = _resume_point(resolved, cwd)
        if _finished(point):
            _say(
                f"sftctl: {point} is the end of its run (all steps trained): "
                "nothing to resume, nothing started"
            )
            return 0
    in_place = resolved.args.get("add_version", True) is False
    multi = resolved.config.launch.nnodes > 1
    # The nodes of one run share its id (each keeps its own record).
    run_id = opts.run_id or (launchers.run_id_of(resolved) if multi else new_run_id())
    folder = hostcheck.output_dir_of(resolved, cwd)
    unusable = hostcheck.check_writable(folder)
    if unusable:
        raise RefusedError(problems=unusable)
    lock = _lock(folder, run_id, in_place, opts.lock_fd)
    node = node_label(resolved.config.launch)
    node_lock = None
    try:
        if node is not None and not opts.detach:
            node_lock = _lock_node(folder, run_id, node)
        picker.leases.record(
            {
                "run_id": run_id,
                "pid": os.getpid(),
                "user": _user_name(),
                "output_dir": str(folder),
                "started_at": now_iso(),
            }
        )
        guess = estimate_of(resolved, cwd)
        cmd, _paths, output_dir, warnings = prepare(resolved, env, opts, cwd, picker.view, guess)
        for warning in warnings:
            _say(f"warning: {warning}")
        if opts.detach:
            # The background supervisor inherits the lock and the GPU leases themselves:
            # no moment without them.
            return _detach(target, overrides, opts, output_dir, run_id, lock, picker.leases, node)
        return _launch(
            target, resolved, cmd, env, opts, cwd, output_dir, run_id, in_place, picker.leases, guess, node
        )
    finally:
        if node_lock is not None:
            node_lock.release()
        lock.release()


NODE_LABEL = "SFTCTL_NODE_LABEL"  # a detached c10d node's label, handed to its supervisor


def node_label(launch: Launch) -> str | None:
    """How a node of a multi-node run names its record: its rank, or (c10d, which assigns
    ranks only at the rendezvous) its host and supervisor."""
    if launch.nnodes == 1:
        return None
    if launch.node_rank is not None:
        return str(launch.node_rank)
    return os.environ.get(NODE_LABEL) or f"{socket.gethostname()}-{os.getpid()}"


def _lock_node(folder: Path, run_id: str, node: str) -> ownership.Held:
    """One supervisor per node of a run: a second one for the same node is refused."""
    try:
        return ownership.acquire(
            folder / STAGING / staging_name(run_id, node), run_id, exclusive=True,
            info={"pid": os.getpid(), "node": node, "started_at": now_iso()},
        )  # fmt: skip
    except ownership.Busy as busy:
        raise RefusedError(
            problems=[
                report(
                    "H022",
                    "launch.node_rank",
                    f"node {node} of run {run_id} is already running (pid {busy.holder.get('pid')})",
                    "give each node its own --node-rank, or stop the other one first",
                )
            ]
        ) from None


def _lock(output_dir: Path, run_id: str, in_place: bool, inherited: int | None) -> ownership.Held:
    """The output folder's lock for this run, or a refusal naming the run that holds it.

    A detached run's parent took the lock and handed its descriptor down (``inherited``):
    the background supervisor keeps it and names itself as the holder."""
    info = {"pid": os.getpid(), "output_dir": str(output_dir), "started_at": now_iso()}
    if inherited is not None:
        lock = ownership.Held(inherited, output_dir / STAGING / ownership.LOCK_NAME)
        if in_place:
            lock.record(run_id, info)
        return lock
    try:
        return ownership.acquire(output_dir / STAGING, run_id, exclusive=in_place, info=info)
    except ownership.Busy as busy:
        who = busy.holder
        if who.get("survivors"):
            what = (
                f"run {who.get('run_id')} lost its supervisor but its processes "
                f"{who['survivors']} still run there"
            )
            fix = f"stop them first: sftctl stop {output_dir / STAGING / str(who.get('run_id'))}"
        elif who.get("run_id"):
            what = f"run {who['run_id']} (pid {who.get('pid')}, started {who.get('started_at')}) writes there"
            fix = "wait for it, stop it, or choose another output_dir"
        else:
            what = "runs are in progress there (add_version: false needs the folder to itself)"
            fix = f"see sftctl runs {output_dir}, or choose another output_dir"
        raise RefusedError(
            problems=[report("H014", "args.output_dir", f"{output_dir} is in use: {what}", fix)]
        ) from None
    except OSError as exc:
        raise RefusedError(
            problems=[
                report(
                    "H012",
                    "args.output_dir",
                    f"cannot lock {output_dir}: {exc.strerror}",
                    "set output_dir to a folder you can write",
                )
            ]
        ) from None


def _launch(
    target: str,
    resolved: Resolved,
    cmd: launchers.Command,
    env: dict[str, str],
    opts: RunOptions,
    cwd: Path,
    output_dir: Path,
    run_id: str,
    in_place: bool,
    held: leases.Leases,
    guess: memory.Estimate | None,
    node: str | None = None,
) -> int:
    """Record, start and supervise the command; the output folder's lock is held by the caller."""

    document = resolved.document()
    record = RunRecord.create(
        output_dir,
        base_manifest(
            target=target,
            preset=resolved.loaded.preset,
            preset_hash=resolved.loaded.digest,
            files=resolved.loaded.files,
            config=document,
            config_yaml=dump(document, for_people=True),
            swift_version=resolved.major,
            env=redact(cmd.env),
            unset=cmd.unset,
            argv=cmd.argv,
            cwd=str(cwd),
            # What the training processes see: the rendered list wins over the inherited one.
            gpus=cmd.env.get("CUDA_VISIBLE_DEVICES", env.get("CUDA_VISIBLE_DEVICES")),
            layout=resolved.layout.description,
            supervisor_pid=os.getpid(),
            grace=opts.grace,
            supervisor_start=_start_of(os.getpid()),
            estimate=None
            if guess is None
            else {
                "peak_bytes": int(guess.peak_bytes),
                "host_bytes": int(guess.host_bytes),
                "quantity": guess.quantity,
            },
        ),
        in_place=in_place,
        run_id=run_id,
        node=node,
    )
    if resolved.config.launch.nnodes > 1:
        record.data["nnodes"] = resolved.config.launch.nnodes

    mode = "quiet" if opts.quiet else ("live" if sys.stdout.isatty() else "plain")
    if mode != "quiet":
        # Two lines: a long log path must not wrap a terminal's first line mid-word.
        _say(f"sftctl: started {' '.join(cmd.argv[:3])} ...\n  log: {record.log}")
    wall = time.monotonic()
    # Outlives sftctl: if it is killed hard, the watchdog ends the run's processes.
    guard = watchdog.start(run_id, record.staging, opts.grace)
    record.data["watchdog"] = [guard.proc.pid, _start_of(guard.proc.pid)]
    try:
        return _attempts(resolved, cmd, _Live(env, opts, cwd, record, mode, run_id, held), wall)
    finally:
        record.release()
        guard.done()


@dataclass(frozen=True)
class _Live:
    """What every attempt of a launched run shares: its environment, options, folder,
    record, display mode, id and GPU leases."""

    env: dict[str, str]
    opts: RunOptions
    cwd: Path
    record: RunRecord
    mode: str
    run_id: str
    held: leases.Leases


@dataclass
class _Ended:
    """One attempt's end, before it is recorded."""

    outcome: supervise.Outcome
    stats: Any
    tail: list[str]
    per_rank: dict[str, int]


def _attempts(resolved: Resolved, cmd: launchers.Command, live: _Live, wall: float) -> int:
    """Run the command; on out-of-memory with ``on_oom: recover``, climb the ladder: each
    further attempt resumes the run's last complete checkpoint with the next rung."""
    from sftctl.runtime import oom, recover

    record, mode, env = live.record, live.mode, live.env
    rows: list[dict[str, Any]] = []
    change: str | None = None
    delta: dict[str, Any] | None = None
    first: Any = None  # the first attempt's progress: where the run's loss curve starts
    resumed_from = resolved.args.get("resume_from_checkpoint")
    optimizer = "restored" if resumed_from else None
    peaks: list[supervise.Outcome] = []
    while True:
        watch = oom.Watch.start(record.log)
        row: dict[str, Any] = {"attempt": len(rows) + 1, "started_at": now_iso(), "change": change}
        row["delta"] = delta
        row.update(resumed_from=resumed_from, optimizer=optimizer)
        ended = _supervise(cmd, live, _node_watch(resolved))
        outcome = ended.outcome
        peaks.append(outcome)
        first = first or ended.stats
        cause = (
            None
            if outcome.returncode == 0
            else oom.cause(record.log, watch, outcome.descendants, signalled=outcome.signal is not None)
        )
        row.update(
            ended_at=now_iso(),
            exit_code=outcome.returncode,
            cause=cause,
            first_step=ended.stats.first_step,
            last_step=ended.stats.step,
        )
        rows.append(row)
        record.data["attempts"] = rows
        recovering = cause is not None and resolved.config.launch.on_oom == "recover"
        nxt = recover.next_attempt(resolved, record.run_dir, len(rows), env) if recovering else None
        if not isinstance(nxt, recover.Next):
            status = _status(outcome) if cause is None else "out of memory"
            recorded = _finish(record, ended, peaks, first, status, time.monotonic() - wall)
            if mode != "quiet":
                _summary(record, outcome, ended.stats, time.monotonic() - wall, ended.tail)
                if cause is not None:
                    _say(_oom_advice(cause, nxt, resolved, record.run_dir or record.staging))
            if not recorded:
                _say(f"sftctl: could not record the end of the run ({record.write_error})")
            return outcome.returncode
        resolved = nxt.resolved
        change = nxt.rung.why
        delta = dict(nxt.rung.delta)
        resumed_from, optimizer = nxt.resumed_from, nxt.optimizer
        cmd = launchers.build(resolved, builtin_paths(resolved), master_port=_port_for(resolved))
        document = resolved.document()
        record.data.update(
            status="recovering",
            config=document,
            config_yaml=dump(document, for_people=True),
            env=redact(cmd.env),
            unset=cmd.unset,
            argv=cmd.argv,
            layout=resolved.layout.description,
        )
        if record.run_dir is not None:
            jsonl = record.run_dir / "logging.jsonl"
            record.jsonl_offset = jsonl.stat().st_size if jsonl.is_file() else 0
        record.write()
        _say(
            f"sftctl: out of memory ({cause}) in attempt {len(rows)}; attempt {len(rows) + 1}: {change}"
            + (f", resuming {resumed_from}" if resumed_from else ", from the start")
            + (" with a fresh optimizer (--allow-optimizer-reset)" if optimizer == "reset" else "")
        )


def _port_for(resolved: Resolved) -> int | None:
    """A free rendezvous port, chosen at launch, for a distributed run that names none."""
    launch = resolved.config.launch
    return supervise.find_free_port() if launch.master_port is None and _distributed(launch) else None


def _distributed(launch: Launch) -> bool:
    """The command starts torchrun (itself, or through ms-swift's launcher)."""
    return launch.launcher == "torchrun" or launch.nproc_per_node > 1 or launch.nnodes > 1


def _node_watch(resolved: Resolved) -> Any:
    """A multi-node run's watch (rendezvous and stalls), or None on one node."""
    launch = resolved.config.launch
    if launch.nnodes == 1:
        return None
    from sftctl.launchers import DDP_TIMEOUT
    from sftctl.runtime.nodes import NodeWatch

    limit = resolved.args.get("ddp_timeout")
    return NodeWatch(launch, float(limit) if isinstance(limit, (int, float)) else float(DDP_TIMEOUT))


def _status(outcome: supervise.Outcome) -> str:
    if outcome.reason:
        return outcome.reason.split(":", 1)[0]
    if outcome.killed:
        return "killed"
    if outcome.signal:
        return "signalled"
    return "succeeded" if outcome.returncode == 0 else "failed"


def _finish(
    record: RunRecord, ended: _Ended, peaks: list[supervise.Outcome], first: Any, status: str, wall: float
) -> bool:
    """The record's end fields (peaks: the largest over every attempt; the first loss and
    step: the first attempt's); False when the disk would not take them."""
    outcome, stats, per_rank = ended.outcome, ended.stats, ended.per_rank
    return record.finish(
        status=status,
        exit_code=outcome.returncode,
        signal=outcome.signal,
        killed=outcome.killed,
        reason=outcome.reason,
        descendants=outcome.descendants,
        wall_seconds=round(wall, 2),
        first_loss=first.first_loss if first.first_loss is not None else stats.first_loss,
        last_loss=stats.loss,
        first_step=first.first_step if first.first_step is not None else stats.first_step,
        last_step=stats.step,
        steps_per_second=stats.steps_per_second,
        peak_rss_bytes=max(p.peak_rss for p in peaks),
        peak_process_rss_bytes=max(p.peak_rss_process for p in peaks),
        peak_gpu_memory_gib=stats.peak_memory_gib,
        peak_gpu_bytes=max(per_rank.values()) if per_rank else None,
        peak_gpu_bytes_per_process=per_rank or None,
    )


def _oom_advice(cause: str, nxt: object, resolved: Resolved, folder: Path) -> str:
    """What the user reads after a run ended out of memory."""
    from sftctl.runtime import recover

    lines = [f"sftctl: the run ran out of memory ({cause})"]
    if isinstance(nxt, recover.GiveUp):
        lines.append(f"  gave up: {nxt.why}")
        lines.append(f"  fix: {nxt.fix}")
    elif resolved.config.launch.on_oom != "recover":
        lines.append(
            f"  fix: sftctl resume {folder} --on-oom recover continues it from its last checkpoint "
            "with a smaller per-device batch (same effective batch), then the rest of the ladder; "
            "sftctl run ... --on-oom recover does so from the start"
        )
    suggestion = _plan_suggestion(resolved)
    if suggestion:
        lines.append(f"  sftctl plan suggests: {suggestion}")
    return "\n".join(lines)


def _plan_suggestion(resolved: Resolved) -> str | None:
    """The planner's pick for this model on this run's GPUs, when sftctl knows both."""
    listed = resolved.config.launch.gpus
    if resolved.layout.use_cpu or not listed:
        return None
    try:
        from sftctl.resources import planner

        view = gpus.host_view(os.environ)
        sizes = [view.described[g].total_bytes for g in listed if g in view.described]
        if not sizes:
            return None
        model = str(resolved.args.get("model") or "")
        tuner = "full" if str(resolved.args.get("tuner_type") or "lora") == "full" else "lora"
        length = int(str(resolved.args.get("max_length") or 2048))
        batch = resolved.effective_batch or 16
        result, _ = planner.plan_for(model, tuner, None, len(listed), float(min(sizes)), length, batch)
    except (ConfigError, ValueError, ArithmeticError, OSError):
        return None
    pick = result.pick
    if pick is None:
        return f"nothing fits {len(listed)} such GPUs"
    return (
        f"{pick.layout.name}, batch {pick.per_device_batch} x accumulation {pick.grad_accum} "
        f"({pick.peak_gib} GiB per GPU)"
    )


def _supervise(cmd: launchers.Command, live: _Live, stop_if: Any = None) -> _Ended:
    """Run one attempt of the command under supervision. The training command holds the
    GPU leases too: they last while any of its processes does, even if the supervisor and
    its watchdog are both killed."""
    env, opts, cwd, record, mode, run_id, held = (
        live.env,
        live.opts,
        live.cwd,
        live.record,
        live.mode,
        live.run_id,
        live.held,
    )
    from sftctl.runtime.progress import Follower

    def started(pid: int) -> None:
        record.data.update(status="running", pid=pid, pgid=pid, leader_start=_start_of(pid))
        record.write()

    # The end of the output, kept here: the log on disk may have stopped (a full disk).
    tail: collections.deque[str] = collections.deque(maxlen=25)
    from sftctl.resources.nvml import Sampler

    gpu = Sampler() if cmd.env.get("CUDA_VISIBLE_DEVICES") else None  # a GPU run: NVML's view of it
    try:
        with Follower(record.discover, mode, start_offset=record.jsonl_offset) as follower:
            if stop_if is not None:
                stop_if.stats = follower.stats

            def on_line(line: str) -> None:
                record.announce(line)
                follower.feed_line(line)
                tail.append(line)

            outcome = supervise.run_supervised(
                cmd.argv,
                {**child_env(cmd, env), ownership.MARKER: run_id},
                cwd=cwd,
                log_path=record.log,
                grace=opts.grace,
                on_start=started,
                on_line=on_line,
                pass_fds=held.fds(),
                on_scan=None if gpu is None else gpu.sample,
                stop_if=stop_if,
            )
    except supervise.StartError as exc:
        record.finish(status="failed to start", exit_code=None, error=str(exc))
        raise LaunchError(f"could not run {cmd.argv[0]}: {exc}") from None
    finally:
        if gpu is not None:
            gpu.close()
    per_rank = {str(pid): used for pid, used in sorted(gpu.peak.items())} if gpu else {}
    return _Ended(outcome, follower.stats, list(tail), per_rank)


def _start_of(pid: int) -> int | None:
    ref = supervise.proc_ref(pid)
    return ref.start if ref else None


def _summary(record: RunRecord, outcome: supervise.Outcome, stats: Any, wall: float, tail: list[str]) -> None:
    lines = []
    if outcome.returncode == 0:
        lines.append("sftctl: training finished")
    elif outcome.reason:
        lines.append(f"sftctl: {outcome.reason}; the whole process tree was ended")
    elif outcome.signal:
        lines.append(
            f"sftctl: stopped by signal {outcome.signal}; the whole process tree was ended"
            + (" (SIGKILL after the grace period)" if outcome.killed else "")
        )
    elif str((record.data.get("attempts") or [{}])[-1].get("cause") or "").startswith("kernel OOM kill"):
        lines.append(
            f"sftctl: training ended with exit code {outcome.returncode}: the kernel's OOM killer ended "
            "a process of the run (its output says nothing of it)"
        )
    else:
        lines.append(
            f"sftctl: training failed with exit code {outcome.returncode}; last lines of its output:"
        )
        lines += [f"  | {t}" for t in tail]
    attempts = record.data.get("attempts") or []
    if len(attempts) > 1:
        from sftctl.runtime.recover import history

        lines += ["  attempts (out-of-memory recovery):", *history(attempts)]
    if record.data.get("last_checkpoint"):
        lines.append(f"  checkpoint: {record.data['last_checkpoint']}")
        if outcome.returncode != 0:
            folder = record.run_dir or record.staging
            lines.append(f"  resume: sftctl resume {folder}")
    first_loss = record.data.get("first_loss", stats.first_loss)  # the first attempt's
    if first_loss is not None and stats.loss is not None:
        first_step = record.data.get("first_step", stats.first_step)
        steps = (
            stats.steps_text()
            if first_step == stats.first_step or first_step is None or stats.step is None
            else f"{stats.step} steps"
            if first_step == 1
            else f"steps {first_step}-{stats.step} ({stats.step - first_step + 1} steps)"
        )
        lines.append(f"  loss: {first_loss:.4f} (first) -> {stats.loss:.4f} (last), {steps}")
    if stats.steps_per_second:
        lines.append(f"  speed: {stats.steps_per_second:.3g} steps/s")
    used = (
        [f"host RSS {human(outcome.peak_rss)} (all processes; {human(outcome.peak_rss_process)} the largest)"]
        if outcome.peak_rss
        else []
    )
    if stats.peak_memory_gib is not None:
        used.append(f"GPU {stats.peak_memory_gib:.2f} GiB (rank 0, ms-swift's memory(GiB))")
    nvml_peak = record.data.get("peak_gpu_bytes")
    if isinstance(nvml_peak, int):
        used.append(f"GPU {human(nvml_peak)} (the busiest process, NVML)")
    if used:
        lines.append(f"  peak memory: {', '.join(used)}")
    guess = record.data.get("estimate")
    if isinstance(guess, dict) and isinstance(guess.get("peak_bytes"), int):
        on_cpu = str(guess.get("quantity", "")).startswith("RssAnon")
        host = guess.get("host_bytes")
        said = (
            f"host RAM {human(host)} for all processes" if on_cpu and isinstance(host, int) else
            f"{human(guess['peak_bytes'])} per GPU"
        )  # fmt: skip
        lines.append(f"  estimated: {said} (sftctl estimate)")
    lines.append(f"  wall time: {wall:.1f} s")
    lines.append(f"  run folder: {record.run_dir or record.staging} (manifest {record.manifest_path.name})")
    _say("\n".join(lines))


def _detach(
    target: str,
    overrides: Overrides,
    opts: RunOptions,
    output_dir: Path,
    run_id: str,
    lock: ownership.Held,
    held: leases.Leases,
    node: str | None = None,
) -> int:
    """Start `sftctl run` again in its own session, so the run survives this terminal."""
    staging = output_dir / STAGING / staging_name(run_id, node)
    staging.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "sftctl",
        "run",
        target,
        "--quiet",
        "--run-id",
        run_id,
        "--grace",
        str(opts.grace),
    ]
    for item in overrides.sets:
        argv += ["--set", item]
    for flag, value in (
        ("--gpus", overrides.gpus),
        ("--model", overrides.model),
        ("--swift-version", overrides.swift_version),
    ):
        if value is not None:
            argv += [flag, value]
    if opts.resume:
        argv.append("--resume")
    argv += ["--lock-fd", str(lock.fd)]
    if held.held:
        argv += ["--leases", held.handed_down()]
    with open(staging / "supervisor.log", "ab") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            cwd=Path.cwd(),
            # The same open locks: an flock holds while any holder lives.
            pass_fds=(lock.fd, *(lease.fd for lease in held.held)),
            env={**os.environ, NODE_LABEL: node} if node is not None else None,
        )
    # Write a first manifest now, so `sftctl stop` works even before the background
    # supervisor has started up; the supervisor's own record replaces it.
    write_json_if_absent(
        staging / POINTER,
        base_manifest(
            target=target,
            run_id=run_id,
            staging_dir=str(staging),
            supervisor_pid=proc.pid,
            supervisor_start=_start_of(proc.pid),
            log=str(staging / "supervisor.log"),
        ),
    )
    _say(
        f"sftctl: started in the background (supervisor pid {proc.pid})\n"
        f"  manifest and log: {staging} (they move into the run folder once ms-swift creates it)\n"
        f"  log:    tail -F {staging / LOG}\n"
        f"  runs:   sftctl runs {output_dir}\n"
        f"  stop:   sftctl stop {staging}"
    )
    return 0


def _alive(pid: object, start: object) -> supervise.ProcRef | None:
    """The process ``pid`` if it is still the one that started at ``start`` (pids get reused)."""
    if not isinstance(pid, int):
        return None
    ref = supervise.proc_ref(pid)
    return ref if ref is not None and ref.start == start else None


def _record_quietly(path: Path, data: dict[str, Any]) -> None:
    """Update a manifest after the fact; a folder that is not writable only costs the update."""
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        _say(f"sftctl: could not update {path} ({exc.strerror}); the run's processes were handled")


def _owned_by(pid: int, uid: int | None) -> bool:
    """``pid`` runs as ``uid`` (the run folder's owner); root's own runs count for root."""
    return uid is not None and ownership.process_uid(pid) == uid


def stop(path: Path, grace: float = 30.0) -> int:
    """Stop a (detached) run the clean way: its supervisor forwards SIGTERM to the tree.

    Only processes that are provably this run's are signalled: the supervisor (the recorded
    identity, an sftctl command line, owned by the run folder's owner) or processes that
    carry the run's marker and belong to that owner. A manifest naming anything else is
    refused, and nothing is signalled."""
    import signal

    manifest_path, data = read_manifest(path)
    if data.get("status") not in ("starting", "running"):
        _say(f"sftctl: the run is not running (status: {data.get('status')})")
        return 0
    run_id = str(data.get("run_id") or "")
    owner = ownership.owner_of(manifest_path)
    writable = owner == os.geteuid()
    sup = _alive(data.get("supervisor_pid"), data.get("supervisor_start"))
    if sup is not None and not (ownership.is_sftctl(sup.pid) and _owned_by(sup.pid, owner)):
        raise ConfigError(
            problems=[
                report(
                    "R003",
                    str(manifest_path),
                    f"process {sup.pid}, named as this run's supervisor, "
                    "is not an sftctl run of the folder's owner",
                    "check the manifest; nothing was signalled",
                )
            ]
        )
    if sup is not None:
        os.kill(sup.pid, signal.SIGTERM)
        # The supervisor waits the run's own grace period before SIGKILL, then reaps.
        wait = float(data.get("grace") or grace) + 15
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(sup.pid, sup.start) is not None:
            time.sleep(0.2)
        if _alive(sup.pid, sup.start) is not None:
            _say(f"sftctl: the run is still stopping after {wait:.0f} s (supervisor pid {sup.pid})")
            return 1
        path, data = read_manifest(manifest_path)
        if data.get("status") in ("starting", "running") and data.get("pid") is None and writable:
            # Stopped while still checking and preparing: no training process was started.
            data.update(status="stopped before launch", ended_at=now_iso())
            _record_quietly(path, data)
        _say(f"sftctl: stopped (status: {data.get('status')}, exit code {data.get('exit_code')})")
        return 0
    # The supervisor is gone (killed hard): end what carries this run's marker, if anything.
    procs = [pid for pid in ownership.marked(run_id) if _owned_by(pid, owner)] if run_id else []
    refs = [ref for pid in procs if (ref := supervise.proc_ref(pid)) is not None]
    if refs:
        killed = supervise.stop_tree(refs, signal.SIGTERM, grace)
        _say(
            f"sftctl: the supervisor was gone; stopped the run's {len(refs)} training process(es)"
            + (" (SIGKILL after the grace period)" if killed else "")
        )
    else:
        _say("sftctl: neither the supervisor nor any process of this run is running any more")
    if writable:
        data.update(status="stopped without supervisor" if refs else "lost", ended_at=now_iso())
        _record_quietly(manifest_path, data)
    return 0


def resume(run_dir: Path, opts: RunOptions, sets: tuple[str, ...] = (), node_rank: int | None = None) -> int:
    """Continue a recorded run from its last complete checkpoint. ``sets`` are the recovery
    flags (launch.on_oom=recover, ...); a run that ended out of memory then starts at the
    ladder's next rung instead of running out again at the same place. A node of a
    multi-node run resumes from its own record (``node_rank``), under the run's id."""
    _, data = read_manifest(_node_record(run_dir, node_rank))
    supervised = data.get("status") in ("starting", "running") and _alive(
        data.get("supervisor_pid"), data.get("supervisor_start")
    )
    # The training can outlive a supervisor killed hard: its marker tells.
    if supervised or (data.get("run_id") and ownership.marked(str(data["run_id"]))):
        raise RefusedError(
            problems=[
                report(
                    "H011",
                    str(run_dir),
                    "this run is still running; a second training would write into the same place",
                    f"stop it first: sftctl stop {run_dir}",
                ),
            ]
        )
    folder = Path(data.get("run_dir") or run_dir)
    done = complete_checkpoints(folder)
    if done and _finished(done[-1]):
        _say(
            f"sftctl: the run in {folder} is complete ({done[-1].name} is its last step, "
            f"status {data.get('status')}): nothing to resume, nothing started"
        )
        return 0
    if not done:
        raise RefusedError(
            problems=[
                report(
                    "H010",
                    str(folder),
                    "no complete checkpoint to resume from",
                    "start the run again with sftctl run",
                ),
            ]
        )
    loaded = loaded_from_record(run_dir, data)
    # A weights-only resume was one attempt's way past a new optimizer layout; the run's own
    # checkpoints are in its final layout.
    loaded.data["args"].pop("resume_only_model", None)
    loaded.data["args"]["resume_from_checkpoint"] = str(done[-1])
    loaded.origin["args.resume_from_checkpoint"] = "manifest"
    # The recovery flags are --set overrides like any other: validated and typed there.
    overrides = Overrides(sets=sets, swift_version=str(data.get("swift_version")))
    if data.get("status") == "out of memory":
        loaded = _next_rung_for_resume(loaded, folder, data, overrides)
    shared = str(data["run_id"]) if data.get("node") is not None and data.get("run_id") else None
    return run(
        data.get("target", str(run_dir)),
        overrides,
        RunOptions(grace=opts.grace, quiet=opts.quiet, resume=True, wait=opts.wait, run_id=shared),
        cwd=Path(data.get("cwd") or Path.cwd()),
        loaded=loaded,
    )
