"""The published measurements the memory estimate is checked against
(tests/data/memory_reference.json): every entry names its source and quotes it, says what
it measured, gives a configuration sftctl can read, and can be estimated."""

from __future__ import annotations

import importlib.util
import json
import math

from conftest import REPO

from sftctl.swift import catalog

DATA = json.loads((REPO / "tests" / "data" / "memory_reference.json").read_text(encoding="utf-8"))
_spec = importlib.util.spec_from_file_location("memory_reference", REPO / "scripts" / "memory_reference.py")
assert _spec and _spec.loader
REPORT = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REPORT)


def test_every_entry_names_its_source_and_what_it_measured() -> None:
    entries = DATA["entries"]
    assert len({e["id"] for e in entries}) == len(entries)
    for e in entries:
        # A pinned URL, or the document named where no pinned copy was found.
        assert e["source"].startswith("https://") or "docs/" in e["source"], e["id"]
        assert e["quote"].strip() and e["quantity"].strip() and e["data"].strip(), e["id"]
        assert e["quantity_kind"] in ("reserved", "reserved_sum", "nvidia-smi"), e["id"]
        assert isinstance(e["measured"], bool) and 0 < e["memory_gib"] <= 200, e["id"]
        assert e["gpus"] >= e["nproc_per_node"] >= 1 and e["longest_row"] >= 1, e["id"]
    measured = [e for e in entries if e["measured"]]
    assert len(measured) >= 15 and len({_document(e) for e in measured}) >= 3


def test_every_entry_is_written_in_ms_swift_arguments() -> None:
    cat = catalog.load(4)
    for e in DATA["entries"]:
        unknown = [k for k in e["args"] if cat.get(k) is None]
        assert unknown == [], (e["id"], unknown)


def _document(entry: dict[str, object]) -> str:
    return str(entry["source"]).split("/blob/")[-1].split("/", 1)[-1].split(" ")[0]


def test_the_estimate_is_within_20_percent_of_every_measured_entry_in_scope() -> None:
    """Global coefficients only: nothing in an entry but its configuration and data reaches
    the estimate. Prints the whole table, out-of-scope entries (with their reason) included."""
    checked, misses = [], []
    print(f"\n{'entry':58s} {'estimate':>8s} {'published':>9s} {'error':>7s}")
    for e in DATA["entries"]:
        got = REPORT.estimate_gib(e)
        assert math.isfinite(got) and got > 0, e["id"]
        error = (got / e["memory_gib"] - 1) * 100
        scope = e.get("out_of_scope")
        assert scope is None or len(str(scope)) > 40, (e["id"], "an exclusion says why")
        mark = " (out of scope)" if scope else ""
        print(f"{e['id'][:58]:58s} {got:8.1f} {e['memory_gib']:9.1f} {error:+6.1f}%{mark}")
        if e["measured"] and not scope:
            checked.append(e)
            if abs(error) > 20:
                misses.append((e["id"], round(error, 1)))
    assert misses == []
    assert len(checked) >= 15 and len({_document(e) for e in checked}) >= 3
    tuners = {("qlora" if e["args"].get("quant_bits") else e["args"]["tuner_type"]) for e in checked}
    assert tuners == {"full", "lora", "qlora"}
