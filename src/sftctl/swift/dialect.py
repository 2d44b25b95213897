"""Flag spelling per ms-swift major version.

The seeds are written for ms-swift 3.x (``--train_type``); 4.x renamed it
``--tuner_type`` with no alias, so a 3.x script fails on 4.x after ~12 s. A config
may use either spelling; the renderer writes the target version's.
"""

from __future__ import annotations

# ms-swift 3.x name -> 4.x name, for arguments that kept their meaning.
# The full 3.12.6 -> 4.6.0 comparison is swift/data/diff_3_4.json (a test keeps the two equal).
RENAMED_3_TO_4: dict[str, str] = {
    "train_type": "tuner_type",
    "metric": "eval_metric",
    "save_safetensors": "safe_serialization",
}
RENAMED_4_TO_3: dict[str, str] = {new: old for old, new in RENAMED_3_TO_4.items()}

# Spellings of versions sftctl does not target, with the name to use instead.
LEGACY: dict[str, str] = {
    "sft_type": "tuner_type",  # ms-swift 2.x
}


def spelling(name: str, major: int) -> str | None:
    """``name`` as the target ``major`` spells it, or None if it is not a known rename."""
    if major >= 4 and name in RENAMED_3_TO_4:
        return RENAMED_3_TO_4[name]
    if major == 3 and name in RENAMED_4_TO_3:
        return RENAMED_4_TO_3[name]
    return None


def canonical(name: str) -> str:
    """One name per meaning, whatever the version (the 4.x spelling)."""
    return RENAMED_3_TO_4.get(name, name)


def removed_hint(name: str, major: int) -> str | None:
    """For a 3.x argument that 4.x dropped: what to write instead."""
    if major < 4:
        return None
    from sftctl.swift.catalog import version_diff

    diff = version_diff()
    if name not in diff.get("removed", []):
        return None
    note: str | None = diff.get("removed_notes", {}).get(name)
    instead: str | None = diff.get("superseded_by", {}).get(name)
    if note:
        return note
    return f"use {instead}" if instead else "remove it (ms-swift 4.x has no equivalent)"
