"""The progress follower: phases read from ms-swift's output, the live line (elapsed time,
phase, fits 80 columns), plain phase lines, and a broken terminal never raising."""

from __future__ import annotations

import errno
import io
import json
import re
import threading
from pathlib import Path
from typing import TextIO, cast

import pytest
from rich.console import Console

from sftctl.runtime.progress import PHASES, Follower, format_elapsed

STEP_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  step (\d+)/(\d+)  ")
PHASE_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  phase: (.+)$")

# Verbatim lines of a real `sftctl run cpu-smoke` (ms-swift 4.6.0), in the order printed,
# with ordinary lines in between; the comment names the phase each marker line starts.
REAL_OUTPUT = [
    "[INFO:swift] Successfully registered `/work/main/.venv/lib/python3.11/site-packages/swift/dataset"
    "/data/dataset_info.json`.",
    "[INFO:swift] rank: -1, local_rank: -1, world_size: 1, local_world_size: 1",
    "[WARNING:swift] Loading model from '/tmp/phase-cache/models/tiny-qwen3-v1' with trust_remote_code=True."
    " This will execute custom Python code shipped in the model repository (e.g. configuration_*.py,"
    " modeling_*.py, tokenization_*.py). Only proceed if you trust the source of this model.",
    "[INFO:swift] output_dir: /tmp/phase-probe/output/cpu-smoke/v0-20261130-001935",
    "[INFO:swift] args: SftArguments(",
    "acc_strategy=token,",
    ")",
    "[INFO:swift] Global seed set to 42",  # -> loading model
    "[INFO:swift] model_kwargs: {'device_map': 'cpu', 'dtype': torch.float32}",
    "Loading weights:   0%|          | 0/24 [00:00<?, ?it/s]",
    "[INFO:swift] agent_template: hermes",
    "[INFO:swift] Start time of running main: 2026-11-30 00:19:36.048544",  # -> preparing data
    "[INFO:swift] swift.__version__: 4.6.0",
    "Generating train split: 0 examples [00:00, ? examples/s]",
    "Map (num_proc=1):   0%|          | 0/64 [00:00<?, ? examples/s]",
    "[INFO:swift] train_dataset: Dataset({",
    "[INFO:swift] model_parameter_info: Qwen3ForCausalLM: 0.1511M Params (0.1511M Trainable [100.0000%]),"
    " 0.0000M Buffers.",
    "[INFO:swift] The logging file will be saved in: "  # -> training
    "/tmp/phase-probe/output/cpu-smoke/v0-20261130-001935/logging.jsonl",
    "Train:   0%|          | 0/16 [00:00<?, ?it/s]",
    "[INFO:swift] use_logits_to_keep: True",
]
MARKERS = {
    "[INFO:swift] Global seed set to 42": "loading model",
    "[INFO:swift] Start time of running main: 2026-11-30 00:19:36.048544": "preparing data",
    "[INFO:swift] The logging file will be saved in: "
    "/tmp/phase-probe/output/cpu-smoke/v0-20261130-001935/logging.jsonl": "training",
}

STEP_ROW = {
    "loss": 7.11278486,
    "grad_norm": 3.23741698,
    "learning_rate": 0.00099039,
    "token_acc": 0.0,
    "epoch": 0.0625,
    "global_step/max_steps": "1/16",
    "elapsed_time": "0s",
    "remaining_time": "0s",
    "train_speed(s/it)": 0.026143,
}
LONG_ROW = {
    "loss": 123456.789,
    "grad_norm": 98765.4321,
    "learning_rate": 0.000123456,
    "epoch": 12.3456,
    "global_step/max_steps": "123456/1234567",
    "remaining_time": "12d 23h 59m 59s",
    "train_speed(s/it)": 123.456789,
    "memory(GiB)": 123.45,
}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class BrokenOut(io.TextIOBase):
    """A terminal that went away: every write fails."""

    def __init__(self, code: int = errno.EIO, tty: bool = False) -> None:
        self.code = code
        self.tty = tty
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise OSError(self.code, "Input/output error")

    def flush(self) -> None:
        raise OSError(self.code, "Input/output error")

    def isatty(self) -> bool:
        return self.tty


def no_dir() -> Path | None:
    return None


def render(follower: Follower, width: int = 80, color: bool = False) -> list[str]:
    console = Console(
        width=width,
        record=True,
        file=io.StringIO(),
        force_terminal=color,
        color_system="truecolor" if color else None,
    )
    console.print(follower.view)
    return console.export_text().splitlines()


def write_rows(folder: Path, *rows: dict[str, object]) -> None:
    with (folder / "logging.jsonl").open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


# --- phases --------------------------------------------------------------------------


def test_phase_starts_as_starting() -> None:
    assert Follower(no_dir, "quiet").phase == "starting" == PHASES[0]


def test_real_output_lines_move_the_phase_in_order() -> None:
    follower = Follower(no_dir, "quiet")
    seen = [follower.phase]
    for line in REAL_OUTPUT:
        follower.feed_line(line)
        if follower.phase != seen[-1]:
            seen.append(follower.phase)
            assert MARKERS.get(line) == follower.phase, line
    assert seen == ["starting", "loading model", "preparing data", "training"]


@pytest.mark.parametrize(("line", "phase"), list(MARKERS.items()))
def test_each_real_marker_line_alone_sets_its_phase(line: str, phase: str) -> None:
    follower = Follower(no_dir, "quiet")
    follower.feed_line(line)
    assert follower.phase == phase


def test_backup_markers_set_the_phase() -> None:
    cases = {
        "[INFO:swift] model_kwargs: {'device_map': 'cpu', 'dtype': torch.float32}": "loading model",
        "Generating train split: 64 examples [00:00, 36944.05 examples/s]": "preparing data",
        "Train:   6%|▋         | 1/16 [00:00<00:00, 37.53it/s]": "training",
    }
    for line, phase in cases.items():
        follower = Follower(no_dir, "quiet")
        follower.feed_line(line)
        assert follower.phase == phase, line


def test_phase_never_moves_backwards() -> None:
    follower = Follower(no_dir, "quiet")
    follower.feed_line("[INFO:swift] Start time of running main: 2026-11-30 00:19:36.048544")
    assert follower.phase == "preparing data"
    follower.feed_line("[INFO:swift] Global seed set to 42")  # an earlier phase's marker
    assert follower.phase == "preparing data"
    follower.feed_line("Train:   0%|          | 0/16 [00:00<?, ?it/s]")
    assert follower.phase == "training"
    for line in [*REAL_OUTPUT, "", "garbage \x1b[A\r", "Traceback (most recent call last):"]:
        follower.feed_line(line)
        assert follower.phase == "training"


def test_unrelated_output_leaves_the_phase_alone() -> None:
    follower = Follower(no_dir, "quiet")
    for line in [
        "[transformers] `torch_dtype` is deprecated! Use `dtype` instead!",
        "[INFO:swift] [INPUT] <|im_start|>user Train:   5%| Global seed set to 1",
        "Writing model shards:   0%|          | 0/1 [00:00<?, ?it/s]",
        "",
    ]:
        follower.feed_line(line)
    assert follower.phase == "starting"


def test_first_logged_step_means_training(tmp_path: Path) -> None:
    follower = Follower(lambda: tmp_path, "quiet")
    follower.feed_line("[INFO:swift] Global seed set to 42")
    write_rows(tmp_path, STEP_ROW)
    follower.poll()
    assert follower.phase == "training"
    assert follower.stats.step == 1


def test_feed_line_from_many_threads_reports_each_phase_once() -> None:
    out = io.StringIO()
    follower = Follower(no_dir, "plain", out=out)

    def feed() -> None:
        for line in REAL_OUTPUT:
            follower.feed_line(line)

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    follower.poll()
    phases = [m.group(1) for m in map(PHASE_LINE.match, out.getvalue().splitlines()) if m]
    assert phases == ["loading model", "preparing data", "training"]


# --- the live line ---------------------------------------------------------------------


def test_format_elapsed() -> None:
    assert format_elapsed(0) == "0:00"
    assert format_elapsed(42.9) == "0:42"
    assert format_elapsed(725) == "12:05"
    assert format_elapsed(3723) == "1:02:03"


def test_live_line_before_the_first_step_shows_elapsed_and_phase() -> None:
    clock = FakeClock()
    follower = Follower(no_dir, "live", clock=clock)
    clock.now += 42
    assert render(follower) == ["0:42  starting"]
    follower.feed_line("[INFO:swift] Global seed set to 42")
    clock.now += 5
    assert render(follower) == ["0:47  loading model"]
    follower.feed_line("[INFO:swift] Start time of running main: 2026-11-30 00:19:36.048544")
    assert render(follower) == ["0:47  preparing data"]
    follower.feed_line("Train:   0%|          | 0/16 [00:00<?, ?it/s]")
    (line,) = render(follower)
    assert line.startswith("0:47  training") and "waiting for the first step" in line


def test_live_elapsed_is_computed_at_render_time() -> None:
    clock = FakeClock()
    follower = Follower(no_dir, "live", clock=clock)
    view = follower.view
    clock.now += 61
    assert render(follower)[0].startswith("1:01  ")
    clock.now += 3600
    assert follower.view is view
    assert render(follower)[0].startswith("1:01:01  ")


@pytest.mark.parametrize("color", [False, True])
def test_live_line_after_a_long_step_fits_80_columns(tmp_path: Path, color: bool) -> None:
    clock = FakeClock()
    follower = Follower(lambda: tmp_path, "live", clock=clock)
    write_rows(tmp_path, LONG_ROW)
    follower.poll()
    clock.now += 3723
    lines = render(follower, width=80, color=color)
    assert len(lines) == 1, lines
    assert all(len(line) <= 80 for line in lines), lines
    assert "1:02:03" in lines[0]
    assert "step 123456/1234567" in lines[0]
    assert "loss 123456.7890" in lines[0]


def test_live_line_after_a_normal_step_shows_bar_and_stats(tmp_path: Path) -> None:
    clock = FakeClock()
    follower = Follower(lambda: tmp_path, "live", clock=clock)
    write_rows(tmp_path, STEP_ROW, {**STEP_ROW, "global_step/max_steps": "8/16", "memory(GiB)": 7.5})
    follower.poll()
    clock.now += 42
    (line,) = render(follower, color=True)
    assert len(line) <= 80
    assert line.startswith("0:42  ━")
    assert "step 8/16" in line and "loss 7.1128" in line and "eta 0s" in line


@pytest.mark.parametrize("width", [120, 80, 60, 40, 24])
def test_live_line_never_wraps_at_any_width(tmp_path: Path, width: int) -> None:
    follower = Follower(lambda: tmp_path, "live")
    write_rows(tmp_path, LONG_ROW)
    follower.poll()
    lines = render(follower, width=width, color=True)
    assert len(lines) == 1 and len(lines[0]) <= width, lines


def test_live_follower_draws_its_final_line(tmp_path: Path) -> None:
    out = io.StringIO()
    clock = FakeClock()
    with Follower(lambda: tmp_path, "live", out=out, clock=clock) as follower:
        write_rows(tmp_path, STEP_ROW)
        clock.now += 75
    assert follower.elapsed() == 75
    assert "1:15" in out.getvalue() and "step 1/16" in out.getvalue()


# --- plain lines ---------------------------------------------------------------------------


def test_plain_mode_prints_a_timestamped_line_per_phase_change(tmp_path: Path) -> None:
    out = io.StringIO()
    found: list[Path] = []
    follower = Follower(lambda: found[0] if found else None, "plain", out=out)
    follower.feed_line("[INFO:swift] Global seed set to 42")
    follower.poll()
    follower.feed_line("[INFO:swift] model_kwargs: {'device_map': 'cpu'}")  # same phase: no line
    follower.feed_line("[INFO:swift] Start time of running main: 2026-11-30 00:19:36.048544")
    follower.poll()
    found.append(tmp_path)
    write_rows(tmp_path, STEP_ROW, {**STEP_ROW, "global_step/max_steps": "2/16"})
    follower.poll()
    lines = out.getvalue().splitlines()
    assert [PHASE_LINE.match(line).group(1) for line in lines[:3]] == [  # type: ignore[union-attr]
        "loading model",
        "preparing data",
        "training",
    ]
    steps = [STEP_LINE.match(line) for line in lines[3:]]
    assert [(m.group(1), m.group(2)) for m in steps if m] == [("1", "16"), ("2", "16")]
    assert len(lines) == 5


def test_plain_mode_training_marker_then_step_prints_training_once(tmp_path: Path) -> None:
    out = io.StringIO()
    follower = Follower(lambda: tmp_path, "plain", out=out)
    follower.feed_line("[INFO:swift] The logging file will be saved in: /x/logging.jsonl")
    write_rows(tmp_path, STEP_ROW)
    follower.poll()
    lines = out.getvalue().splitlines()
    assert PHASE_LINE.match(lines[0]) and lines[0].endswith("phase: training")
    assert STEP_LINE.match(lines[1])
    assert len(lines) == 2


def test_quiet_mode_prints_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    follower = Follower(lambda: tmp_path, "quiet", out=out)
    for line in REAL_OUTPUT:
        follower.feed_line(line)
    write_rows(tmp_path, STEP_ROW)
    follower.poll()
    assert out.getvalue() == ""


# --- a closed terminal -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.EPIPE])
def test_plain_mode_on_a_broken_stream_does_not_raise(tmp_path: Path, code: int) -> None:
    out = BrokenOut(code)
    with Follower(lambda: tmp_path, "plain", out=cast(TextIO, out)) as follower:
        for line in REAL_OUTPUT:
            follower.feed_line(line)
        follower.poll()
        write_rows(tmp_path, STEP_ROW, {**STEP_ROW, "global_step/max_steps": "2/16"})
        follower.poll()
    assert follower.output_broken
    assert out.writes == 1  # it stopped writing after the first failure
    assert follower.stats.step == 2 and follower.phase == "training"


@pytest.mark.parametrize("tty", [True, False])
def test_live_mode_on_a_broken_terminal_does_not_raise(tmp_path: Path, tty: bool) -> None:
    out = BrokenOut(errno.EIO, tty=tty)
    with Follower(lambda: tmp_path, "live", out=cast(TextIO, out)) as follower:
        follower.feed_line("[INFO:swift] Global seed set to 42")
        write_rows(tmp_path, STEP_ROW)
        follower.poll()
    assert follower.stats.step == 1
    assert out.writes <= 1
