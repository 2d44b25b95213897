"""Multi-node runs: the watch that keeps a node from waiting forever for the others.

torchrun starts a node's ranks only once every node has joined the rendezvous, and
ms-swift's launcher gives it no timeout of its own: sftctl ends a node whose ranks have
not started within ``launch.rdzv_timeout``. Once training runs, a rank of another node
that hangs (stopped, deadlocked, its node gone without closing its sockets) leaves this
node's ranks waiting in a collective; gloo, on CPUs, does not time out such a wait. So a
node that logs no new step for ``ddp_timeout`` seconds (the collective timeout sftctl
renders) is ended too, with the reason in its record.
"""

from __future__ import annotations

import time
from typing import Any

from sftctl.config.schema import Launch
from sftctl.runtime.supervise import is_worker


class NodeWatch:
    """``stop_if`` for run_supervised: a reason to end this node's tree, or None."""

    def __init__(self, launch: Launch, step_timeout: float) -> None:
        self.launch = launch
        # (torchrun's own rendezvous timeout is rendered later: this one ends the node.)
        self.rdzv_deadline = time.monotonic() + launch.rdzv_timeout
        self.step_timeout = step_timeout
        self.met = False
        self.stats: Any = None  # progress.Stats of the run, attached once it is followed
        self.last_step: int | None = None
        self.last_change = time.monotonic()

    def __call__(self, pids: set[int]) -> str | None:
        now = time.monotonic()
        if not self.met:
            if any(is_worker(pid) for pid in pids):
                self.met = True
                self.last_change = now
                return None
            if now < self.rdzv_deadline:
                return None
            others = ", ".join(str(k) for k in range(self.launch.nnodes) if k != (self.launch.node_rank or 0))
            return (
                f"rendezvous timeout: node(s) {others} of {self.launch.nnodes} did not join at "
                f"{self.launch.master_addr} within {self.launch.rdzv_timeout} s"
            )
        step = getattr(self.stats, "step", None)
        if step != self.last_step:
            self.last_step, self.last_change = step, now
            return None
        if step is not None and now - self.last_change > self.step_timeout:
            return (
                f"stalled: no training step for {self.step_timeout:.0f} s after step {step} "
                "(a rank hung, or a node is gone)"
            )
        return None
