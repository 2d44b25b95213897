"""Peak memory per GPU of an ms-swift SFT run, before launch, term by term. No torch.

The quantity predicted is the peak of ``torch.cuda.max_memory_reserved`` on the busiest
GPU: what ms-swift logs as ``memory(GiB)`` (rank 0's running maximum). nvidia-smi shows
more: the CUDA context (about 0.5 GiB per process) and NCCL buffers come on top. On the
CPU (``use_cpu``) it is the resident anonymous memory (RssAnon) of one training process
beyond what importing torch and ms-swift costs.

How each case holds its state in ms-swift 4.x with transformers 5, PEFT and DeepSpeed
(read from their code; see the README's memory section for the sources):

- No DeepSpeed, bf16/fp16: weights, gradients and AdamW's two moments all in the weights'
  dtype (2 + 2 + 4 bytes per trainable parameter); no fp32 master copy. DDP keeps a second
  copy of the gradients in its buckets. ``torch_dtype: float32`` on a GPU trains in fp16
  autocast: 4 + 4 + 8 bytes, and autocast caches an fp16 copy of the weights.
- DeepSpeed (bf16): fp32 master weights and fp32 moments (12 bytes per trainable
  parameter) split over the ranks from ZeRO-1 on; ZeRO-2 splits the gradients, ZeRO-3
  the weights too (each layer gathered whole while it runs); offload moves master and
  moments (ZeRO-3 offload: the weights too) to the host.
- LoRA: the frozen base in its dtype, the adapters in fp32 (PEFT upcasts them; DeepSpeed
  casts them back to bf16), gradients and moments for the adapters only. QLoRA (bnb)
  stores the decoder's linear weights in 4 bits (with one 8-bit absmax per 64 values and
  their fp32 scales: 0.516 bytes per parameter) or 8 bits; embeddings, lm_head, norms and
  MoE experts stay in the base dtype.
- Activations: with gradient checkpointing (the default) each decoder layer keeps its
  input and one layer is recomputed at a time; without it every layer keeps its
  intermediates. A batch is padded to its longest row (packing fills every row to
  max_length). Logits are computed only where a label follows (``logits_to_keep``) and
  the loss works in fp32 over the vocabulary.
- The optimizer state is made at the first step and kept; with gradient accumulation > 1
  (ms-swift's default is 16 / (batch x ranks)) the gradients are held through the next
  micro-batches' forward and backward.

The coefficients marked "fitted" are global, one set for every model and run, fitted to
the measurements in tests/data/memory_reference.json and to CPU runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftctl.checks.registry import report
from sftctl.errors import ConfigError
from sftctl.resources.layout import Layout, default_accumulation, truthy
from sftctl.resources.params import GIB, count
from sftctl.resources.shapes import Shape, UnknownModel, find

if TYPE_CHECKING:
    from sftctl.config.resolve import Resolved

DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 2}

# --- global coefficients ---------------------------------------------------------------------
# Bytes one decoder layer keeps per token for backward, per unit of width (bf16): the two
# RMSNorms (fp32 inside: 8 bytes per hidden unit), q/k/v/attention output/o-proj/residual
# (~2 bytes each), and the SwiGLU MLP's gate, up, activation and product (2 bytes each).
# fitted: scales the whole per-layer working set.
LAYER_SCALE = 1.0
# Recomputing a checkpointed layer and running its backward keeps about this many copies
# of the layer's working set alive at once. fitted.
RECOMPUTE_COPIES = 2.0
# Bytes per logit position and vocabulary entry at the start of backward: the fp32 copy,
# the saved fp32 log-softmax and the fp32 gradient (the bf16 logits are gone by then).
LOGIT_BYTES = 12.0
# The caching allocator reserves more than is allocated (block rounding, fragmentation). fitted.
RESERVED_FACTOR = 1.05
# cuBLAS and cuDNN workspaces, the allocator's first blocks: per GPU. fitted.
FIXED_BYTES = 0.6 * GIB
# Elements in DeepSpeed's reduce bucket when its config says "auto" (transformers: hidden^2);
# ms-swift's zero2.json sets 2e8.
ZERO2_BUCKET = 2e8
# What nvidia-smi shows beyond max_memory_reserved: the CUDA context of a process.
CUDA_CONTEXT_BYTES = 0.5 * GIB
# What the estimate cannot model: ms-swift's own examples of these layouts log far more.
SHARDED_LORA_NOTE = (
    "LoRA under ZeRO-3/FSDP: this counts each GPU's share of the frozen base, but ms-swift's own "
    "examples of these layouts log up to the whole base per GPU (its Qwen2.5-7B ZeRO-3 and FSDP2 "
    "LoRA runs on 2 GPUs: 14.7-16 GiB; DeepSpeed issue 5109): leave room for the whole base, or "
    "prefer ZeRO-2 or device_map"
)
# ZeRO-3 gathers at most this many elements at once (stage3_max_live_parameters).
ZERO3_MAX_LIVE = 1e9


@dataclass(frozen=True)
class Term:
    """One line of the estimate."""

    name: str
    bytes: float
    why: str


@dataclass
class Estimate:
    """Peak memory per GPU (or CPU process) and what makes it up."""

    model: str
    shape_source: str
    quantity: str
    layout: str
    devices: int
    terms: list[Term]
    peak_bytes: float
    host_bytes: float
    checkpoint_bytes: float
    params: int
    trainable: int
    tokens: int  # per micro-batch per process
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The estimate as JSON-ready data (sizes in GiB, rounded)."""
        out = asdict(self)
        out["peak_gib"] = round(self.peak_bytes / GIB, 2)
        out["host_gib"] = round(self.host_bytes / GIB, 2)
        out["checkpoint_gib"] = round(self.checkpoint_bytes / GIB, 2)
        out["terms"] = [{"name": t.name, "gib": round(t.bytes / GIB, 3), "why": t.why} for t in self.terms]
        for key in ("peak_bytes", "host_bytes", "checkpoint_bytes"):
            out[key] = int(out[key])
        return out


@dataclass(frozen=True)
class Zero:
    """What the estimate needs from a DeepSpeed config."""

    stage: int
    offload_optimizer: bool
    offload_params: bool
    bucket: float | None  # reduce_bucket_size in elements; None: "auto"


_BUILTIN_ZERO = {
    "zero0": Zero(0, False, False, None),
    "zero1": Zero(1, False, False, None),
    "zero2": Zero(2, False, False, ZERO2_BUCKET),
    "zero2_offload": Zero(2, True, False, ZERO2_BUCKET),
    "zero3": Zero(3, False, False, None),
    "zero3_offload": Zero(3, True, True, None),
}


def zero_config(value: Any, cwd: Path | None = None) -> Zero | None:
    """ms-swift's ``--deepspeed`` value (a built-in name or a JSON file) as a Zero."""
    if value in (None, "", "null"):
        return None
    text = str(value)
    if text in _BUILTIN_ZERO:
        return _BUILTIN_ZERO[text]
    path = Path(text).expanduser()
    if not path.is_absolute() and cwd is not None:
        path = cwd / path
    try:
        zero = json.loads(path.read_text(encoding="utf-8")).get("zero_optimization") or {}

        def offloaded(key: str) -> bool:
            return str((zero.get(key) or {}).get("device", "none")) in ("cpu", "nvme")

        bucket = zero.get("reduce_bucket_size")
        return Zero(
            int(zero.get("stage", 0)),
            offloaded("offload_optimizer"),
            offloaded("offload_param"),
            float(bucket) if isinstance(bucket, (int, float)) and not isinstance(bucket, bool) else None,
        )
    except (OSError, ValueError, AttributeError, TypeError):
        stage = 3 if "3" in text else 2 if "2" in text else 1
        return Zero(stage, "offload" in text, stage == 3 and "offload" in text, None)


_ALL = ("q", "k", "v", "o", "gate", "up", "down")
_NAMES = {
    "q_proj": ("q",),
    "k_proj": ("k",),
    "v_proj": ("v",),
    "o_proj": ("o",),
    "gate_proj": ("gate",),
    "up_proj": ("up",),
    "down_proj": ("down",),
    "c_attn": ("q", "k", "v"),  # Qwen (1) and GPT-2 style fused projections
    "query_key_value": ("q", "k", "v"),
    "w1": ("gate",),
    "w2": ("up",),
    "dense_h_to_4h": ("gate", "up"),
    "dense_4h_to_h": ("down",),
}


def lora_targets(value: Any) -> tuple[str, ...]:
    """Which projections ``target_modules`` adapts (ms-swift's default: all-linear)."""
    names = value if isinstance(value, list) else [value] if value else ["all-linear"]
    out: list[str] = []
    for name in (str(n) for n in names):
        if name.lower() in ("all-linear", "all", "all_linear"):
            return _ALL
        out += [p for p in _NAMES.get(name.split(".")[-1], ()) if p not in out]
    return tuple(out) or _ALL


@dataclass(frozen=True)
class Run:
    """The settings of a run that its memory depends on, read from ms-swift's arguments."""

    tuner: str  # full | lora
    dtype: int  # bytes of the weights
    amp_fp16: bool  # fp32 weights trained in fp16 autocast (torch_dtype float32 on a GPU)
    quant_bits: int | None
    dora: bool
    lora_rank: int
    lora_dropout: bool
    targets: tuple[str, ...]
    batch: int
    seq_len: int  # the longest row of a batch
    label_tokens: int | None  # tokens with a label per row; None: the whole row
    grad_accum: int
    checkpointing: bool
    eager_attention: bool
    logits_to_keep: bool
    fused_loss: bool  # liger / cut cross-entropy: no full logits
    fused_adamw: bool
    freeze_vit: bool
    save_optimizer: bool


# Beyond these a run fits no machine there is: an estimate would only be a huge number.
LIMITS = {
    "per_device_train_batch_size": 1 << 16,
    "max_length": 1 << 24,
    "gradient_accumulation_steps": 1 << 20,
    "lora_rank": 1 << 16,
}


class TooLarge(ValueError):
    """A run setting beyond any machine."""

    def __init__(self, key: str, value: int) -> None:
        digits = str(value) if value < 10**4000 else "9" * 4001  # str() of larger ints is refused
        shown = digits if len(digits) <= 12 else f"{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"
        super().__init__(f"{key} {shown} is beyond any machine (at most {LIMITS[key]})")
        self.key = key


def _int(value: Any, default: int, key: str = "") -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return default
    if key in LIMITS and value > LIMITS[key]:
        raise TooLarge(key, value)
    return value


def _off(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() in ("false", "0", "no"))


def read_run(
    args: Mapping[str, Any],
    shape: Shape,
    world: int,
    cpu: bool,
    seq_len: int | None = None,
    label_tokens: int | None = None,
) -> Run:
    """The memory-relevant settings, with ms-swift 4.x's defaults where an argument is unset."""
    tuner = str(args.get("tuner_type") or args.get("train_type") or "lora").lower()
    dtype_name = str(args.get("torch_dtype") or "bfloat16").lower()
    dtype = DTYPE_BYTES.get(dtype_name, 2)
    # ms-swift quantizes only when quant_method is set; quant_bits reads as text ('4').
    bits = str(args.get("quant_bits")) if args.get("quant_method") not in (None, "") else ""
    batch = _int(args.get("per_device_train_batch_size"), 1, "per_device_train_batch_size")
    # ms-swift's max_length defaults to the model's own limit.
    max_length = _int(args.get("max_length"), 0, "max_length") or shape.max_positions
    packing = truthy(args.get("packing"))
    length = max_length if packing else min(seq_len or max_length, max_length)
    accum = _int(
        args.get("gradient_accumulation_steps"),
        default_accumulation(batch, world),
        "gradient_accumulation_steps",
    )
    optim = str(args.get("optim") or "adamw_torch_fused")
    return Run(
        tuner="full" if tuner == "full" else "lora",
        dtype=dtype,
        amp_fp16=dtype == 4 and not cpu,
        quant_bits=int(bits) if bits in ("4", "8") else None,
        dora=truthy(args.get("use_dora")),
        lora_rank=_int(args.get("lora_rank"), 8, "lora_rank"),
        lora_dropout=args.get("lora_dropout", 0.05) not in (0, 0.0, "0", "0.0"),
        targets=lora_targets(args.get("target_modules")),
        batch=batch,
        seq_len=length,
        label_tokens=label_tokens,
        grad_accum=accum,
        checkpointing=not _off(args.get("gradient_checkpointing", True)),
        eager_attention=str(args.get("attn_impl") or "") == "eager",
        logits_to_keep=not _off(args.get("use_logits_to_keep", True)),
        fused_loss=truthy(args.get("use_liger_kernel")) or truthy(args.get("use_cce")),
        fused_adamw=optim in ("adamw_torch_fused", "adamw_apex_fused"),
        freeze_vit=not _off(args.get("freeze_vit", True)),
        save_optimizer=not truthy(args.get("save_only_model")),
    )


def _layer_bytes(shape: Shape, run: Run, act: int) -> float:
    """Bytes one decoder layer keeps per token for its backward."""
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    width = shape.experts_per_token * shape.expert_intermediate if shape.experts else shape.intermediate
    width += shape.shared_intermediate
    norms = 8 * shape.hidden  # two RMSNorms computed in fp32
    attention = act * (5 * shape.hidden + q + 2 * kv)
    mlp = act * 4 * width
    per = norms + attention + mlp
    if run.tuner == "lora" and run.lora_dropout:
        # Each adapted projection keeps its dropped-out input and the dropout mask.
        inputs = {"q": shape.hidden, "k": shape.hidden, "v": shape.hidden, "o": q}
        inputs.update(gate=shape.hidden, up=shape.hidden, down=width)
        per += sum(inputs[t] for t in run.targets) * (act + 1)
    return LAYER_SCALE * per


def trainable_of(shape: Shape, args: Mapping[str, Any]) -> int:
    """The parameters a run with ``args`` trains."""
    return _trainable(shape, read_run(args, shape, 1, False))


def _trainable(shape: Shape, run: Run) -> int:
    """The parameters that get gradients and optimizer state."""
    if run.tuner == "full":
        vit = shape.vision.params() if shape.vision else 0
        return shape.total() - (vit if run.freeze_vit else 0)
    out = shape.lora_params(run.lora_rank, run.targets)
    return out + (shape.lora_magnitudes(run.targets) if run.dora else 0)


def estimate(
    shape: Shape,
    args: Mapping[str, Any],
    layout: Layout,
    *,
    seq_len: int | None = None,
    label_tokens: int | None = None,
    cwd: Path | None = None,
) -> Estimate:
    """Peak memory per device for ``shape`` trained with ``args`` on ``layout``.

    ``seq_len`` is the longest row the data holds (default: max_length); ``label_tokens``
    how many of its tokens carry a label (default: all)."""
    cpu = layout.use_cpu or layout.mode == "cpu"
    world = max(1, layout.nproc * layout.nnodes)
    run = read_run(args, shape, world, cpu, seq_len, label_tokens)
    zero = None if cpu else zero_config(args.get("deepspeed"), cwd)
    fsdp = layout.shard == "fsdp" and not cpu
    fsdp_offload = fsdp and "offload" in str(args.get("fsdp") or "")
    k = 1
    if layout.gpus and layout.nproc and len(layout.gpus) // layout.nproc >= 2:
        k = len(layout.gpus) // layout.nproc  # device_map: the layers split over k GPUs
    sharded = (zero is not None and zero.stage == 3) or fsdp
    w = run.dtype
    act = 4 if run.amp_fp16 or cpu and w == 4 else 2
    terms: list[Term] = []
    notes: list[str] = []

    total = shape.total()
    trainable = _trainable(shape, run)
    # The busiest GPU of a device_map split: its share of the layers, plus the embeddings
    # (first GPU) or the lm_head and logits (last GPU).
    per_layer = shape.decoder_params() / shape.layers
    layers_here = math.ceil(shape.layers / k)
    share = (
        1.0
        if k == 1
        else (layers_here * per_layer + max(shape.embedding_params(), shape.head_params())) / total
    )

    # --- weights ---------------------------------------------------------------------------
    if run.quant_bits and run.tuner == "lora":
        quantized = shape.linear_params(experts=False)
        per = 0.5 + (1 + 4 / 256) / 64 if run.quant_bits == 4 else 1 + 4 / shape.hidden
        weights = quantized * per + (total - quantized) * w
        why = f"{count(quantized)} linear weights in {run.quant_bits} bits ({per:.3f} B), the rest {w} B"
    else:
        weights = total * w
        why = f"{count(total)} parameters x {w} B"
    adapter_bytes = 0.0
    if run.tuner == "lora":
        adapter_bytes = trainable * (2 if zero else 4)
        why += f"; adapters {count(trainable)} x {2 if zero else 4} B"
    weights = (weights + adapter_bytes) * share
    gathered = 0.0
    if sharded:
        if (zero and zero.offload_params) or fsdp_offload:
            weights, why = 0.0, "offload keeps the weights on the host"
        else:
            weights, why = weights / world, f"split over {world} ranks: " + why
        # The layer that runs (and the next, prefetched) is gathered whole; so are the
        # embeddings and the lm_head when they run.
        biggest = max(2 * per_layer, shape.embedding_params(), shape.head_params())
        gathered = min(biggest, ZERO3_MAX_LIVE) * w
    elif k > 1:
        why += f"; the busiest of {k} GPUs of a device_map"
    terms.append(Term("weights", weights, why))
    if gathered:
        terms.append(
            Term("gathered weights", gathered, "the layer being computed (and the next), gathered whole")
        )
    if run.amp_fp16 and run.tuner == "full":
        terms.append(
            Term("autocast cache", total * 2 * share, "fp16 copies of the fp32 weights during forward")
        )

    # --- gradients, optimizer, master weights -----------------------------------------------
    t = trainable * share
    ddp = world > 1 and zero is None and not fsdp
    if zero is not None:
        g = 2.0 if run.tuner == "full" or zero else 4.0
        split = world if zero.stage >= 2 else 1
        bucket = (zero.bucket or shape.hidden**2) * 2
        if zero.offload_optimizer:
            # Reduced gradients go straight to the host's fp32 partition: the GPU keeps the bucket.
            grads = bucket
            gwhy = f"a {bucket / 2**20:.0f} MiB reduce bucket; reduced gradients go to the host (offload)"
        else:
            grads = t * g / split + bucket
            gwhy = f"{g:.0f} B per trainable parameter" + (f", split over {world} ranks" if split > 1 else "")
            gwhy += f", plus a {bucket / 2**20:.0f} MiB reduce bucket"
        if zero.offload_optimizer:
            opt, owhy = 0.0, "fp32 moments and master weights are on the host (offload)"
            step = 0.0
        else:
            opt = t * 12 / world
            owhy = "fp32 master weights and moments, 12 B per trainable parameter" + (
                f" split over {world} ranks" if world > 1 else ""
            )
            # The fp32 gradient partition made at the step (ZeRO-3: per sub-group of 1e9).
            step = 4 * (min(t / world, 1e9) if zero.stage == 3 else t / world)
    else:
        g = 4.0 if run.tuner == "lora" or run.amp_fp16 or w == 4 else float(w)
        state = 4.0 if run.tuner == "lora" or run.amp_fp16 or w == 4 else float(w)
        div = world if fsdp else 1
        grads = t * g / div * (2 if ddp else 1)
        gwhy = f"{g:.0f} B per trainable parameter" + ("; DDP's buckets hold a second copy" if ddp else "")
        opt = 0.0 if fsdp_offload else t * 2 * state / div
        owhy = f"AdamW's two moments, {state:.0f} B each per trainable parameter"
        if fsdp_offload:
            grads, owhy = 0.0, "the optimizer runs on the host (offload)"
        step = 0.0 if run.fused_adamw or fsdp_offload else t * state / div  # foreach AdamW's temporaries
    terms.append(Term("gradients", grads, gwhy))
    terms.append(Term("optimizer", opt, owhy))

    # --- activations and logits ---------------------------------------------------------------
    tokens = run.batch * run.seq_len
    layer = _layer_bytes(shape, run, act) * tokens
    if run.checkpointing:
        saved = layers_here * tokens * shape.hidden * act
        activations = saved + RECOMPUTE_COPIES * layer
        awhy = f"gradient checkpointing: {layers_here} layer inputs + one layer recomputed, {tokens} tokens"
    else:
        activations = layers_here * layer
        awhy = f"{layers_here} layers' intermediates for {tokens} tokens (no gradient checkpointing)"
    if run.eager_attention:
        activations += (
            (1 if run.checkpointing else layers_here) * run.batch * shape.heads * run.seq_len**2 * act * 2
        )
        awhy += "; eager attention keeps each head's softmax"
    if run.dora:
        activations += 3 * shape.biggest_projection() * 4
        awhy += "; DoRA's weight-sized temporaries"
    terms.append(Term("activations", activations, awhy))
    positions = run.batch * (run.label_tokens or run.seq_len) if run.logits_to_keep else tokens
    # (Under a device_map the last GPU computes them: the busiest one, counted here.)
    logits = 0.0 if run.fused_loss else positions * shape.vocab * LOGIT_BYTES
    terms.append(
        Term(
            "logits and loss",
            logits,
            "a fused loss computes no full logits"
            if run.fused_loss
            else f"{positions} positions x {shape.vocab} vocabulary, fp32 loss",
        )
    )

    # --- the peak ---------------------------------------------------------------------------
    static = weights + gathered + opt + (total * 2 * share if run.amp_fp16 and run.tuner == "full" else 0.0)
    held = grads if run.grad_accum > 1 else 0.0
    dynamic = max(held + activations + logits, grads + step)
    allocated = static + dynamic
    if zero is not None and zero.stage in (1, 2) and weights + t * w > allocated:
        # DeepSpeed flattens the trainable weights beside the originals, on the GPU only when
        # it has room (on the host otherwise): it never makes a run fail, but ms-swift's
        # memory(GiB), a lifetime maximum, can show it.
        flat = (weights + t * w) * RESERVED_FACTOR + FIXED_BYTES
        notes.append(
            f"ms-swift's logged memory(GiB) may show up to {flat / 2**30:.1f} GiB: at start-up DeepSpeed "
            "flattens the trainable weights beside the originals when the GPU has room for it"
        )
    if cpu:
        peak = allocated
    else:
        peak = allocated * RESERVED_FACTOR + FIXED_BYTES
        terms.append(
            Term(
                "allocator and workspaces",
                peak - allocated,
                f"caching allocator slack ({RESERVED_FACTOR - 1:.0%}) and cuBLAS/cuDNN workspaces",
            )
        )
    rows = (
        "packing fills each row to max_length" + (", whatever --seq-len says" if seq_len else "")
        if truthy(args.get("packing"))
        else f"the longest row given, capped at max_length {run.seq_len}"
        if seq_len and seq_len > run.seq_len
        else "the longest row given"
        if seq_len
        else "max_length: pass --seq-len for your data's longest row"
    )
    notes.append(f"tokens per micro-batch: {run.batch} row(s) x {run.seq_len} ({rows})")
    if run.grad_accum > 1:
        notes.append(f"gradient accumulation {run.grad_accum}: gradients are held through each micro-batch")
    if shape.vision and run.tuner == "full" and not run.freeze_vit:
        notes.append("the ViT is trained (freeze_vit false)")
    if shape.vision:
        notes.append("the ViT's activations for images are not counted (they depend on image sizes)")
    if sharded and run.tuner == "lora":
        notes.append(SHARDED_LORA_NOTE)
    if shape.experts:
        notes.append(
            f"MoE: all {shape.experts} experts are held and trained; activations count the "
            f"{shape.experts_per_token} each token is routed to"
        )
    host = _host(shape, run, zero, layout, trainable, total, peak if cpu else 0.0, args)
    quantity = (
        "RssAnon of one training process beyond its start-up (torch and ms-swift imported)"
        if cpu
        else "peak torch.cuda.max_memory_reserved on the busiest GPU (ms-swift's memory(GiB)); "
        "nvidia-smi shows about 0.5 GiB more per process (the CUDA context)"
    )
    return Estimate(
        model=shape.name,
        shape_source=shape.source,
        quantity=quantity,
        layout=layout.description,
        devices=len(layout.gpus) if layout.gpus else layout.nproc,
        terms=terms,
        peak_bytes=peak,
        host_bytes=host,
        checkpoint_bytes=checkpoint_bytes(shape, run, trainable, zero is not None),
        params=total,
        trainable=trainable,
        tokens=tokens,
        notes=notes,
    )


# Host memory of one training process before the model: Python, torch, ms-swift, and on a
# GPU the CUDA libraries; and of the launcher process (swift or torchrun) that starts them.
HOST_PROCESS_BYTES = 3.0 * GIB
HOST_PROCESS_BYTES_CPU = 0.45 * GIB
LAUNCHER_BYTES = 0.3 * GIB


def _host(
    shape: Shape,
    run: Run,
    zero: Zero | None,
    layout: Layout,
    trainable: int,
    total: int,
    per_cpu_process: float,
    args: Mapping[str, Any],
) -> float:
    """Host RAM the whole run needs on one node."""
    processes = layout.nproc
    base = HOST_PROCESS_BYTES_CPU if per_cpu_process else HOST_PROCESS_BYTES
    host = LAUNCHER_BYTES + processes * (base + per_cpu_process)
    if zero and zero.offload_optimizer:
        host += trainable * 12  # every rank's fp32 master and moments, pinned
    if zero and zero.offload_params:
        host += total * run.dtype
    workers = args.get("dataloader_num_workers", 1)
    workers = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers > 0 else 0
    return host + processes * workers * 0.5 * GIB


def checkpoint_bytes(shape: Shape, run: Run, trainable: int, deepspeed: bool) -> float:
    """One checkpoint on disk: the weights (full) or adapters (LoRA), and the optimizer state."""
    model = shape.total() * run.dtype if run.tuner == "full" else trainable * 4
    if not run.save_optimizer:
        return model
    if deepspeed:
        state = 12.0
    elif run.tuner == "lora" or run.dtype == 4:
        state = 8.0
    else:
        state = 2.0 * run.dtype
    return model + trainable * state


def shape_of(resolved: Resolved, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Shape:
    """The shape of the run's model, or a ConfigError saying how to give one."""
    model = str(resolved.args.get("model") or "")
    try:
        return find(model, env, cwd)
    except UnknownModel as exc:
        raise ConfigError(
            problems=[
                report(
                    "M001",
                    "args.model",
                    str(exc),
                    "point model at a local folder holding the model's config.json (the weights are "
                    "not needed), or download config.json into the Hugging Face cache",
                )
            ]
        ) from None


def for_resolved(
    resolved: Resolved,
    *,
    seq_len: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Estimate:
    """The estimate of a validated run."""
    try:
        return estimate(
            shape_of(resolved, env, cwd), resolved.args, resolved.layout, seq_len=seq_len, cwd=cwd
        )
    except TooLarge as exc:
        raise ConfigError(
            problems=[report("M003", f"args.{exc.key}", str(exc), "give a size a GPU can hold")]
        ) from None


def checkpoint_size(
    args: Mapping[str, Any], layout: Layout, model: str, cwd: Path | None = None
) -> float | None:
    """One checkpoint's size on disk, or None when the model's shape is unknown."""
    try:
        shape = find(model, None, cwd)
        cpu = layout.use_cpu or layout.mode == "cpu"
        run = read_run(args, shape, max(1, layout.nproc * layout.nnodes), cpu)
    except (UnknownModel, TooLarge):
        return None
    deepspeed = not cpu and zero_config(args.get("deepspeed"), cwd) is not None
    return checkpoint_bytes(shape, run, _trainable(shape, run), deepspeed)
