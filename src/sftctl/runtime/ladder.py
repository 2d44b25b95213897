"""The out-of-memory ladder: what to change, one rung at a time, after a rank ran out of
memory, without changing what is trained.

Pure: a rung is a delta over the run's ms-swift arguments, chosen from the arguments
alone. The order follows the seed documents' advice for out-of-memory: a smaller
per-device batch with more accumulation (the effective batch stays), then gradient
checkpointing, then for full tuning more ZeRO sharding (ZeRO-2, ZeRO-3, ZeRO-3 with CPU
offload), for LoRA the memory settings of the seeds' emergency config (preset
``oom-fallback``); a shorter max_length (which changes what each step sees) only when
the user allows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sftctl.resources.layout import default_accumulation, truthy

# ms-swift reads these as "off"; anything else (including absent) leaves checkpointing on.
_OFF = (False, "false", "False", "0", 0)
# The seeds' emergency config trains at 2048 tokens; no rung shortens below SHORTEST.
EMERGENCY_LENGTH = 2048
SHORTEST = 256
# ms-swift's named DeepSpeed configurations and their ZeRO stage.
STAGE = {"zero0": 0, "zero1": 1, "zero2": 2, "zero2_offload": 2, "zero3": 3, "zero3_offload": 3}
# The next configuration that holds less on each GPU (None: DDP or one plain process).
NEXT_ZERO: dict[str | None, str] = {
    None: "zero2", "zero0": "zero2", "zero1": "zero2", "zero2": "zero3",
    "zero2_offload": "zero3_offload", "zero3": "zero3_offload",
}  # fmt: skip
NEXT_ZERO_ONE_PROCESS: dict[str | None, str] = {
    None: "zero2_offload", "zero0": "zero2_offload", "zero1": "zero2_offload", "zero2": "zero2_offload",
    "zero2_offload": "zero3_offload", "zero3": "zero3_offload",
}  # fmt: skip


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: the arguments it sets and why."""

    name: str
    delta: dict[str, Any]
    why: str
    # The optimizer state of the checkpoint is laid out differently under the new setting
    # (DDP to ZeRO, ZeRO-2 to ZeRO-3): it cannot be loaded as it is.
    relayout: bool = False
    notes: list[str] = field(default_factory=list)


def _count(value: Any, default: int) -> int:
    """A positive count as ms-swift would read it, or ``default``."""
    if isinstance(value, bool):
        return default
    try:
        got = int(str(value)) if value is not None else default
    except ValueError:
        return default
    return got if got >= 1 else default


def batch_and_accumulation(args: Mapping[str, Any], world: int) -> tuple[int, int]:
    """The per-device batch and the accumulation ms-swift will use (its default
    accumulation keeps 16 rows per step: ceil(16 / batch / processes))."""
    batch = _count(args.get("per_device_train_batch_size"), 1)
    accum = _count(args.get("gradient_accumulation_steps"), default_accumulation(batch, world))
    return batch, accum


def _smaller_batch(batch: int) -> int:
    """The largest divisor of ``batch`` that is at most half of it (so the accumulation
    grows by a whole factor and the effective batch stays exact)."""
    for cand in range(batch // 2, 0, -1):
        if batch % cand == 0:
            return cand
    return 1


def _deepspeed_name(value: Any) -> str | None:
    text = str(value or "").strip()
    return None if text in ("", "null", "None") else text


def next_rung(
    args: Mapping[str, Any], world: int, *, allow_shorter: bool = False, use_cpu: bool = False
) -> Rung | None:
    """The next rung for a run with ``args`` on ``world`` processes, or None at the top."""
    batch, accum = batch_and_accumulation(args, world)
    if batch > 1:
        smaller = _smaller_batch(batch)
        factor = batch // smaller
        return Rung(
            "smaller batch",
            {"per_device_train_batch_size": smaller, "gradient_accumulation_steps": accum * factor},
            f"per-device batch {batch} -> {smaller}, accumulation {accum} -> {accum * factor}: "
            f"the effective batch stays {batch * accum * world}",
        )
    if args.get("gradient_checkpointing", True) in _OFF:
        return Rung(
            "gradient checkpointing",
            {"gradient_checkpointing": True},
            "gradient checkpointing on: layer activations are recomputed in backward instead of kept",
        )
    tuner = str(args.get("tuner_type") or args.get("train_type") or "lora").lower()
    if tuner != "full":
        return _emergency(args, allow_shorter)
    rung = _more_sharding(args, world, use_cpu)
    if rung is not None or not allow_shorter:
        return rung
    length = _count(args.get("max_length"), 0)
    if length and length <= SHORTEST:
        return None
    shorter = max(SHORTEST, length // 2) if length else EMERGENCY_LENGTH
    delta: dict[str, Any] = {"max_length": shorter, **_truncate(args)}
    return Rung(
        "shorter max_length",
        delta,
        f"max_length {length or 'the model default'} -> {shorter} (--allow-shorter): longer rows are "
        "cut at the end" + ("" if "truncation_strategy" not in delta else " (truncation_strategy right)"),
    )


def _truncate(args: Mapping[str, Any]) -> dict[str, Any]:
    """ms-swift's default truncation drops rows longer than max_length: the run would then
    train fewer rows and steps than it was set up with, so a shorter rung cuts them instead."""
    if str(args.get("truncation_strategy") or "delete") == "delete":
        return {"truncation_strategy": "right"}
    return {}


def _emergency(args: Mapping[str, Any], allow_shorter: bool) -> Rung | None:
    """LoRA's last rung: the memory settings of the seeds' emergency config (preset
    oom-fallback) that the ladder has not set yet."""
    delta: dict[str, Any] = {}
    if str(args.get("attn_impl") or "") == "eager":
        delta["attn_impl"] = "sdpa"
    if allow_shorter:
        length = _count(args.get("max_length"), 0)
        if length == 0 or length > EMERGENCY_LENGTH:
            delta["max_length"] = EMERGENCY_LENGTH
            delta.update(_truncate(args))
        if truthy(args.get("packing")):
            delta["packing"] = False
    if not delta:
        return None
    said = {
        "attn_impl": "sdpa attention",
        "max_length": f"max_length {EMERGENCY_LENGTH}",
        "truncation_strategy": "longer rows cut at the end",
        "packing": "no packing",
    }
    return Rung(
        "emergency config",
        delta,
        "the seeds' out-of-memory emergency config (preset oom-fallback): "
        + ", ".join(said[k] for k in delta),
    )


def _more_sharding(args: Mapping[str, Any], world: int, use_cpu: bool) -> Rung | None:
    """Full tuning: hold less per GPU with DeepSpeed. On one process ZeRO splits nothing,
    so only its offload variants free memory there."""
    current = _deepspeed_name(args.get("deepspeed"))
    if current is not None and current not in STAGE:
        return None  # the user's own DeepSpeed JSON: sftctl does not rewrite it
    successor = NEXT_ZERO if world > 1 else NEXT_ZERO_ONE_PROCESS
    target = successor.get(current)
    if target is None:
        return None
    before = "DDP" if current is None and world > 1 else (current or "no DeepSpeed")
    what = {
        "zero2": f"gradients and optimizer states split over {world} processes",
        "zero3": f"weights, gradients and optimizer states split over {world} processes",
        "zero2_offload": "optimizer states on the host",
        "zero3_offload": "weights and optimizer states on the host",
    }[target]
    delta: dict[str, Any] = {"deepspeed": target}
    if use_cpu:
        delta["fp16"] = False  # DeepSpeed on the CPU trains in fp32
    notes = []
    if args.get("device_map") not in (None, ""):
        delta["device_map"] = None
        notes.append("device_map is dropped: DeepSpeed cannot run with it")
    return Rung(
        "more sharding",
        delta,
        f"{before} -> DeepSpeed {target}: {what}",
        relayout=current is None or STAGE[target] != STAGE[current],
        notes=notes,
    )
