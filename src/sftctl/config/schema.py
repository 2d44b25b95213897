"""The shape of a run config: ``description``, ``extends``, ``swift_version``,
``launch``, ``env`` and ``args``. Knows nothing of shells or ms-swift's flags;
``args`` are checked against the ms-swift catalog by ``checks.config``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GPU_ID = re.compile(r"^-?\d+$")
_GPU_RANGE = re.compile(r"^(\d+)-(\d+)$")
# More devices than any node has; a bound keeps '0-99999999' from eating the memory.
MAX_GPU_ID = 1023


def parse_gpus(text: str) -> list[int]:
    """'0,1,2,3', '0-3' or '0-1,4-5' as a list of ids; anything else is an error."""
    text = text.strip()
    if not text:
        return []
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        rng = _GPU_RANGE.match(part)
        if rng and int(rng.group(1)) <= int(rng.group(2)):
            first, last = int(rng.group(1)), int(rng.group(2))
        elif _GPU_ID.match(part):
            first = last = int(part)
        else:
            raise ValueError(f"'{part}' is not a GPU id or a range like 0-3")
        if last > MAX_GPU_ID:
            raise ValueError(f"'{part}' names GPU {last}; ids go up to {MAX_GPU_ID}")
        out.extend(range(first, last + 1))
    return out


class Launch(BaseModel):
    """How the training command is started on each node."""

    model_config = ConfigDict(extra="forbid")

    launcher: Literal["swift", "torchrun"] = Field(
        "swift",
        description="swift: NPROC_PER_NODE=N swift sft; "
        "torchrun: torchrun --nproc_per_node=N --master_port=P --no_python swift sft",
    )
    gpus: list[int] | None = Field(
        None,
        description="GPU ids for CUDA_VISIBLE_DEVICES; omitted: inherit the environment's",
    )
    # strict: `master_port: true` must not become port 1.
    nproc_per_node: int = Field(
        1,
        ge=1,
        strict=True,
        description="training processes per node; 'auto' (resolved before this model): one per listed GPU",
    )
    master_port: int | None = Field(
        None, ge=1, le=65535, strict=True, description="rendezvous port; omitted: a free one at launch"
    )
    nnodes: int = Field(1, ge=1, le=4096, strict=True, description="number of nodes")
    node_rank: int | None = Field(
        None,
        ge=0,
        strict=True,
        description="this node's rank, 0..nnodes-1 (--node-rank K); 0 runs the master",
    )
    master_addr: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9._:\-\[\]]+$",
        description="host name or address of node 0, which every node can reach (multi-node)",
    )
    rdzv: Literal["static", "c10d"] = Field(
        "static",
        description="multi-node rendezvous: static (master_addr:master_port and node_rank) or c10d "
        "(torchrun's rendezvous at master_addr:master_port under rdzv_id; node ranks assigned)",
    )
    rdzv_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="the run's id on every node (the c10d rendezvous id and sftctl's run id); "
        "default: derived from the config, the same on every node",
    )
    rdzv_timeout: int = Field(
        600,
        ge=1,
        le=86400,
        strict=True,
        description="seconds every node waits for the others to join before the run ends",
    )
    on_oom: Literal["stop", "recover"] = Field(
        "stop",
        description="stop: a rank out of memory ends the run; recover: restart from the last "
        "checkpoint with the next rung of the out-of-memory ladder (same effective batch)",
    )
    allow_shorter: bool = Field(
        False, strict=True, description="on_oom recover may shorten max_length (changes what each step sees)"
    )
    allow_optimizer_reset: bool = Field(
        False,
        strict=True,
        description="on_oom recover may resume the weights with a fresh optimizer when a rung "
        "changes how optimizer state is laid out (DDP to ZeRO, ZeRO-2 to ZeRO-3)",
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _split_gpu_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_gpus(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return value


class RunConfig(BaseModel):
    """A fully merged run config (after ``extends`` and overrides)."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="what this run is for")
    extends: str | None = Field(None, description="a preset name or a path to a YAML file")
    swift_version: int | str | None = Field(
        None, description="the ms-swift major version this config targets (3 or 4)"
    )
    launch: Launch = Field(default_factory=Launch)
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables for the run")
    args: dict[str, Any] = Field(
        default_factory=dict, description="ms-swift arguments by their ms-swift names"
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"'{name}' is not an environment variable name (letters, digits, _)")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ("true" if v is True else "false" if v is False else str(v))
                if isinstance(v, (int, float, bool))
                else v
                for k, v in value.items()
            }
        return value


TOP_LEVEL_KEYS = tuple(RunConfig.model_fields)
LAUNCH_KEYS = tuple(Launch.model_fields)
