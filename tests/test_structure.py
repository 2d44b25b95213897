"""The shape of the code, checked from every module's AST (function-level imports too):

- data flows one way: config-side code never imports runtime or CLI code, util imports
  nothing of sftctl, launchers know nothing of YAML;
- torch, transformers, ms-swift, DeepSpeed and tokenizers are imported only where a
  model is built or ms-swift's own parser is read;
- a Problem is built only by ``checks.registry.report``, with a literal id that the
  registry holds, and every rule of the registry is used somewhere.

Each checker is also run on a copy of the tree with a planted violation, so a checker
that could not fail would fail its own test.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

from sftctl.checks.registry import RULES

SRC = REPO / "src" / "sftctl"
HEAVY = ("torch", "transformers", "swift", "deepspeed", "tokenizers", "peft", "flash_attn")
# Where heavy imports belong: building the tiny model, dumping ms-swift's own parser.
HEAVY_ALLOWED = ("assets/builder.py", "swift/dump.py")
CONFIG_SIDE = (
    "config/",
    "swift/",
    "checks/",
    "resources/",
    "launchers/",
    "assets/",
    "util/",
    "render.py",
    "errors.py",
)


def _modules(root: Path) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every module named by an import anywhere in the file (``from x import y`` gives x and x.y)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def import_violations(root: Path) -> list[str]:
    """Imports that break the layering, as 'file:line: what'."""
    out: list[str] = []
    for rel, tree in _modules(root):
        for line, name in _imports(tree):
            top = name.split(".")[0]
            where = f"{rel}:{line}"
            if top in HEAVY and not rel.startswith(HEAVY_ALLOWED):
                out.append(f"{where}: imports {name} (only commands that train may load it)")
            if rel.startswith(CONFIG_SIDE) and name.startswith(("sftctl.runtime", "sftctl.cli")):
                out.append(f"{where}: config-side code imports {name}")
            if rel.startswith("util/") and name.startswith("sftctl.") and not name.startswith("sftctl.util"):
                out.append(f"{where}: util imports {name}")
            if rel.startswith("launchers/") and name.startswith(
                ("sftctl.config.yamlio", "sftctl.config.presets")
            ):
                out.append(f"{where}: a launcher imports {name}")
    return out


def problem_violations(root: Path) -> tuple[list[str], set[str]]:
    """Problems built outside the registry or with an unknown id; and the ids used."""
    out: list[str] = []
    used: set[str] = set()
    for rel, tree in _modules(root):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            where = f"{rel}:{node.lineno}"
            if name == "Problem" and rel != "checks/registry.py":
                out.append(f"{where}: builds a Problem directly (use checks.registry.report)")
            if name == "report":
                first = node.args[0] if node.args else None
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    out.append(f"{where}: report() without a literal rule id")
                elif first.value not in RULES:
                    out.append(f"{where}: rule id {first.value!r} is not in the registry")
                else:
                    used.add(first.value)
    return out, used


def test_layering_holds() -> None:
    assert import_violations(SRC) == []


def test_problems_come_from_the_registry() -> None:
    bad, used = problem_violations(SRC)
    assert bad == []
    assert sorted(set(RULES) - used) == [], "rules in the registry that no check reports"


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    root = tmp_path / "sftctl"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_import_checker_catches_planted_violations(planted: Path) -> None:
    (planted / "config" / "planted.py").write_text(
        "def late():\n    from sftctl.runtime import launch\n    import torch\n    return launch, torch\n"
    )
    (planted / "util" / "planted.py").write_text("from sftctl.config import resolve\n")
    found = import_violations(planted)
    assert any(v.startswith("config/planted.py:2: config-side code imports sftctl.runtime") for v in found), (
        found
    )
    assert any(v.startswith("config/planted.py:3: imports torch") for v in found), found
    assert any(v.startswith("util/planted.py:1: util imports sftctl.config") for v in found), found


def test_problem_checker_catches_planted_violations(planted: Path) -> None:
    (planted / "render_extra.py").write_text(
        "from sftctl.checks.registry import report\nfrom sftctl.errors import Problem\n"
        "a = Problem('A001', 'error', 'x', 'y')\nb = report('Z999', 'x', 'y')\nc = report(ID, 'x', 'y')\n"
    )
    found, _ = problem_violations(planted)
    assert "render_extra.py:3: builds a Problem directly (use checks.registry.report)" in found
    assert "render_extra.py:4: rule id 'Z999' is not in the registry" in found
    assert "render_extra.py:5: report() without a literal rule id" in found


def test_rule_ids_follow_the_numbering() -> None:
    """A letter for the concern and three digits; the phase follows the letter."""
    for rule in RULES.values():
        assert rule.id[0] in "FCASLMHR" and rule.id[1:].isdigit() and len(rule.id) == 4, rule
        assert (rule.phase == "host") == (rule.id[0] in "HR"), rule
