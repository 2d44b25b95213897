"""Host-phase checks: what makes a run fail, or lose something, on this machine.

Local data and model paths, packages, the launcher, the output folder, the master port
and the disk. Packages are found with importlib's finder, without importing them
(importing deepspeed or flash_attn takes seconds and may initialise CUDA).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sftctl.checks.config import FLASH_ATTN
from sftctl.checks.registry import report
from sftctl.config.resolve import Resolved
from sftctl.errors import Problem
from sftctl.resources.gpus import HostGpus
from sftctl.resources.params import human
from sftctl.swift.outputs import checkpoint_dirs
from sftctl.swift.values import as_texts

DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".arrow")
_SAMPLE = re.compile(r"#\d+$")


def is_local_ref(value: str) -> bool:
    """ms-swift takes a relative path that does not exist for a hub id and fails a
    minute later; these are the values that can only mean a local file or folder."""
    value = _SAMPLE.sub("", value)
    return value.startswith(("./", "../", "/", "~")) or value.lower().endswith(DATA_SUFFIXES)


def find_executable(name: str, env: Mapping[str, str]) -> str | None:
    """``name`` on PATH, else beside the running interpreter (a venv used without activation)."""
    found = shutil.which(name, path=env.get("PATH"))
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _local(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def output_dir_of(resolved: Resolved, cwd: Path) -> Path:
    """The run's output_dir, absolute (relative to where sftctl starts)."""
    out = Path(str(resolved.args.get("output_dir") or "output")).expanduser()
    return out if out.is_absolute() else cwd / out


def model_dir_of(resolved: Resolved, paths: Mapping[str, str], cwd: Path) -> Path | None:
    """The run's model as a local folder with config.json (built-ins resolved), or None."""
    model = resolved.args.get("model")
    if not isinstance(model, str):
        return None
    local = Path(paths.get(model, model)).expanduser()
    local = local if local.is_absolute() else cwd / local
    return local if (local / "config.json").is_file() else None


def check(
    resolved: Resolved,
    env: Mapping[str, str],
    cwd: Path | None = None,
    path_of: Mapping[str, str] | None = None,
    view: HostGpus | None = None,
    leased: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[Problem]:
    """Problems that would make the run fail on this machine (``view``: its GPUs, when
    already known; ``leased``: GPUs other runs lease)."""
    base = cwd or Path.cwd()
    path_of = path_of or {}
    problems: list[Problem] = []
    for key in ("dataset", "val_dataset"):
        for item in as_texts(resolved.args.get(key)):
            if item in path_of or item.startswith("builtin:") or not is_local_ref(item):
                continue
            path = _local(_SAMPLE.sub("", item), base)
            if not path.exists():
                problems.append(
                    report(
                        "H001",
                        f"args.{key}",
                        f"local dataset '{item}' does not exist ({path})",
                        "fix the path; ms-swift would take it for a hub id and fail after a minute",
                    )
                )
    model = resolved.args.get("model")
    if (
        isinstance(model, str)
        and model not in path_of
        and not model.startswith("builtin:")
        and model.startswith(("./", "../", "/", "~"))
    ):
        path = _local(model, base)
        if not (path / "config.json").is_file():
            problems.append(
                report(
                    "H002",
                    "args.model",
                    f"local model folder '{model}' has no config.json ({path})",
                    "point model at a folder with config.json and weights",
                )
            )
    wanted = []
    if resolved.args.get("deepspeed"):
        wanted.append(("deepspeed", "deepspeed", "pip install 'sftctl[deepspeed]'"))
    if resolved.args.get("attn_impl") in FLASH_ATTN:
        wanted.append(
            ("flash_attn", "attn_impl", "pip install 'sftctl[gpu]' (needs CUDA), or attn_impl: sdpa")
        )
    if "swanlab" in as_texts(resolved.args.get("report_to")):
        wanted.append(("swanlab", "report_to", "pip install 'sftctl[swanlab]'"))
    for module, key, fix in wanted:
        if not _installed(module):
            problems.append(
                report(
                    "H003", f"args.{key}", f"needs the Python package '{module}', which is not installed", fix
                )
            )
    problems += check_gpus(resolved, env, view, leased)
    exe = "torchrun" if resolved.config.launch.launcher == "torchrun" else "swift"
    if find_executable(exe, env) is None:
        problems.append(
            report(
                "H004",
                "launch.launcher",
                f"'{exe}' is not on PATH",
                "pip install 'sftctl[swift]' (ms-swift and torch) in this environment",
            )
        )
    return problems


def check_gpus(
    resolved: Resolved,
    env: Mapping[str, str],
    view: HostGpus | None = None,
    leased: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[Problem]:
    """A GPU config needs GPUs here, and the ones it names must exist (inside a Slurm job,
    the job's). A CPU config says so: use_cpu, or launch.gpus: ''. GPUs that other
    processes use are a warning; ``leased`` (GPU -> holder) names GPUs another sftctl run
    holds, a refusal."""
    from sftctl.resources.gpus import host_view
    from sftctl.resources.leases import describe_holder

    gpus = resolved.config.launch.gpus
    if resolved.layout.use_cpu or gpus == []:
        return []
    view = view or host_view(env)
    host = view.ids
    if host == []:
        none = (
            f"the inherited CUDA_VISIBLE_DEVICES={view.limited_by!r} makes no GPU visible"
            if view.limited_by is not None
            else "this machine has no NVIDIA GPU (NVML and nvidia-smi find none)"
        )
        return [
            report(
                "H015",
                "launch.gpus",
                f"{none}, but the config trains on GPUs ({resolved.layout.description})",
                "run it on a GPU node (or unset CUDA_VISIBLE_DEVICES); to train on the CPU set "
                "use_cpu: true and launch.gpus: '' (as the cpu-smoke presets do)",
            )
        ]
    missing = [g for g in gpus or [] if host is not None and g not in host]
    split = [g for g in gpus or [] if g in view.mig]
    problems = []
    if missing or split:
        have = ",".join(str(g) for g in host or [] if g not in view.mig)
        what = (
            f"GPU id(s) {missing} are not among the GPUs this run may use: {have or 'none'}{view.where()}"
            if missing
            else f"GPU(s) {split} are split into MIG devices and cannot be used whole"
        )
        problems.append(
            report(
                "H016",
                "launch.gpus",
                what,
                f"pass --gpus with ids from `sftctl gpus`, e.g. --gpus {have}" if have else "see sftctl gpus",
            )
        )
    for g in gpus or []:
        if g in missing or g in split:
            continue
        if leased and g in leased:
            problems.append(
                report(
                    "H018",
                    "launch.gpus",
                    f"GPU {g} is leased by {describe_holder(leased[g])}",
                    "wait with --wait, stop that run, or take free GPUs (sftctl run ... --gpus auto:N)",
                )
            )
        elif busy := view.busy(g):
            problems.append(
                report(
                    "H017",
                    "launch.gpus",
                    f"GPU {g} is already in use: {busy}",
                    "--gpus auto picks free GPUs; see `sftctl gpus`",
                )
            )
    return problems


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(resolved: Resolved, output_dir: Path, model_dir: Path | None) -> list[Problem]:
    """A refusal when (save_total_limit + 1) checkpoints cannot fit; warnings saying what is unknown."""
    from sftctl.resources.memory import checkpoint_size

    where = _existing_parent(output_dir)
    free = shutil.disk_usage(where).free
    model = str(model_dir) if model_dir else str(resolved.args.get("model") or "")
    size = checkpoint_size(resolved.args, resolved.layout, model)
    if size is None:
        return [
            report(
                "H008",
                "args.model",
                "checkpoint size unknown (sftctl has no shape for the model: see sftctl estimate): "
                "free disk was not checked",
            )
        ]
    per = int(size)
    limit = resolved.args.get("save_total_limit")
    if not isinstance(limit, int) or limit <= 0:
        unset = report(
            "H009",
            "args.save_total_limit",
            f"save_total_limit is unset, so every checkpoint is kept "
            f"(about {human(per)} each; {human(free)} free on {where})",
        )
        # Even then, the first checkpoint must fit.
        limit = 0
        if per <= free:
            return [unset]
    count = limit + 1
    why = "save_total_limit + 1 being written" if count > 1 else "save_total_limit is unset"
    if per * count > free:
        return [
            report(
                "H007",
                "args.output_dir",
                f"not enough disk: {count} checkpoint{'s' if count > 1 else ''} ({why}) of about "
                f"{human(per)} each need {human(per * count)}, but {where} has {human(free)} free",
                "free space, lower save_total_limit, or set output_dir on a larger disk",
            )
        ]
    return []


def check_writable(output_dir: Path) -> list[Problem]:
    """output_dir, or the folder it would be made in, must be a folder this user can write."""
    path = output_dir
    while not path.exists() and not path.is_symlink() and path != path.parent:
        path = path.parent
    if path.is_symlink() and not path.exists():
        why = f"{path} is a symbolic link to nothing (dangling, or a loop)"
    elif not path.is_dir():
        why = f"{path} is not a folder"
    elif not os.access(path, os.W_OK | os.X_OK):
        why = f"{path} is not writable"
    else:
        return []
    return [
        report(
            "H012",
            "args.output_dir",
            f"cannot create or write {output_dir}: {why}",
            "set output_dir to a folder you can write",
        )
    ]


def check_output_dir(resolved: Resolved, output_dir: Path, resume: bool) -> list[Problem]:
    """ms-swift with add_version false writes straight into output_dir: refuse to mix
    this run's checkpoints with another run's, unless resuming it."""
    if resolved.args.get("add_version", True) is not False or resume:
        return []
    existing = checkpoint_dirs(output_dir)
    if not existing:
        return []
    return [
        report(
            "H005",
            "args.output_dir",
            f"{output_dir} already holds checkpoints of another run "
            f"({', '.join(p.name for p in existing[-3:])}) "
            "and add_version is false, so this run would write over them",
            "choose a new output_dir, drop add_version: false, or continue that run with --resume",
        )
    ]


def check_port(port: int | None, in_use: bool) -> list[Problem]:
    """A fixed master port that is taken makes torchrun fail (or hang) after start-up."""
    if port is None or not in_use:
        return []
    return [
        report(
            "H006",
            "launch.master_port",
            f"port {port} is already in use on this machine (another training job?)",
            "pick a free port, e.g. --set launch.master_port=29501, or remove master_port "
            "and sftctl picks a free one",
        )
    ]


# The estimate is checked to within 20% on published runs: refuse only beyond this margin.
FIT_MARGIN = 1.10


def check_fit(peak_bytes: float, context_bytes: float, gpus: list[int], view: HostGpus) -> list[Problem]:
    """The estimated peak (and the CUDA context) must fit into the free memory of every GPU."""
    free = {g: view.described[g].free_bytes for g in gpus if g in view.described}
    if not free:
        return []
    tightest = min(free, key=lambda g: free[g])
    need = peak_bytes + context_bytes
    if need <= free[tightest] * FIT_MARGIN:
        return []
    return [
        report(
            "H021",
            "launch.gpus",
            f"the run needs about {human(need)} per GPU (sftctl estimate) but GPU {tightest} has "
            f"{human(free[tightest])} free",
            "halve per_device_train_batch_size and double gradient_accumulation_steps (same effective "
            "batch), keep gradient_checkpointing on, shard with deepspeed zero3 (or zero3_offload), or "
            "take GPUs with more free memory (--gpus auto); --force launches anyway",
        )
    ]
