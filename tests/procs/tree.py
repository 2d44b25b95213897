"""A process tree shaped like `swift` -> torch elastic ranks, for supervisor tests.

The parent starts N children; each calls os.setsid() (as torch elastic ranks do)
and starts one grandchild. Every process prints "ready <role> <pid>" and sleeps.
--ignore-term: every process ignores SIGTERM. --orphan: the parent exits 0 shortly
after the children are ready, leaving them running (the `swift` launcher's habit).
Children relay their lines through the parent, so "ready parent" comes last.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def ready(role: str) -> None:
    print(f"ready {role} {os.getpid()}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="parent", choices=["parent", "child", "grandchild"])
    ap.add_argument("--children", type=int, default=2)
    ap.add_argument("--ignore-term", action="store_true")
    ap.add_argument("--orphan", action="store_true")
    a = ap.parse_args()
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    flags = ["--ignore-term"] if a.ignore_term else []
    me = [sys.executable, __file__, *flags]

    if a.role == "grandchild":
        ready("grandchild")
    elif a.role == "child":
        os.setsid()
        # The grandchild reports through a pipe so the child prints "ready" only
        # when its whole subtree is up.
        gc = subprocess.Popen([*me, "--role", "grandchild"], stdout=subprocess.PIPE, text=True)
        assert gc.stdout is not None
        print(gc.stdout.readline(), end="", flush=True)
        ready("child")
    else:
        kids = [
            subprocess.Popen([*me, "--role", "child"], stdout=subprocess.PIPE, text=True)
            for _ in range(a.children)
        ]
        for k in kids:
            assert k.stdout is not None
            for _ in range(2):  # the grandchild's line, then the child's
                print(k.stdout.readline(), end="", flush=True)
        ready("parent")
        if a.orphan:
            # Linger past a few supervisor polls: a tree that forks and exits
            # within one poll interval is the documented blind spot.
            time.sleep(0.5)
            return 0
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
