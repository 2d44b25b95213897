"""Which names hold secrets: one list for config checks, rendering and records.

A name is a secret when its last part (split on ``_`` or ``-``) is TOKEN, KEY, APIKEY,
SECRET, PASSWORD or PASSWD: ``HF_TOKEN``, ``WANDB_API_KEY``, ``swanlab_token``. A part
anywhere else is not (``TOKENIZERS_PARALLELISM``, ``IMAGE_MAX_TOKEN_NUM``), nor are the
known names below whose last word means something else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "<redacted>"

# Where trackers and hubs read their tokens; a run inherits them, a record never shows them.
TOKEN_ENV = ("SWANLAB_API_KEY", "SWANLAB_TOKEN", "WANDB_API_KEY", "HF_TOKEN", "MODELSCOPE_API_TOKEN")

_SECRET_LAST = frozenset({"TOKEN", "KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD"})
# Names that end in such a word without holding a secret (tokenizer special tokens,
# ms-swift arguments that name a layer or a seed).
NOT_SECRET = frozenset(
    {
        "PAD_TOKEN",
        "BOS_TOKEN",
        "EOS_TOKEN",
        "UNK_TOKEN",
        "SEP_TOKEN",
        "CLS_TOKEN",
        "MASK_TOKEN",
        "REFT_LAYER_KEY",
        "VERA_PROJECTION_PRNG_KEY",
    }
)
# Names whose last word is no secret word, but whose value carries a credential.
SECRET_NAMES = frozenset({"SWANLAB_WEBHOOK_URL", "WEBHOOK_URL"})
_PARTS = re.compile(r"[_\-]+")


def is_secret_name(name: str) -> bool:
    """True for an environment variable or argument name that holds a secret."""
    upper = name.upper().replace("-", "_")
    if upper in NOT_SECRET:
        return False
    if upper in SECRET_NAMES or upper.endswith("_WEBHOOK_URL"):
        return True
    parts = [p for p in _PARTS.split(upper) if p]
    return bool(parts) and parts[-1] in _SECRET_LAST


def redact(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every secret's value replaced, for a manifest or a display."""
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}
