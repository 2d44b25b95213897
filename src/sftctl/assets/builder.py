"""Built-in assets for offline runs: a tiny Qwen3 model and a small SFT dataset.

No model or dataset hub is reachable on the machines sftctl is tested on, so the
model is built locally (deterministically) and the dataset ships in the package.
Refs of the form ``builtin:<name>`` are turned into local paths by :func:`materialise`.

torch, transformers and tokenizers are imported inside functions only: importing
this module must stay cheap for the CLI and for environments without ms-swift.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from sftctl.util.dirs import cache_dir
from sftctl.util.fs import write_bytes_atomic

MODEL_NAME = "tiny-qwen3"
# Bump when anything that changes the built files changes (shapes, seed, corpus
# handling, template); the cache folder name carries it so old builds are never reused.
MODEL_VERSION = 1
MODEL_DIRNAME = f"{MODEL_NAME}-v{MODEL_VERSION}"
MARKER = ".sftctl-complete"
DATASET_FILE = "demo-sft.jsonl"
SEED = 20240601
TARGET_VOCAB = 1536

# Qwen's special tokens; the first three are "special" (skipped when decoding),
# the think tokens are ordinary added tokens, as in the real Qwen3 tokenizer.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")

BUILTINS: dict[str, dict[str, Any]] = {
    f"builtin:{MODEL_NAME}": {
        "kind": "model",
        "description": "Tiny random-init Qwen3 (2 layers, hidden 64), built offline; smoke runs.",
        # A local folder carries no hub id, so ms-swift cannot infer these itself.
        "swift_args": {"model_type": "qwen3", "template": "qwen3"},
        "parameters": 151_104,
        "dirname": MODEL_DIRNAME,
        # Its config.json fields, for the memory estimate before it is built.
        "config": {
            "model_type": "qwen3",
            "vocab_size": 1203,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "tie_word_embeddings": True,
            "max_position_embeddings": 1024,
        },
    },
    "builtin:demo-sft": {
        "kind": "dataset",
        "description": "64 short Chinese/English chat rows in ms-swift messages format.",
        "rows": 64,
        "filename": DATASET_FILE,
    },
}

# Fixed text mixed into the tokenizer corpus so common words and chat scaffolding
# (role names, newlines) get merges of their own, not only what the dataset holds.
_FIXED_TEXT = """\
system
user
assistant

You are a helpful assistant. Answer the question briefly and correctly.
The quick brown fox jumps over the lazy dog. A small model learns from a small dataset.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 99 100 1000.
Please think step by step, then give the final answer.
Hello, world! How are you today? I am fine, thank you, and you?
The capital of a country is the city where its government sits.
Translate the following sentence into English. Translate the following sentence into Chinese.
你是一个乐于助人的助手。请简短而正确地回答问题。
今天天气很好，我们一起去公园散步吧。
一二三四五六七八九十，百千万。
请一步一步地思考，然后给出最终答案。
你好，世界！你今天好吗？我很好，谢谢。
一个国家的首都是它的政府所在的城市。
请把下面的句子翻译成英文。请把下面的句子翻译成中文。
"""

# Qwen3-style chat template: turns after the last user message carry a (here empty)
# <think></think> block, matching what ms-swift's ``qwen3`` template trains on;
# ``enable_thinking=False`` at generation time pre-fills the empty block.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_query=-1) -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'user' -%}{%- set ns.last_query = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set content = m.content -%}"
    "{%- if '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if loop.index0 > ns.last_query -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{{- content + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)


def is_builtin(ref: str) -> bool:
    """True if ``ref`` names a known built-in asset (``builtin:<name>``)."""
    return ref in BUILTINS


def dataset_bytes() -> bytes:
    """The packaged demo dataset, read through importlib.resources (works from a wheel)."""
    return resources.files("sftctl.assets").joinpath(DATASET_FILE).read_bytes()


def _corpus() -> list[str]:
    """Tokenizer training text: the fixed text plus every message of the demo dataset."""
    # The fixed text stays one piece so its blank lines teach the "\n\n" merge that the
    # chat template's empty think block uses.
    lines = [_FIXED_TEXT]
    for raw in dataset_bytes().decode("utf-8").splitlines():
        if raw.strip():
            lines.extend(m["content"] for m in json.loads(raw)["messages"])
    return lines


def _marker_text() -> str:
    """Marker content; ties a build to the corpus so a changed dataset forces a rebuild."""
    digest = hashlib.sha256("\n".join(_corpus()).encode("utf-8")).hexdigest()
    fields = {"name": MODEL_NAME, "version": MODEL_VERSION, "corpus_sha256": digest}
    return json.dumps(fields, sort_keys=True) + "\n"


def _train_tokenizer(corpus: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's exact pre-tokenization; returns (vocab, merges)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # Same normalizer/pre-tokenizer as transformers' Qwen2Tokenizer, which rebuilds its
    # pipeline from vocab+merges on load: training with anything else would skew merges.
    pattern = (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
        r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB,
        # The corpus is tiny: min_frequency=1 lets merges run on to ~1200 tokens.
        min_frequency=1,
        show_progress=False,
        # All 256 byte symbols, so any UTF-8 text (Chinese included) round-trips.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges  # type: ignore[return-value]


def _write_tokenizer(out: Path) -> tuple[int, dict[str, int]]:
    """Train and save the Qwen2 tokenizer into ``out``; returns (size, special ids)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer  # the tokenizers-backed ("fast") class in v5

    vocab, merges = _train_tokenizer(_corpus())
    # Specials go after the learned vocabulary, as in Qwen (151643 = <|endoftext|>, ...).
    for token in (*SPECIAL_TOKENS, *THINK_TOKENS):
        vocab[token] = len(vocab)
    # As in Qwen3: no unk/bos token, eos <|im_end|>, pad <|endoftext|>. Passed as a dict
    # because the stubs say str where None is accepted and merges may be pairs.
    kwargs: dict[str, Any] = {
        "vocab": vocab,
        "merges": merges,
        "unk_token": None,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 1024,
        "chat_template": CHAT_TEMPLATE,
    }
    tok = Qwen2Tokenizer(**kwargs)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tok.save_pretrained(str(out))
    ids: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *THINK_TOKENS):
        tid = tok.convert_tokens_to_ids(token)
        assert isinstance(tid, int)
        ids[token] = tid
    return len(tok), ids


def build_tiny_qwen3(dest: Path) -> Path:
    """Build the tiny Qwen3 model and tokenizer into ``dest`` (replaced if present).

    Deterministic (fixed seed, fixed corpus): two builds give byte-identical files.
    Built in a sibling temp dir and renamed into place, so ``dest`` is never half-built.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        vocab_size, ids = _write_tokenizer(tmp)
        eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
        config = Qwen3Config(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,  # default is 128: must match hidden_size / heads here
            max_position_embeddings=1024,
            tie_word_embeddings=True,  # as in the small Qwen3 models; keeps the file small
            bos_token_id=eot,
            eos_token_id=im_end,
            pad_token_id=eot,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        )
        config.dtype = torch.float32
        # Seed a private generator state so the build is reproducible and does not
        # disturb the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = Qwen3ForCausalLM(config)  # type: ignore[no-untyped-call]
        # float32 even if the caller changed torch's default dtype.
        model.float()  # type: ignore[no-untyped-call]
        model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot, do_sample=False
        )
        model.save_pretrained(str(tmp))
        (tmp / MARKER).write_text(_marker_text(), encoding="utf-8")  # written last
        # mkdtemp makes the folder 0700 and safetensors writes 0600; the cache may be shared.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.rename(dest, old / "x")
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # The tokenizers library reports a full disk or a read-only folder as a plain
        # Exception with the OS's words; the caller handles OSError.
        raise OSError(f"cannot build the tiny model in {dest.parent}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive flock on ``path`` (created if needed) so concurrent processes serialise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _model_complete(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8") == _marker_text()


def _materialise_model() -> Path:
    dest = cache_dir() / "models" / MODEL_DIRNAME
    if _model_complete(dest):  # fast path, no lock needed: the marker is written last
        return dest
    with _locked(dest.parent / f".{MODEL_DIRNAME}.lock"):
        # A build killed by a signal (SIGTERM's default action runs no cleanup) leaves its
        # temporary folder; only the lock holder builds, so any such folder is stale now.
        for stale in dest.parent.glob(f".{MODEL_DIRNAME}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        if not _model_complete(dest):  # another process may have built it meanwhile
            build_tiny_qwen3(dest)
    return dest


def _materialise_dataset() -> Path:
    dest = cache_dir() / "datasets" / DATASET_FILE
    data = dataset_bytes()
    if dest.is_file() and dest.read_bytes() == data:
        return dest  # untouched: keeps its mtime
    write_bytes_atomic(dest, data)  # readers see the old or the new file, never a part
    return dest


def materialise(ref: str) -> Path:
    """Return a local path for a ``builtin:`` ref, building or copying it into the cache once."""
    if ref == f"builtin:{MODEL_NAME}":
        return _materialise_model()
    if ref == "builtin:demo-sft":
        return _materialise_dataset()
    raise ValueError(f"unknown built-in asset {ref!r}; known: {', '.join(sorted(BUILTINS))}")
