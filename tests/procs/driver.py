"""Run `run_supervised` in its own process so tests can send it real signals.

usage: driver.py LOG_PATH OUTCOME_JSON GRACE -- ARGV...
Writes the Outcome as JSON and exits with its returncode.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

from sftctl.runtime.supervise import FORWARDED_SIGNALS, run_supervised


def main() -> int:
    log_path, out_path, grace, sep, *argv = sys.argv[1:]
    assert sep == "--"
    # A test runner started in the background may pass SIGINT down ignored, and
    # the supervisor leaves ignored signals alone: start from the defaults.
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    outcome = run_supervised(
        argv, dict(os.environ), log_path=Path(log_path), grace=float(grace), poll_interval=0.05
    )
    Path(out_path).write_text(json.dumps(dataclasses.asdict(outcome)))
    return outcome.returncode


if __name__ == "__main__":
    sys.exit(main())
