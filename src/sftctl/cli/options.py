"""Options shared by every command that takes a TARGET, declared once.

``@target_command`` adds TARGET (positional), ``--preset``, ``--config``, ``--set``,
``--gpus``, ``--model`` and ``--swift-version`` to a command and hands it one
:class:`TargetSpec` instead of seven parameters.
"""

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sftctl.errors import UsageError

if TYPE_CHECKING:
    from sftctl.config.resolve import Overrides

# No `from __future__ import annotations` here: Typer would evaluate every string
# annotation of every command on each start-up.

TargetArg = Annotated[
    str | None, typer.Argument(help="A preset name or a path to a YAML config.", show_default=False)
]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="A shipped or user preset name.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A path to a YAML config.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE: an ms-swift argument (learning_rate=1e-4) or a dotted "
        "config path (launch.nproc_per_node=2). Repeatable.",
    ),
]
GpusOpt = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        help="GPU ids for CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3; or auto / auto:N: free GPUs, "
        "picked and leased when the run starts.",
    ),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="The model id or local path.")]
VersionOpt = Annotated[
    str | None,
    typer.Option(
        "--swift-version",
        help="Target ms-swift major version (3 or 4); default: the installed one.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def seconds_option(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"{value} is not a number of seconds (give e.g. 30)")
    return value


GraceOpt = Annotated[
    float,
    typer.Option("--grace", callback=seconds_option, help="Seconds between forwarding a signal and SIGKILL."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress display.")]


NodeRankOpt = Annotated[
    int | None,
    typer.Option("--node-rank", min=0, help="Multi-node: this node's rank, 0..nnodes-1.", show_default=False),
]


@dataclass(frozen=True)
class TargetSpec:
    """What the user named (a preset, a file, or several) and what they override."""

    targets: tuple[str, ...]
    sets: tuple[str, ...] = ()
    gpus: str | None = None
    model: str | None = None
    swift_version: str | None = None

    def with_sets(self, *sets: str) -> "TargetSpec":
        """The same target with more ``--set`` overrides (flags that stand for config keys)."""
        import dataclasses

        return dataclasses.replace(self, sets=(*self.sets, *sets)) if sets else self

    def with_node_rank(self, node_rank: int | None) -> "TargetSpec":
        """``--node-rank K`` as the config key it sets (launch.node_rank)."""
        return self if node_rank is None else self.with_sets(f"launch.node_rank={node_rank}")

    def one(self) -> str:
        """The single target of a command that takes one."""
        if len(self.targets) != 1:
            raise UsageError("give exactly one TARGET: a preset name, --preset NAME or --config FILE")
        return self.targets[0]

    def overrides(self) -> "Overrides":
        from sftctl.config.resolve import Overrides

        return Overrides(sets=self.sets, gpus=self.gpus, model=self.model, swift_version=self.swift_version)


_SHARED: list[tuple[str, Any]] = [
    ("preset", PresetOpt),
    ("config", ConfigOpt),
    ("set_", SetOpt),
    ("gpus", GpusOpt),
    ("model", ModelOpt),
    ("swift_version", VersionOpt),
]

F = TypeVar("F", bound=Callable[..., Any])


def target_command(*, many: bool = False) -> Callable[[F], F]:
    """Give a command the shared target and override options; it receives ``spec: TargetSpec``.

    With ``many``, TARGET takes several values (``validate a.yaml b.yaml``)."""

    def decorate(fn: F) -> F:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "spec"]
        positional = (
            Annotated[list[str] | None, typer.Argument(help="Presets or YAML files.", show_default=False)]
            if many
            else TargetArg
        )
        params = [inspect.Parameter("target", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=positional)]  # fmt: skip
        params += [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=ann)
            for name, ann in _SHARED
        ]
        params += own

        @functools.wraps(fn)
        def wrapper(**kw: Any) -> Any:
            target = kw.pop("target")
            named = list(target or []) if many else ([target] if target else [])
            preset, config = kw.pop("preset"), kw.pop("config")
            from sftctl.config.presets import looks_like_path  # here: --help needs no YAML

            if preset is not None and looks_like_path(preset):
                raise typer.BadParameter(
                    f"'{preset}' is a path; --preset takes a preset name (give a file with --config)",
                    param_hint="--preset",
                )
            named += [t for t in (preset, str(config) if config else None) if t]
            spec = TargetSpec(
                targets=tuple(named),
                sets=tuple(kw.pop("set_") or ()),
                gpus=kw.pop("gpus"),
                model=kw.pop("model"),
                swift_version=kw.pop("swift_version"),
            )
            return fn(spec=spec, **kw)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate
