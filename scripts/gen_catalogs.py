#!/usr/bin/env python3
"""Regenerate the ms-swift argument catalogs in src/sftctl/swift/data/.

Developer tool, not run in CI (needs PyPI and ~3 min + ~2 GB per version):

    python scripts/gen_catalogs.py              # both majors, in parallel
    python scripts/gen_catalogs.py 4            # only swift4.json
    python scripts/gen_catalogs.py --keep       # leave the scratch venvs (path printed)
    python scripts/gen_catalogs.py --venv-root DIR   # reuse/create venvs DIR/v<version>

For each pinned ms-swift release it makes a scratch venv, installs torch==2.13.0
FIRST (the CPU wheel; an unpinned torch pulls a multi-GB CUDA build), then
ms-swift==X, and runs ``python -m sftctl.swift.dump`` with PYTHONPATH=src
(sftctl itself is not installed there) in a clean, fixed environment: offline,
HOME and the caches in the scratch dir, PYTHONHASHSEED=0, cwd = the scratch dir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "sftctl" / "swift" / "data"
TORCH = "torch==2.13.0"
VERSIONS = {"4": "4.6.0", "3": "3.12.6"}


def _run(cmd: list[str], log: Path, **kw: object) -> None:
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, **kw).returncode  # type: ignore[call-overload]
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {rc}); log {log}:\n{tail}")


def build(major: str, root: Path) -> Path:
    version = VERSIONS[major]
    venv = root / f"v{version}"
    log = root / f"v{version}.log"
    py = venv / "bin" / "python"
    if not py.exists():
        _run([sys.executable, "-m", "venv", str(venv)], log)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run([*pip, TORCH], log)
    _run([*pip, f"ms-swift=={version}"], log)

    work = root / f"work{major}"
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(ROOT / "src"),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(home / "hf"),
        "MODELSCOPE_CACHE": str(home / "modelscope"),
        "MPLCONFIGDIR": str(home / "mpl"),
        "TOKENIZERS_PARALLELISM": "false",
        "LANG": "C.UTF-8",
    }
    out = DATA / f"swift{major}.json"
    tmp_out = work / out.name
    _run([str(py), "-m", "sftctl.swift.dump", str(tmp_out)], log, env=env, cwd=work)
    text = tmp_out.read_text(encoding="utf-8")
    for leak in {str(root), str(ROOT), str(home), os.path.expanduser("~")}:
        if leak in text:
            raise RuntimeError(f"{tmp_out} holds a machine path: {leak}")
    out.write_text(text, encoding="utf-8")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("majors", nargs="*", metavar="MAJOR", help="3 and/or 4 (default: both)")
    ap.add_argument("--venv-root", type=Path, help="where the venvs go (kept); default a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ns = ap.parse_args()
    majors = ns.majors or sorted(VERSIONS, reverse=True)
    for m in majors:
        if m not in VERSIONS:
            ap.error(f"unknown major {m!r}: choose from {', '.join(sorted(VERSIONS))}")

    root = ns.venv_root or Path(tempfile.mkdtemp(prefix="sftctl-catalogs-"))
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    print(f"scratch: {root}", flush=True)
    failed = False
    try:
        with ThreadPoolExecutor(max_workers=len(majors)) as pool:
            futures = {m: pool.submit(build, m, root) for m in majors}
            for m, fut in futures.items():
                try:
                    print(
                        f"wrote {fut.result().relative_to(ROOT)} (ms-swift {VERSIONS[m]})",
                        flush=True,
                    )
                except Exception as exc:  # noqa: BLE001 - report each version
                    failed = True
                    print(f"ms-swift {VERSIONS[m]}: {exc}", file=sys.stderr, flush=True)
    finally:
        if ns.venv_root is None and not ns.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
