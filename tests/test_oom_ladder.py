"""The out-of-memory ladder (pure), the next attempt's config, and how an out-of-memory
death is told from others: the output's errors and the memory cgroup's OOM-kill count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sftctl.config.resolve import Overrides, resolve
from sftctl.runtime import ladder, oom, recover


def climb(args: dict[str, Any], world: int, **kw: Any) -> list[tuple[str, dict[str, Any], bool]]:
    """Every rung from ``args`` to the top."""
    out = []
    while (rung := ladder.next_rung(args, world, **kw)) is not None:
        out.append((rung.name, rung.delta, rung.relayout))
        args = {k: v for k, v in {**args, **rung.delta}.items() if v is not None}
        assert len(out) < 20
    return out


def test_full_ddp_ladder_keeps_the_effective_batch() -> None:
    args = {"tuner_type": "full", "per_device_train_batch_size": 6, "gradient_accumulation_steps": 2,
            "gradient_checkpointing": False}  # fmt: skip
    assert climb(args, 2) == [
        ("smaller batch", {"per_device_train_batch_size": 3, "gradient_accumulation_steps": 4}, False),
        ("smaller batch", {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 12}, False),
        ("gradient checkpointing", {"gradient_checkpointing": True}, False),
        ("more sharding", {"deepspeed": "zero2"}, True),
        ("more sharding", {"deepspeed": "zero3"}, True),
        ("more sharding", {"deepspeed": "zero3_offload"}, False),
    ]


def test_one_process_full_goes_to_offload_and_shorter_only_when_allowed() -> None:
    args = {"tuner_type": "full", "max_length": 4096, "use_cpu": True}
    assert [r[1] for r in climb(args, 1, allow_shorter=True, use_cpu=True)] == [
        {"deepspeed": "zero2_offload", "fp16": False},
        {"deepspeed": "zero3_offload", "fp16": False},
        # Rows longer than the new max_length are cut, not dropped (ms-swift's default):
        # the run keeps its rows and steps.
        {"max_length": 2048, "truncation_strategy": "right"},
        {"max_length": 1024},
        {"max_length": 512},
        {"max_length": 256},
    ]
    assert len(climb(args, 1)) == 2


def test_ms_swift_default_accumulation_is_kept() -> None:
    # No accumulation given: ms-swift uses ceil(16 / 4 / 2) = 2, so 8 rows x 2 processes.
    rung = ladder.next_rung({"per_device_train_batch_size": 4}, 2)
    assert rung is not None
    assert rung.delta == {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}


def test_lora_ends_with_the_emergency_config() -> None:
    args = {"tuner_type": "lora", "per_device_train_batch_size": 2, "attn_impl": "eager", "packing": True,
            "max_length": 8192}  # fmt: skip
    assert [r[1] for r in climb(args, 1)][-1] == {"attn_impl": "sdpa"}
    assert [r[1] for r in climb(args, 1, allow_shorter=True)][-1] == {
        "attn_impl": "sdpa",
        "max_length": 2048,
        "truncation_strategy": "right",
        "packing": False,
    }
    assert climb({"tuner_type": "lora"}, 1) == []  # nothing left: the run gives up


def test_a_users_own_deepspeed_json_is_not_rewritten() -> None:
    assert ladder.next_rung({"tuner_type": "full", "deepspeed": "./ds.json"}, 2) is None


def _resolved(tmp_path: Path, *sets: str) -> Any:
    return resolve("cpu-smoke-ddp", Overrides(sets=("per_device_train_batch_size=1", *sets)), env={})


def _checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    ckpt = run_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    if complete:
        (ckpt / "trainer_state.json").write_text("{}")
        (ckpt / "model.safetensors").write_bytes(b"x")
    return ckpt


def test_a_new_optimizer_layout_needs_consent(tmp_path: Path) -> None:
    run_dir = tmp_path / "v0-20260101-000000"
    ckpt = _checkpoint(run_dir, 2)
    refused = recover.next_attempt(_resolved(tmp_path), run_dir, 1, {})
    assert isinstance(refused, recover.GiveUp)
    assert "--allow-optimizer-reset" in refused.fix and "DDP -> DeepSpeed zero2" in refused.why
    allowed = recover.next_attempt(_resolved(tmp_path, "launch.allow_optimizer_reset=true"), run_dir, 1, {})
    assert isinstance(allowed, recover.Next) and allowed.optimizer == "reset"
    args = allowed.resolved.args
    assert args["resume_only_model"] is True and args["resume_from_checkpoint"] == str(ckpt)
    assert args["output_dir"] == str(run_dir) and args["add_version"] is False
    assert allowed.resolved.loaded.origin["args.deepspeed"] == recover.LADDER


def test_an_attempt_that_resumed_and_saved_nothing_passes_its_checkpoint_on(tmp_path: Path) -> None:
    """sftctl resume (or run --resume) writes into a new run folder: when its first attempt
    runs out of memory before its first checkpoint, the next resumes the same checkpoint."""
    earlier = _checkpoint(tmp_path / "v0-20260101-000000", 4)
    new_folder = tmp_path / "v1-20260101-000100"
    new_folder.mkdir()
    resolved = _resolved(tmp_path, "per_device_train_batch_size=2", f"resume_from_checkpoint={earlier}")
    nxt = recover.next_attempt(resolved, new_folder, 1, {})
    assert isinstance(nxt, recover.Next) and nxt.resumed_from == str(earlier) and nxt.optimizer == "restored"


def test_deepspeed_on_one_process_starts_through_torchrun(tmp_path: Path) -> None:
    resolved = resolve("cpu-smoke", Overrides(sets=("per_device_train_batch_size=1",)), env={})
    nxt = recover.next_attempt(resolved, None, 1, {})
    assert isinstance(nxt, recover.Next) and nxt.resolved.args["deepspeed"] == "zero2_offload"
    assert nxt.resolved.config.launch.launcher == "torchrun"  # DeepSpeed needs a distributed env


def test_half_written_checkpoints_are_set_aside(tmp_path: Path) -> None:
    run_dir = tmp_path / "v0-20260101-000000"
    _checkpoint(run_dir, 2)
    _checkpoint(run_dir, 4, complete=False)
    nxt = recover.next_attempt(_resolved(tmp_path, "per_device_train_batch_size=2"), run_dir, 1, {})
    assert isinstance(nxt, recover.Next) and nxt.optimizer == "restored"
    assert nxt.resumed_from == str(run_dir / "checkpoint-2")
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint-2", "incomplete-attempt1-checkpoint-4"]
    _checkpoint(run_dir, 4, complete=False)  # the same step half-written again, by a later resume
    recover.next_attempt(_resolved(tmp_path, "per_device_train_batch_size=2"), run_dir, 1, {})
    assert "incomplete-attempt1.2-checkpoint-4" in {p.name for p in run_dir.iterdir()}
    (run_dir / "checkpoint-\u00b2").mkdir()  # a digit to str.isdigit, not to int()
    assert isinstance(recover.next_attempt(_resolved(tmp_path), run_dir, 1, {}), recover.GiveUp)


NO_KERNEL_LOG = Path("/nonexistent/kmsg")


def _watch(offset: int = 0, kills: tuple[tuple[str, int], ...] = ()) -> oom.Watch:
    return oom.Watch(oom.Counters(kills), since_us=0, log_offset=offset)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "CUDA out of memory"),
        ("[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate", "CUDA out of memory"),
        ("RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
         "can't allocate memory: you tried to allocate 4294967296 bytes", "CPU allocator out of memory"),
        ("ValueError: bad dataset", None),
        ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: Signal 9 (SIGKILL)", None),
        # A data row or a prompt that holds the words, as ms-swift echoes the first row.
        ("[INFO:swift] {'messages': [{'role': 'system', 'content': 'CUDA out of memory'}]}", None),
    ],
)  # fmt: skip
def test_out_of_memory_in_the_output(tmp_path: Path, text: str, cause: str | None) -> None:
    log = tmp_path / "sftctl.log"
    rank = text[: text.index(" ") + 1] if text.startswith("[rank") else ""
    frames = f'{rank}Traceback (most recent call last):\n{rank}  File "x.py", line 1\n{rank}    step()\n'
    log.write_text("step 1\n" + frames + text + "\n")
    assert oom.cause(log, _watch(), [], signalled=False, kmsg=NO_KERNEL_LOG) == cause
    assert oom.cause(log, _watch(), [], signalled=True, kmsg=NO_KERNEL_LOG) is None  # the user's signal


def test_the_words_outside_a_traceback_do_not_count(tmp_path: Path) -> None:
    """A data row that ends with a line shaped like the exception (ms-swift prints rows)."""
    log = tmp_path / "sftctl.log"
    log.write_text("[INFO:swift] row: it said\ntorch.OutOfMemoryError: CUDA out of memory. Tried\nmore\n")
    assert oom.cause(log, _watch(), [], signalled=False, kmsg=NO_KERNEL_LOG) is None


def test_an_earlier_attempts_error_does_not_count(tmp_path: Path) -> None:
    log = tmp_path / "sftctl.log"
    frames = 'Traceback (most recent call last):\n  File "x.py"\n    f()\n'
    log.write_text(frames + "torch.OutOfMemoryError: CUDA out of memory.\n")
    assert oom.cause(log, _watch(), [], signalled=False, kmsg=NO_KERNEL_LOG) == "CUDA out of memory"
    offset = log.stat().st_size
    with log.open("a") as fh:
        fh.write("ValueError: something else entirely\n")
    assert oom.cause(log, _watch(offset), [], signalled=False, kmsg=NO_KERNEL_LOG) is None


def test_the_kernel_log_says_whose_process_was_killed(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(
        "6,100,1000,-;pci 0000:00:05.0: BAR 0\n SUBSYSTEM=pci\n"
        "3,101,5000000,-;Memory cgroup out of memory: Killed process 4242 (python) total-vm:2656528kB\n"
        "3,102,9000000,-;Out of memory: Killed process 777 (hog) total-vm:1kB\n"
    )
    assert oom.killed_by_kernel(0, kmsg) == {4242, 777}
    assert oom.killed_by_kernel(6_000_000, kmsg) == {777}  # only since the attempt began
    assert oom.killed_by_kernel(0, NO_KERNEL_LOG) is None
    log = tmp_path / "log"
    log.write_text("exit code -9\n")
    # The log names the run's process: out of memory, cgroup or not.
    assert oom.cause(log, _watch(), [4242, 4243], signalled=False, kmsg=kmsg) == "kernel OOM kill"
    # Another process of the machine was killed; the run's rank died some other way.
    assert oom.cause(log, _watch(), [5000], signalled=False, kmsg=kmsg) is None


def _cgroup_tree(root: Path, inner: int, outer: int) -> str:
    """A cgroup v1 memory hierarchy under ``root`` with OOM-kill counts; returns the text
    of /proc/PID/cgroup for a process in its inner cgroup."""
    for folder, kills in ((root / "memory" / "job", outer), (root / "memory" / "job" / "step", inner)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "memory.oom_control").write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n")
    return "12:memory:/job/step\n11:cpu,cpuacct:/job\n0::/\n"


def test_oom_kills_are_counted_in_the_cgroup_and_above(tmp_path: Path) -> None:
    text = _cgroup_tree(tmp_path, 0, 0)
    before = oom.Counters.of(text, tmp_path)
    assert [Path(name).name for name, _ in before.kills] == ["step", "job", "memory"]  # up to the root
    _cgroup_tree(tmp_path, 0, 1)  # a limit on the job: the kill is counted there
    after = oom.Counters.of(text, tmp_path)
    assert after.killed_since(before) and not before.killed_since(before)


def test_cgroup_v2_memory_events(tmp_path: Path) -> None:
    (tmp_path / "user.slice").mkdir()
    (tmp_path / "user.slice" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    counters = oom.Counters.of("0::/user.slice\n", tmp_path)
    assert counters.kills == ((str(tmp_path / "user.slice"), 2), (str(tmp_path), 0))


def test_this_process_counters_read_without_error() -> None:
    counters = oom.Counters.now()
    assert all(count >= 0 for _, count in counters.kills)
    assert not counters.killed_since(counters)
