"""Training progress from ms-swift's ``logging.jsonl``: a live display on a terminal,
timestamped plain lines otherwise, nothing with ``--quiet``.

Before the first step the phase (starting, loading model, preparing data, training) is
read from the command's own output, line by line, through :meth:`Follower.feed_line`."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

POLL_S = 0.5

# The phases of a run, in order; the phase only ever moves forward.
PHASES = ("starting", "loading model", "preparing data", "training")

# Lines that `swift sft` (ms-swift 4.6) prints as a phase begins, searched for in every
# line of the command's merged stdout/stderr (tqdm's \r updates arrive as lines too).
PHASE_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # loading model: SwiftPipeline.__init__ logs the seed last; SwiftSft then loads model + tokenizer
    ("loading model", re.compile(r"\[INFO:swift\] Global seed set to \d+")),
    # loading model: get_model_tokenizer logs the from_pretrained kwargs right before the weights load
    ("loading model", re.compile(r"\[INFO:swift\] model_kwargs: ")),
    # preparing data: SwiftPipeline.main() logs this, then SwiftSft.run() loads and encodes the dataset
    ("preparing data", re.compile(r"\[INFO:swift\] Start time of running main: ")),
    # preparing data: the datasets library reading a dataset file
    ("preparing data", re.compile(r"Generating (?:train|validation) split: ")),
    # training: SwiftSft.train() logs this just before trainer.train()
    ("training", re.compile(r"\[INFO:swift\] The logging file will be saved in: ")),
    # training: the trainer's own progress bar (tqdm, desc "Train")
    ("training", re.compile(r"^\s*Train:\s+\d+%\|")),
)
_MARKERS = tuple((PHASES.index(phase), pattern) for phase, pattern in PHASE_MARKERS)
_TRAINING = PHASES.index("training")

BAR_MIN = 10  # narrower than this, the live line drops the bar
BAR_MAX = 30


def format_elapsed(seconds: float) -> str:
    """'0:42', '12:05', '1:02:03'."""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
    peak_memory_gib: float | None = None  # the largest memory(GiB) ms-swift logged (rank 0)
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
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.peak_memory_gib = max(self.peak_memory_gib or 0.0, float(value))
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

    def live_fields(self) -> list[str]:
        """The live line's fields after the step, most important first."""
        fields = []
        if self.loss is not None:
            fields.append(f"loss {self.loss:.4f}")
        if self.eta:
            fields.append(f"eta {self.eta}")
        if self.epoch is not None:
            fields.append(f"epoch {_num(self.epoch, '.2f')}")
        if self.speed:
            fields.append(self.speed)
        if self.memory:
            fields.append(f"mem {self.memory}")
        if self.lr is not None:
            fields.append(f"lr {_num(self.lr, '.3g')}")
        if self.grad_norm is not None:
            fields.append(f"grad_norm {_num(self.grad_norm, '.3g')}")
        return fields


def _num(value: Any, spec: str) -> str:
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


class _SafeStream(io.TextIOBase):
    """Writes to ``out`` until the first OSError (a closed terminal: EIO; a closed pipe:
    EPIPE), and silently drops everything after it."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out
        self.broken = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.out, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.out.write(text)
            except (OSError, ValueError):  # ValueError: the file was closed
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.out.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return not self.broken and self.out.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self.out.fileno()

    def writable(self) -> bool:
        return True


class ProgressView:
    """The live display's one line, computed when rich renders it, so the elapsed time
    keeps moving with Live's auto-refresh: ``0:42  loading model`` before the first
    step, ``1:05  ━━━━━  step 3/16  loss 6.7980  eta 12s ...`` after it. The line fits
    the console's width; the bar shrinks, then the least useful fields go."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.cells import cell_len
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        stats, phase, elapsed = self.follower.snapshot()
        width = options.max_width
        line = Text(no_wrap=True, overflow="ellipsis")
        clock = format_elapsed(elapsed)
        line.append(clock, style="cyan")
        line.append("  ")
        if stats.step is None:
            line.append(phase, style="bold")
            if phase == "training":
                line.append(", waiting for the first step")
            yield line
            return
        fields = [f"step {stats.step}/{stats.total or '?'}", *stats.live_fields()]
        room = 0
        while True:
            tail = "  ".join(fields)
            # two 2-space gaps, and one column spare: a line that ends in the terminal's
            # last column can wrap on some terminals
            room = width - cell_len(clock) - cell_len(tail) - 5
            if room >= BAR_MIN or len(fields) == 1:
                break
            fields.pop()
        if room >= BAR_MIN:
            bar_width = min(room, BAR_MAX)
            bar = ProgressBar(total=stats.total, completed=stats.step, width=bar_width)
            drawn = 0
            for segment in console.render(bar, options.update(width=bar_width)):
                line.append(segment.text, style=segment.style)
                drawn += cell_len(segment.text)
            line.append(" " * max(0, bar_width - drawn) + "  ")
        line.append(tail)
        yield line


class Follower:
    """Follows ``logging.jsonl`` of the run folder, once ``find_dir`` returns it, and the
    phase of the run from the output lines given to :meth:`feed_line`."""

    def __init__(
        self,
        find_dir: Callable[[], Path | None],
        mode: str,
        out: TextIO | None = None,
        start_offset: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.find_dir = find_dir
        self.mode = mode  # "live", "plain" or "quiet"
        self.out = out or sys.stdout
        self.stats = Stats()
        self.view = ProgressView(self)
        self._sink = _SafeStream(self.out)
        self._clock = clock
        self._started = clock()
        self._ended: float | None = None
        self._phase_index = 0
        self._phase_events: list[tuple[float, str]] = []  # (wall time, phase) not yet printed
        self._lock = threading.Lock()  # stats, phase
        self._poll_lock = threading.Lock()
        self._offset = start_offset  # rows of an earlier run in the same folder are skipped
        self._partial = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sftctl-progress", daemon=True)
        self._live: Any = None

    @property
    def phase(self) -> str:
        """One of PHASES."""
        return PHASES[self._phase_index]

    @property
    def output_broken(self) -> bool:
        """True once writing to ``out`` failed; nothing is written after that."""
        return self._sink.broken

    def elapsed(self) -> float:
        """Seconds since the follower started (frozen when it stopped)."""
        end = self._ended if self._ended is not None else self._clock()
        return end - self._started

    def snapshot(self) -> tuple[Stats, str, float]:
        """A consistent copy of the stats, the phase and the elapsed time."""
        with self._lock:
            return dataclasses.replace(self.stats), self.phase, self.elapsed()

    def feed_line(self, line: str) -> None:
        """One line of the command's output; moves the phase forward when it marks one.
        Cheap and safe to call from any thread; never raises, never writes."""
        current = self._phase_index
        if current >= _TRAINING:
            return
        best = current
        for index, pattern in _MARKERS:
            if index > best and pattern.search(line):
                best = index
        if best > current:
            self._advance(best)

    def _advance(self, index: int) -> None:
        with self._lock:
            if index <= self._phase_index:
                return
            self._phase_index = index
            if self.mode == "plain":
                self._phase_events.append((time.time(), PHASES[index]))

    def __enter__(self) -> Follower:
        self._started = self._clock()
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=cast(IO[str], self._sink))
            self._live = Live(self.view, console=console, refresh_per_second=4, transient=False)
            try:
                self._live.__enter__()
            except OSError:
                self._live = None
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.poll()  # the last rows, written just before the command exited
        self._ended = self._clock()
        if self._live is not None:
            with contextlib.suppress(OSError):
                self._live.__exit__(None, None, None)  # draws the final line

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except OSError:
                continue

    def poll(self) -> None:
        """Show phase changes, then read new complete rows and show them."""
        with self._poll_lock:
            self._print_phases()
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
                if not isinstance(row, dict):
                    continue
                try:
                    with self._lock:
                        stepped = self.stats.update(row)
                except (TypeError, ValueError, AttributeError):
                    continue  # a row of a shape this version does not know
                if stepped:
                    self._advance(_TRAINING)
                    self._print_phases()
                    self._show()

    def _print_phases(self) -> None:
        if not self._phase_events:
            return
        with self._lock:
            events, self._phase_events = self._phase_events, []
        for when, phase in events:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
            self._write(f"{stamp}  phase: {phase}\n")

    def _write(self, text: str) -> None:
        self._sink.write(text)
        self._sink.flush()

    def _show(self) -> None:
        if self.mode == "plain":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._write(f"{stamp}  {self.stats.line()}\n")
        elif self._live is not None:
            with contextlib.suppress(OSError):
                self._live.refresh()
