"""Training progress from ms-swift's ``logging.jsonl``: a live display on a terminal,
timestamped plain lines otherwise, nothing with ``--quiet``."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

POLL_S = 0.5


@dataclass
class Stats:
    """What the log has said so far."""

    step: int | None = None
    first_step: int | None = None
    total: int | None = None
    epoch: float | None = None
    loss: float | None = None
    first_loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    speed: str | None = None
    eta: str | None = None
    memory: str | None = None
    last_checkpoint: str | None = None
    train_runtime: float | None = None
    steps_per_second: float | None = None
    lines: int = 0

    def update(self, row: dict[str, Any]) -> bool:
        """Fold one logging.jsonl row in; True when it was a training step."""
        self.lines += 1
        if "last_model_checkpoint" in row:
            self.last_checkpoint = row.get("last_model_checkpoint")
            for item in row.get("log_history", []):
                if "train_runtime" in item:
                    self.train_runtime = item.get("train_runtime")
                    self.steps_per_second = item.get("train_steps_per_second")
            return False
        if "loss" not in row or "global_step/max_steps" not in row:
            return False
        step, _, total = str(row["global_step/max_steps"]).partition("/")
        self.step, self.total = int(step), int(total) if total.isdigit() else None
        if self.first_step is None:
            self.first_step = self.step
        self.loss = float(row["loss"])
        if self.first_loss is None:
            self.first_loss = self.loss
        self.epoch = row.get("epoch")
        self.lr = row.get("learning_rate")
        self.grad_norm = row.get("grad_norm")
        self.eta = row.get("remaining_time")
        for key, value in row.items():
            if key.startswith("train_speed"):
                self.speed = (
                    f"{value:.3g} {key[len('train_speed(') : -1]}" if isinstance(value, float) else str(value)
                )
            if key.startswith("memory"):
                self.memory = f"{value} GiB"
        return True

    def steps_text(self) -> str:
        """'16 steps', or 'steps 5-16 (12 steps)' for a run resumed at step 5."""
        if self.step is None or self.first_step is None:
            return "no steps"
        count = self.step - self.first_step + 1
        if self.first_step == 1:
            return f"{count} steps"
        return f"steps {self.first_step}-{self.step} ({count} steps)"

    def line(self) -> str:
        """One plain progress line."""
        parts = [f"step {self.step}/{self.total or '?'}"]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch:.2f}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.lr is not None:
            parts.append(f"lr {self.lr:.3g}")
        if self.grad_norm is not None:
            parts.append(f"grad_norm {self.grad_norm:.3g}")
        if self.speed:
            parts.append(f"speed {self.speed}")
        if self.eta:
            parts.append(f"eta {self.eta}")
        if self.memory:
            parts.append(f"mem {self.memory}")
        return "  ".join(parts)


class Follower:
    """Follows ``logging.jsonl`` of the run folder, once ``find_dir`` returns it."""

    def __init__(
        self,
        find_dir: Callable[[], Path | None],
        mode: str,
        out: TextIO | None = None,
        start_offset: int = 0,
    ) -> None:
        self.find_dir = find_dir
        self.mode = mode  # "live", "plain" or "quiet"
        self.out = out or sys.stdout
        self.stats = Stats()
        self._offset = start_offset  # rows of an earlier run in the same folder are skipped
        self._partial = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sftctl-progress", daemon=True)
        self._live: Any = None

    def __enter__(self) -> Follower:
        if self.mode == "live":
            from rich.live import Live

            self._live = Live(self._renderable(), refresh_per_second=4, transient=False)
            self._live.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # the last rows, written just before the command exited
        if self._live is not None:
            self._live.update(self._renderable())
            self._live.__exit__(None, None, None)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except OSError:
                continue

    def poll(self) -> None:
        """Read new complete rows and show them."""
        folder = self.find_dir()
        if folder is None:
            return
        path = folder / "logging.jsonl"
        try:
            with path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size < self._offset:
                    self._offset, self._partial = 0, b""  # rewritten from the start
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        data = self._partial + chunk
        *rows, self._partial = data.split(b"\n")
        for raw in rows:
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            if isinstance(row, dict) and self.stats.update(row):
                self._show()

    def _show(self) -> None:
        if self.mode == "plain":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self.out.write(f"{stamp}  {self.stats.line()}\n")
            self.out.flush()
        elif self._live is not None:
            self._live.update(self._renderable())

    def _renderable(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        total = self.stats.total or 1
        grid.add_row(
            ProgressBar(total=total, completed=self.stats.step or 0, width=40),
            self.stats.line() if self.stats.step is not None else "waiting for the first step",
        )
        return grid
