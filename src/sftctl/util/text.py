"""Did-you-mean suggestions, with one cutoff everywhere."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6


def one_line(text: str) -> str:
    """``text`` safe inside a comment line or a terminal cell: line breaks, escape sequences
    and other control characters are shown escaped, never acted on."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def near(word: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` names in ``known`` close to ``word``, best first."""
    return difflib.get_close_matches(word, list(known), n=n, cutoff=CUTOFF)


def did_you_mean(word: str, known: Iterable[str], n: int = 3) -> str | None:
    """``did you mean 'a' or 'b'?``, or None when nothing is close."""
    found = near(word, known, n)
    return f"did you mean {' or '.join(repr(x) for x in found)}?" if found else None
