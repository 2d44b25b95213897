"""Model shapes: the config.json fields the memory estimate needs, and where they come from.

In order: a local model folder (config.json, and the safetensors headers for the exact
parameter count), the Hugging Face and ModelScope caches, then the table shipped with
sftctl (``data/model_shapes.json``, each entry naming its source). No torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from sftctl.resources.params import count_parameters
from sftctl.util.fs import load_json

ALL_PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


class UnknownModel(Exception):
    """No shape for this model: not a local folder, not in a cache, not in the table."""


@dataclass(frozen=True)
class Vision:
    """A Qwen2-VL-style vision tower (ViT blocks and a patch merger)."""

    depth: int
    hidden: int
    intermediate: int
    patch: int
    temporal_patch: int
    in_channels: int
    out_hidden: int
    merge: int
    gated_mlp: bool  # Qwen2.5-VL: SwiGLU MLP; Qwen2-VL: fc1/fc2

    def params(self) -> int:
        h, i = self.hidden, self.intermediate
        patch = self.in_channels * self.temporal_patch * self.patch * self.patch * h
        mlp = 3 * h * i + 2 * i + h if self.gated_mlp else 2 * h * i + i + h
        block = (h * 3 * h + 3 * h) + (h * h + h) + mlp + 2 * (h if self.gated_mlp else 2 * h)
        merged = h * self.merge * self.merge
        norm = h if self.gated_mlp else 2 * h  # RMSNorm, or LayerNorm with a bias (Qwen2-VL)
        merger = norm + merged * merged + merged + merged * self.out_hidden + self.out_hidden
        return patch + self.depth * block + merger


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer (dense or mixture-of-experts), optionally with a ViT."""

    name: str
    source: str  # where these fields came from
    model_type: str
    hidden: int
    intermediate: int  # dense MLP width (also the width of an MoE model's dense layers)
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    experts: int = 0  # routed experts per MoE layer (0: dense)
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0  # the shared expert's width (0: none)
    moe_layers: int = 0  # layers with an MoE block
    expert_bias: bool = False  # gpt-oss: biases on expert projections
    attention_sinks: bool = False  # gpt-oss: one learned sink per head
    vision: Vision | None = None
    max_positions: int = 32768
    published: float | None = None  # the parameter count the model card gives
    exact: int | None = None  # from safetensors headers, when read

    # --- parameter counts -------------------------------------------------------------
    def attention_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        n = h * q + 2 * h * kv + q * h
        if self.qkv_bias:
            n += q + 2 * kv
        if self.o_bias:
            n += h
        if self.qk_norm:
            n += 2 * self.head_dim
        if self.attention_sinks:
            n += self.heads
        return n

    def dense_mlp_params(self) -> int:
        return 3 * self.hidden * self.intermediate

    def expert_params(self) -> int:
        """One routed expert."""
        n = 3 * self.hidden * self.expert_intermediate
        if self.expert_bias:
            n += 2 * self.expert_intermediate + self.hidden
        return n

    def moe_block_params(self) -> int:
        n = self.experts * self.expert_params() + self.hidden * self.experts  # experts + router
        if self.expert_bias:
            n += self.experts  # router bias
        if self.shared_intermediate:
            n += 3 * self.hidden * self.shared_intermediate + self.hidden  # shared expert + its gate
        return n

    def layer_params(self, moe: bool) -> int:
        mlp = self.moe_block_params() if moe else self.dense_mlp_params()
        return self.attention_params() + mlp + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def head_params(self) -> int:
        """lm_head (0 when tied to the embeddings) and the final norm."""
        return (0 if self.tied else self.vocab * self.hidden) + self.hidden

    def decoder_params(self) -> int:
        dense = self.layers - self.moe_layers
        return dense * self.layer_params(False) + self.moe_layers * self.layer_params(True)

    def params(self) -> int:
        """Every parameter, as derived from the fields (the ViT included)."""
        vit = self.vision.params() if self.vision else 0
        return self.embedding_params() + self.decoder_params() + self.head_params() + vit

    def total(self) -> int:
        """The exact count from safetensors when known, else the derived one."""
        return self.exact or self.params()

    def active_params(self) -> int:
        """Parameters one token passes through (MoE: only its experts)."""
        if not self.experts:
            return self.params()
        idle = (self.experts - self.experts_per_token) * self.expert_params()
        return self.params() - self.moe_layers * idle

    def projections(self, moe: bool) -> dict[str, tuple[int, int, int]]:
        """Each nn.Linear projection of one decoder layer: name -> (in, out, count). An MoE
        layer's routed experts are 3-D parameters, not nn.Linear (LoRA and bnb skip them)."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        out = {"q": (h, q, 1), "k": (h, kv, 1), "v": (h, kv, 1), "o": (q, h, 1)}
        width = self.shared_intermediate if moe else self.intermediate
        if width:
            out.update(gate=(h, width, 1), up=(h, width, 1), down=(width, h, 1))
        return out

    def expert_matrix_params(self) -> int:
        """Weights of one MoE layer's routed experts (no biases)."""
        return self.experts * 3 * self.hidden * self.expert_intermediate

    def _per_layer_sum(self, fn: Callable[[bool], int]) -> int:
        return (self.layers - self.moe_layers) * fn(False) + self.moe_layers * fn(True)

    def linear_params(self, experts: bool = True) -> int:
        """Weights of the decoder's linear layers (with ``experts``, the routed experts too)."""

        def layer(moe: bool) -> int:
            n = sum(a * b * c for a, b, c in self.projections(moe).values())
            return n + (self.expert_matrix_params() if moe and experts else 0)

        return self._per_layer_sum(layer)

    def lora_params(
        self, rank: int, targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
    ) -> int:
        """LoRA A and B on the targeted projections of every decoder layer."""

        def layer(moe: bool) -> int:
            return sum(
                rank * (a + b) * c for name, (a, b, c) in self.projections(moe).items() if name in targets
            )

        return self._per_layer_sum(layer)

    def lora_magnitudes(self, targets: tuple[str, ...]) -> int:
        """DoRA's magnitude vectors: one value per output of each adapted projection."""

        def layer(moe: bool) -> int:
            return sum(b * c for name, (_a, b, c) in self.projections(moe).items() if name in targets)

        return self._per_layer_sum(layer)

    def biggest_projection(self) -> int:
        """Elements of the largest adapted weight matrix of a layer."""
        return max(a * b for moe in (False, True) for a, b, _c in self.projections(moe).values())


# Bounds no real model reaches: a field beyond them is a broken or hostile config.json.
_BOUND = {"num_hidden_layers": 10_000, "vocab_size": 10_000_000, "padded_vocab_size": 10_000_000}
_WIDTH_BOUND = 1_000_000


def _int(cfg: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    """The first of ``keys`` present, as a whole number within a sane range."""
    for key in keys:
        if key not in cfg or cfg[key] is None:
            continue
        value = cfg[key]
        limit = _BOUND.get(key, _WIDTH_BOUND)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise ValueError(
                f"config.json field {key!r} = {str(value)[:40]!r} is not a whole number 0-{limit}"
            )
        return value
    if default is None:
        raise ValueError(f"config.json has no {keys[0]!r}")
    return default


def _vision(cfg: Mapping[str, Any], out_default: int) -> Vision | None:
    v = cfg.get("vision_config")
    if not isinstance(v, dict) or "depth" not in v:
        return None
    # Qwen2-VL names the ViT width embed_dim and its output hidden_size; Qwen2.5-VL names
    # them hidden_size and out_hidden_size.
    hidden = _int(v, "embed_dim", "hidden_size")
    out = _int(v, "out_hidden_size", default=_int(v, "hidden_size") if "embed_dim" in v else out_default)
    gated = str(v.get("hidden_act", "")) == "silu"
    ratio = v.get("mlp_ratio", 4)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 64:
        raise ValueError(f"config.json field 'mlp_ratio' = {str(ratio)[:40]!r} is not a number 0-64")
    return Vision(
        depth=_int(v, "depth"),
        hidden=hidden,
        intermediate=_int(v, "intermediate_size", default=min(int(hidden * ratio), _WIDTH_BOUND)),
        patch=_int(v, "patch_size", "spatial_patch_size", default=14),
        temporal_patch=_int(v, "temporal_patch_size", default=2),
        in_channels=_int(v, "in_channels", "in_chans", default=3),
        out_hidden=out,
        merge=_int(v, "spatial_merge_size", default=2),
        gated_mlp=gated,
    )


def from_config(cfg: Mapping[str, Any], name: str, source: str) -> Shape:
    """A shape from config.json fields (Qwen2/2.5/3, Qwen3-MoE, Llama, GLM-4, InternLM3,
    gpt-oss, and the language model of Qwen2-VL/2.5-VL). Raises KeyError for a missing field."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else None
    if "vision_config" in cfg and not isinstance(cfg["vision_config"], dict):
        raise ValueError("config.json field 'vision_config' is not a mapping")
    base: Mapping[str, Any] = {**cfg, **text} if text else cfg
    model_type = str(cfg.get("model_type", ""))
    hidden = _int(base, "hidden_size")
    heads = _int(base, "num_attention_heads")
    layers = _int(base, "num_hidden_layers")
    experts = _int(base, "num_experts", "num_local_experts", "n_routed_experts", default=0)
    step = _int(base, "decoder_sparse_step", default=1)
    listed = base.get("mlp_only_layers") or []
    if not isinstance(listed, list) or len(listed) > _BOUND["num_hidden_layers"]:
        raise ValueError("config.json field 'mlp_only_layers' is not a list of layer numbers")
    dense_only = {i for i in listed if isinstance(i, int)}
    first_dense = _int(base, "first_k_dense_replace", default=0)
    moe_layers = 0
    if experts:
        moe_layers = sum(
            1
            for i in range(layers)
            if i not in dense_only and i >= first_dense and (i + 1) % max(step, 1) == 0
        )
    shared = _int(base, "shared_expert_intermediate_size", default=0)
    if not shared and _int(base, "n_shared_experts", default=0):
        shared = _int(base, "n_shared_experts") * _int(base, "moe_intermediate_size")
    gpt_oss = model_type == "gpt_oss"
    if min(hidden, heads, layers) < 1:
        raise ValueError(
            "config.json's hidden_size, num_attention_heads and num_hidden_layers must be at least 1"
        )
    return Shape(
        name=name,
        source=source,
        model_type=model_type,
        hidden=hidden,
        intermediate=_int(base, "intermediate_size", "ffn_hidden_size", default=0),
        layers=layers,
        heads=heads,
        kv_heads=_int(base, "num_key_value_heads", "multi_query_group_num", default=heads),
        head_dim=_int(base, "head_dim", "kv_channels", default=hidden // heads),
        vocab=_int(base, "vocab_size", "padded_vocab_size"),
        tied=bool(base.get("tie_word_embeddings", False)),
        qkv_bias=bool(
            base.get("attention_bias")
            or base.get("qkv_bias")
            or base.get("add_qkv_bias")
            or model_type.startswith(("qwen2", "qwen2_5"))
        ),
        o_bias=bool(base.get("attention_bias")) and model_type not in ("glm4",),
        qk_norm=model_type.startswith("qwen3"),
        experts=experts,
        experts_per_token=_int(base, "num_experts_per_tok", "experts_per_token", default=0),
        expert_intermediate=_int(base, "moe_intermediate_size", "intermediate_size", default=0)
        if experts
        else 0,
        shared_intermediate=shared,
        moe_layers=moe_layers,
        expert_bias=gpt_oss,
        attention_sinks=gpt_oss,
        vision=_vision(cfg, hidden),
        max_positions=_int(base, "max_position_embeddings", "seq_length", default=32768),
    )


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("sftctl.resources").joinpath("data/model_shapes.json").read_text("utf-8")
    data: dict[str, dict[str, Any]] = json.loads(text)["models"]
    return data


def table_ids() -> list[str]:
    """The hub ids of the shipped table."""
    return sorted(_table())


def _from_table(model: str) -> Shape | None:
    wanted = model.lower().rstrip("/")
    for hub_id, entry in _table().items():
        names = [hub_id, *entry.get("aliases", [])]
        if any(n.lower() == wanted for n in names):
            where = f"sftctl's table ({entry['source']})" if hub_id == model else f"sftctl's table: {hub_id}"
            shape = from_config(entry["config"], model, where)
            published = entry.get("published_params")
            return Shape(**{**shape.__dict__, "published": float(published) if published else None})
    return None


def _cached_folders(model: str, env: Mapping[str, str]) -> list[Path]:
    """Where the Hugging Face and ModelScope caches would hold ``model``'s config.json."""
    home = Path(env.get("HOME") or Path.home())
    hf_home = Path(env.get("HF_HOME") or home / ".cache" / "huggingface")
    hf_hub = Path(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or hf_home / "hub")
    ms = Path(env.get("MODELSCOPE_CACHE") or home / ".cache" / "modelscope")
    out = sorted((hf_hub / f"models--{model.replace('/', '--')}" / "snapshots").glob("*/"))
    for root in (ms / "hub" / "models", ms / "models", ms / "hub"):
        out.append(root / model)
        out.append(root / model.replace(".", "___"))  # ModelScope escapes dots in folder names
    return out


CONFIG_LIMIT = 16 * 2**20  # a config.json is a few KB


def _read_config(folder: Path) -> dict[str, Any] | None:
    """A folder's config.json; None when there is none; UnknownModel when it is unusable."""
    path = folder / "config.json"
    if not path.exists():  # OSError where the folder cannot be looked into
        return None
    try:
        data = load_json(path, CONFIG_LIMIT)
    except (OSError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise UnknownModel(f"{path} cannot be read as a model's config.json ({why})") from None
    if not isinstance(data, dict):
        raise UnknownModel(f"{path} is not a JSON mapping")
    return data


def find(model: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Shape:
    """The shape of ``model`` (a local folder or a hub id), or UnknownModel saying how to give one."""
    env = os.environ if env is None else env
    if model.startswith("builtin:"):
        from sftctl.assets.builder import BUILTINS

        spec = BUILTINS.get(model, {})
        if "config" not in spec:
            raise UnknownModel(f"'{model}' is not a built-in model")
        return from_config(spec["config"], model, "sftctl's built-in model")
    local = Path(model).expanduser()
    if not local.is_absolute():
        local = (cwd or Path.cwd()) / local
    try:
        here = (local / "config.json").exists()
    except OSError as exc:  # an unreadable folder, a name too long for the filesystem
        raise UnknownModel(f"cannot look into '{model}': {exc.strerror}") from None
    candidates = [("local folder", local)] if here else []
    with contextlib.suppress(OSError):  # a cache that cannot be read holds nothing for us
        candidates += [("cache", folder) for folder in _cached_folders(model, env)]
    for kind, folder in candidates:
        try:
            cfg = _read_config(folder)
        except OSError as exc:
            if kind == "cache":
                continue  # the table may still know the model
            raise UnknownModel(f"cannot read {folder}: {exc.strerror}") from None
        if cfg is None:
            continue
        try:
            shape = from_config(cfg, model, f"{kind} {folder}")
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise UnknownModel(f"{folder / 'config.json'}: {why}") from None
        try:
            exact = count_parameters(folder)
        except OSError:
            exact = None
        return Shape(**{**shape.__dict__, "exact": exact}) if exact else shape
    listed = _from_table(model)
    if listed is None and model.startswith(("./", "../", "/", "~")):
        raise UnknownModel(f"no model folder at '{model}' ({local} has no config.json)")
    if listed is None:
        raise UnknownModel(
            f"no shape for model '{model}': not a local folder with config.json, not in the "
            f"Hugging Face or ModelScope cache, not in sftctl's table"
        )
    return listed
