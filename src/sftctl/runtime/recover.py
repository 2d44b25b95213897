"""The next attempt of a run that ran out of memory: the ladder's next rung applied to
the run's config, resumed from the run's last complete checkpoint in the same run folder.

Every attempt after the first trains into the first attempt's run folder (``output_dir``
set to it, ``add_version: false``), so the run keeps one folder, one manifest and one
``logging.jsonl``; its checkpoints continue the first attempt's step numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftctl.config.presets import Loaded
from sftctl.config.resolve import Overrides, Resolved, resolve_loaded
from sftctl.errors import ConfigError
from sftctl.resources import gpus
from sftctl.runtime import ladder
from sftctl.swift.outputs import checkpoint_dirs, complete_checkpoints

LADDER = "oom ladder"


@dataclass(frozen=True)
class Next:
    """The attempt to start: its resolved config and how it continues."""

    resolved: Resolved
    rung: ladder.Rung
    resumed_from: str | None
    optimizer: str | None  # restored, reset (weights only), or None (no checkpoint)


@dataclass(frozen=True)
class GiveUp:
    """Why the ladder ends here."""

    why: str
    fix: str


def world_of(resolved: Resolved) -> int:
    launch = resolved.config.launch
    return max(1, launch.nproc_per_node * launch.nnodes)


def _set_aside_incomplete(run_dir: Path, resume_from: Path | None, attempt: int) -> None:
    """Checkpoint folders the failed attempt left half-written (newer than the resume
    point) are renamed, so the next attempt never writes into them; the new name does not
    start with ``checkpoint-``, so transformers' save_total_limit rotation leaves it alone."""
    complete = set(complete_checkpoints(run_dir))
    floor = int(resume_from.name.split("-", 1)[1]) if resume_from else -1
    for folder in checkpoint_dirs(run_dir):
        if folder not in complete and int(folder.name.split("-", 1)[1]) > floor:
            aside = folder.with_name(f"incomplete-attempt{attempt}-{folder.name}")
            n = 1
            while aside.exists() or aside.is_symlink():  # an earlier resume of this run left one
                n += 1
                aside = folder.with_name(f"incomplete-attempt{attempt}.{n}-{folder.name}")
            os.rename(folder, aside)


def next_attempt(
    resolved: Resolved, run_dir: Path | None, attempt: int, env: dict[str, str]
) -> Next | GiveUp:
    """The config of attempt ``attempt + 1`` after attempt ``attempt`` ran out of memory."""
    policy = resolved.config.launch
    args = resolved.args
    rung = ladder.next_rung(
        args, world_of(resolved), allow_shorter=policy.allow_shorter, use_cpu=resolved.layout.use_cpu
    )
    if rung is None:
        return GiveUp(
            "every rung of the out-of-memory ladder is used",
            "use more or larger GPUs (sftctl plan), a smaller model, or quantization"
            + ("" if policy.allow_shorter else "; --allow-shorter also lets it shorten max_length"),
        )
    done = complete_checkpoints(run_dir) if run_dir else []
    point = done[-1] if done else None
    if point is None and args.get("resume_from_checkpoint"):
        # This attempt resumed a checkpoint (sftctl resume, run --resume) and wrote none of
        # its own: the next one starts from the same place.
        earlier = Path(str(args["resume_from_checkpoint"]))
        point = earlier if earlier in complete_checkpoints(earlier.parent) else None
    optimizer: str | None = "restored" if point else None
    new_args: dict[str, Any] = {k: v for k, v in args.items() if k not in ("resume_only_model",)}
    if point is not None and rung.relayout:
        if not policy.allow_optimizer_reset:
            return GiveUp(
                f"the next rung ({rung.why}) lays the optimizer state out differently, and sftctl "
                f"cannot convert {point.name}'s state to it",
                f"sftctl resume {run_dir} --on-oom recover --allow-optimizer-reset resumes the weights "
                "with a fresh optimizer (its moments and learning-rate schedule start again)",
            )
        new_args["resume_only_model"] = True
        optimizer = "reset"
    for key, value in rung.delta.items():
        if value is None:
            new_args.pop(key, None)
        else:
            new_args[key] = value
    if point is not None:
        new_args["resume_from_checkpoint"] = str(point)
    else:
        new_args.pop("resume_from_checkpoint", None)
    if run_dir is not None:
        try:
            _set_aside_incomplete(run_dir, point, attempt)
        except OSError as exc:
            return GiveUp(
                f"a half-written checkpoint in {run_dir} cannot be set aside ({exc.strerror})",
                f"move it out of the way, then sftctl resume {run_dir}",
            )
        new_args["output_dir"] = str(run_dir)
        new_args["add_version"] = False
    document = resolved.document()
    document["args"] = new_args
    launch = document.setdefault("launch", {})
    if new_args.get("deepspeed") and world_of(resolved) == 1 and launch.get("launcher", "swift") == "swift":
        # One process started by the swift launcher has no torch.distributed environment,
        # and DeepSpeed then looks for MPI: torchrun gives it one.
        launch["launcher"] = "torchrun"
    origin = dict(resolved.loaded.origin)
    for key in (*rung.delta, "resume_from_checkpoint", "resume_only_model", "output_dir", "add_version"):
        origin[f"args.{key}"] = LADDER
    loaded = Loaded(
        target=resolved.loaded.target,
        preset=resolved.loaded.preset,
        data=document,
        origin=origin,
        layers=resolved.loaded.layers,
        recorded_digest=resolved.loaded.digest,
        recorded_files=resolved.loaded.files,
    )
    try:
        after = resolve_loaded(
            loaded, Overrides(swift_version=str(resolved.major)), env=env, visible=gpus.visible_gpus(env)
        )
    except ConfigError as exc:
        return GiveUp(
            f"the next rung ({rung.why}) does not validate: "
            + "; ".join(p.render() for p in exc.problems[:3]),
            "fix the config, then sftctl resume the run",
        )
    return Next(after, rung, str(point) if point else None, optimizer)


def history(rows: list[dict[str, Any]]) -> list[str]:
    """The attempts as lines for a person."""
    out = []
    for row in rows:
        what = row.get("change") or "as configured"
        code = row.get("exit_code")
        end = "succeeded" if code == 0 else (row.get("cause") or f"exit {code}")
        steps = row.get("last_step")
        start = f", from {Path(str(row['resumed_from'])).name}" if row.get("resumed_from") else ""
        optimizer = f" (optimizer {row['optimizer']})" if row.get("optimizer") == "reset" else ""
        out.append(
            f"  attempt {row.get('attempt')}: {what}{start}{optimizer} -> {end}"
            + (f" after step {steps}" if steps is not None and row.get("exit_code") else "")
        )
    return out
