"""Choose a layout that fits: every way to spread a run over the GPUs, its estimated peak,
and the best one, with a per-device batch and accumulation that keep the effective batch.

The order of preference: no offload before offload (the host's PCIe link is slower than any
GPU interconnect), full precision before 4-bit (QLoRA changes what is trained), data
parallel before model parallel (device_map runs the GPUs one after another), but for LoRA a
whole base on each GPU before ZeRO-3 (ms-swift's own ZeRO-3 LoRA runs log about the whole
base per GPU anyway: memory.SHARDED_LORA_NOTE), then fewer bytes communicated per optimizer
step, then a larger per-device batch (fewer, fuller steps). A layout must also fit a node's
RAM when it is known (--host-mem, or this machine's when planning for its own GPUs).
The learning rate follows the seed documents: full fine-tuning 1e-5 for about 7B, 5e-6 for
13B, 2e-6 for 30B, 1e-6 for 65B and up; LoRA 2e-4 (1e-4 for QLoRA, steadier).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sftctl.checks.registry import report
from sftctl.config.schema import Launch
from sftctl.errors import ConfigError
from sftctl.resources import memory
from sftctl.resources.layout import plan as plan_layout
from sftctl.resources.params import GIB, count
from sftctl.resources.shapes import Shape

# Plan into this share of each GPU's memory: NCCL's buffers and other tools' CUDA contexts
# take some beyond the estimate (which counts this run's own context).
USABLE = 0.95


@dataclass(frozen=True)
class Layout:
    """One way to run: how many processes, which sharding, which quantization."""

    name: str
    nproc: int
    deepspeed: str | None = None
    quant_bits: int | None = None
    offload: bool = False
    model_parallel: bool = False


@dataclass
class Option:
    """A layout with the largest batch that fits, or why none does."""

    layout: Layout
    fits: bool
    per_device_batch: int | None
    grad_accum: int | None
    peak_gib: float | None
    comm_gib: float
    why: str
    doubtful: bool = False  # LoRA on ZeRO-3: measured runs hold more than the estimate

    def rank(self) -> tuple[int, int, int, int, float, int]:
        lay = self.layout
        return (
            int(lay.offload),
            int(lay.quant_bits is not None),
            int(self.doubtful),
            int(lay.model_parallel),
            round(self.comm_gib, 1),
            -(self.per_device_batch or 0),
        )


@dataclass
class Plan:
    """Every option, the pick, and the settings that go with it."""

    model: str
    tuner: str
    gpus: int
    gpu_gib: float
    max_length: int
    effective_batch: int
    learning_rate: float
    learning_rate_why: str
    options: list[Option]
    pick: Option | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pick"] = None if self.pick is None else asdict(self.pick)
        return out


def learning_rate(shape: Shape, tuner: str, quantized: bool) -> tuple[float, str]:
    """The seed documents' learning rate for this size and method."""
    if tuner == "lora":
        return (1e-4, "QLoRA: 1e-4, steadier than LoRA's 2e-4") if quantized else (2e-4, "LoRA: 2e-4")
    billions = shape.total() / 1e9
    size = count(shape.total())
    for limit, lr in ((10, 1e-5), (20, 5e-6), (50, 2e-6)):
        if billions < limit:
            return lr, f"full fine-tuning of {size} parameters: {lr:g}"
    return 1e-6, f"full fine-tuning of {size} parameters: 1e-6"


def layouts(gpus: int, tuner: str) -> list[Layout]:
    """The layouts ms-swift can run on ``gpus`` GPUs of one node."""
    out = [Layout("ddp" if gpus > 1 else "single", gpus)]
    if gpus > 1:  # on one GPU, ZeRO has nothing to split: only its offload helps
        out += [Layout("zero2", gpus, deepspeed="zero2"), Layout("zero3", gpus, deepspeed="zero3")]
    if gpus > 1:
        out.append(Layout("device_map", 1, model_parallel=True))
        for per in range(2, gpus):
            if gpus % per == 0:
                name = f"ddp+device_map ({per} GPUs per process)"
                out.append(Layout(name, gpus // per, model_parallel=True))
    out += [
        Layout("zero2_offload", gpus, deepspeed="zero2_offload", offload=True),
        Layout("zero3_offload", gpus, deepspeed="zero3_offload", offload=True),
    ]
    if tuner == "lora":
        out.append(Layout(f"qlora ({'ddp' if gpus > 1 else 'single'})", gpus, quant_bits=4))
        if gpus > 1:
            out.append(Layout("qlora (device_map)", 1, quant_bits=4, model_parallel=True))
    return out


def _comm_gib(shape: Shape, lay: Layout, trainable: int, accum: int) -> float:
    """Bytes each GPU sends per optimizer step: a ring all-reduce of bf16 gradients (DDP,
    ZeRO-1/2) moves about twice their size; ZeRO-3 also gathers the weights in forward and
    backward of every micro-batch; device_map passes only activations between its GPUs."""
    if lay.nproc == 1:
        return 0.0
    grads = 2 * trainable * 2
    if lay.deepspeed and lay.deepspeed.startswith("zero3"):
        grads += 2 * shape.total() * 2 * accum
    return grads / GIB


def make_plan(
    shape: Shape,
    base_args: Mapping[str, Any],
    tuner: str,
    gpus: int,
    gpu_bytes: float,
    max_length: int,
    effective_batch: int,
    host_bytes: float | None = None,
) -> Plan:
    """Every layout on ``gpus`` GPUs of ``gpu_bytes`` each (and a node's ``host_bytes`` of
    RAM, when known), the largest batch that fits in each, and the pick."""
    options: list[Option] = []
    usable = gpu_bytes * USABLE
    for lay in layouts(gpus, tuner):
        args = {**base_args, "tuner_type": tuner, "max_length": max_length, "gradient_checkpointing": True}
        for key in ("deepspeed", "quant_bits", "quant_method"):
            args.pop(key, None)
        if lay.deepspeed:
            args["deepspeed"] = lay.deepspeed
        if lay.quant_bits:
            args.update(quant_bits=lay.quant_bits, quant_method="bnb")
        if effective_batch % lay.nproc:
            options.append(
                Option(lay, False, None, None, None, 0.0,
                       f"the effective batch {effective_batch} does not divide over {lay.nproc} processes")
            )  # fmt: skip
            continue
        per_process = effective_batch // lay.nproc
        batches = [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= per_process and per_process % b == 0]
        chosen: tuple[int, int, float] | None = None
        smallest: float | None = None
        host_need = 0.0
        for b in batches:
            run_args = {**args, "per_device_train_batch_size": b}
            run_args["gradient_accumulation_steps"] = per_process // b
            layout = plan_layout(Launch(gpus=list(range(gpus)), nproc_per_node=lay.nproc), run_args)
            guess = memory.estimate(shape, run_args, layout)
            peak = guess.peak_bytes + memory.CUDA_CONTEXT_BYTES
            smallest, host_need = peak, guess.host_bytes
            if peak <= usable:
                chosen = (b, per_process // b, peak)
                break
        if chosen is not None and host_bytes is not None and host_need > host_bytes * USABLE:
            why = f"needs {host_need / GIB:.0f} GiB of host RAM; {host_bytes * USABLE / GIB:.0f} GiB usable"
            options.append(Option(lay, False, None, None, round(chosen[2] / GIB, 1), 0.0, why))
            continue
        trainable = memory.trainable_of(shape, args)
        if chosen is None:
            need = (smallest or 0) / GIB
            options.append(
                Option(lay, False, None, None, round(need, 1), 0.0,
                       f"needs {need:.1f} GiB per GPU even at batch 1; {usable / GIB:.1f} GiB usable")
            )  # fmt: skip
            continue
        b, accum, peak = chosen
        options.append(
            Option(
                lay,
                True,
                b,
                accum,
                round(peak / GIB, 1),
                round(_comm_gib(shape, lay, trainable, accum), 2),
                f"batch {b} x {lay.nproc} process(es) x accumulation {accum}: {peak / GIB:.1f} GiB per GPU",
                doubtful=tuner == "lora" and (lay.deepspeed or "").startswith("zero3"),
            )
        )
    fitting = sorted((o for o in options if o.fits), key=Option.rank)
    lr, lr_why = learning_rate(shape, tuner, bool(fitting and fitting[0].layout.quant_bits))
    notes = []
    if effective_batch < 32:
        notes.append("the seed documents keep the effective batch at 32 or more")
    pick = fitting[0].layout if fitting else None
    if tuner == "lora" and pick and pick.deepspeed and pick.deepspeed.startswith("zero3"):
        notes.append(memory.SHARDED_LORA_NOTE)
    return Plan(
        model=shape.name,
        tuner=tuner,
        gpus=gpus,
        gpu_gib=round(gpu_bytes / GIB, 1),
        max_length=max_length,
        effective_batch=effective_batch,
        learning_rate=lr,
        learning_rate_why=lr_why,
        options=options,
        pick=fitting[0] if fitting else None,
        notes=notes,
    )


def _host_gpus(gpus: str | None, count: int | None) -> tuple[list[int], float | None]:
    """The GPU ids to plan for and, when they are this machine's, their smallest free memory."""
    import os

    from sftctl.config.schema import parse_gpus
    from sftctl.errors import RefusedError
    from sftctl.resources.gpus import host_view
    from sftctl.resources.leases import Picker

    if count is not None:
        return list(range(count)), None
    text = (gpus or "auto").strip().lower()
    if text.startswith("auto"):
        picker = Picker(os.environ, host_view, take=False)
        tail = text.split(":", 1)[1] if ":" in text else ""
        wanted = int(tail) if tail.isascii() and tail.isdigit() else None
        try:
            ids = picker(wanted, 1)
        except RefusedError as exc:
            why = "; ".join(p.message for p in exc.problems)
            raise ConfigError(
                problems=[
                    report(
                        "C002",
                        "--gpus",
                        f"{why}",
                        "plan for a machine you are not on: --gpu-count 8 --gpu-mem 80GiB",
                    )
                ]
            ) from None
        free = [picker.view.described[i].free_bytes for i in ids if i in picker.view.described]
        return ids, (min(free) if free else None)
    try:
        ids = parse_gpus(gpus or "")
        if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"'{gpus}' has a negative or repeated GPU id")
        return ids, None
    except ValueError as exc:
        raise ConfigError(
            problems=[
                report("C002", "--gpus", str(exc), "give auto, auto:N or ids (0,1,2,3); a count: --gpu-count")
            ]
        ) from None


def plan_for(
    model: str,
    tuner: str,
    gpus: str | None,
    gpu_count: int | None,
    gpu_bytes: float | None,
    max_length: int,
    effective_batch: int,
    host_bytes: float | None = None,
) -> tuple[Plan, list[int]]:
    """The plan for ``model`` on ``--gpu-count`` GPUs, or the ones ``--gpus`` names (auto: the
    free ones here); a node's RAM is ``host_bytes`` (unknown for --gpu-count: another machine)."""
    from sftctl.resources.shapes import UnknownModel, find

    try:
        shape = find(model)
    except UnknownModel as exc:
        raise ConfigError(
            problems=[
                report("M001", "--model", str(exc), "point --model at a folder holding its config.json")
            ]
        ) from None
    ids, free = _host_gpus(gpus, gpu_count)
    if not ids:
        raise ConfigError(
            problems=[report("C002", "--gpus", "names no GPU", "give ids (0,1,2,3) or --gpu-count N")]
        )
    memory_bytes = gpu_bytes or free
    if memory_bytes is None:
        raise ConfigError(
            problems=[
                report(
                    "C002",
                    "--gpu-mem",
                    "the memory per GPU is not known: these GPUs are not this machine's",
                    "give it, e.g. --gpu-count 8 --gpu-mem 80GiB",
                )
            ]
        )
    # A node's RAM: given, or this machine's when the GPUs are this machine's.
    host = host_bytes if host_bytes is not None else (None if gpu_count is not None else _this_machines_ram())
    try:
        return make_plan(shape, {}, tuner, len(ids), memory_bytes, max_length, effective_batch, host), ids
    except memory.TooLarge as exc:
        flag = "--max-length" if exc.key == "max_length" else "--batch"
        raise ConfigError(problems=[report("M003", flag, str(exc), "give a size a GPU can hold")]) from None


def _this_machines_ram() -> float | None:
    """MemTotal of /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# The presets a written plan extends: the seeds' shared settings for each method.
BASE_PRESET = {"full": "base-full-qwen3-8b", "lora": "base-lora-swanlab"}


def plan_config(result: Plan, ids: list[int]) -> str:
    """The pick as a config that extends a preset, with a comment saying why."""
    from sftctl.config.yamlio import dump

    if result.pick is None:
        raise ConfigError(
            problems=[
                report(
                    "M002",
                    "--output",
                    "no layout fits, so there is no config to write",
                    "more or larger GPUs, a shorter --max-length, or LoRA",
                )
            ]
        )
    pick = result.pick
    lay = pick.layout
    model = result.model
    if model.startswith(("./", "../", "~")) or Path(model).expanduser().is_dir():
        # The written file may be used from anywhere: a local folder goes in as an absolute path.
        model = str(Path(model).expanduser().resolve())
    args: dict[str, Any] = {
        "model": model,
        "tuner_type": result.tuner,
        "max_length": result.max_length,
        "per_device_train_batch_size": pick.per_device_batch,
        "gradient_accumulation_steps": pick.grad_accum,
        "learning_rate": result.learning_rate,
        "gradient_checkpointing": True,
    }
    if lay.deepspeed:
        args["deepspeed"] = lay.deepspeed
    if lay.quant_bits:
        args.update(quant_bits=lay.quant_bits, quant_method="bnb")
    doc = {
        "description": f"{result.tuner} SFT of {result.model}: {lay.name} on {result.gpus} GPU(s)",
        "extends": BASE_PRESET[result.tuner],
        "launch": {"gpus": ",".join(str(i) for i in ids), "nproc_per_node": lay.nproc},
        "args": args,
    }
    head = [
        f"# Written by sftctl plan: {result.model}, {result.tuner}, {result.gpus} x {result.gpu_gib} GiB,",
        f"# max_length {result.max_length}, effective batch {result.effective_batch}.",
        f"# Pick: {lay.name}: {pick.why}.",
        f"# Learning rate: {result.learning_rate_why}.",
    ]
    return "\n".join(head) + "\n" + dump(doc, for_people=True)
