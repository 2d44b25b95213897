"""Commands that size a run before it starts: estimate."""

import json
import sys
from typing import Annotated

import typer

from sftctl.cli.boundary import boundary
from sftctl.cli.options import JsonOpt, TargetSpec, target_command


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(estimate)


SeqLenOpt = Annotated[
    int | None,
    typer.Option(
        "--seq-len",
        min=1,
        help="The longest row of your data, in tokens (default: max_length).",
        show_default=False,
    ),
]


@target_command()
def estimate(spec: TargetSpec, seq_len: SeqLenOpt = None, as_json: JsonOpt = False) -> None:
    """Peak memory per GPU of a run, term by term; host RAM and checkpoint size."""
    from sftctl.cli import views
    from sftctl.config.resolve import resolve
    from sftctl.resources.memory import for_resolved

    with boundary():
        result = for_resolved(resolve(spec.one(), spec.overrides()), seq_len=seq_len)
        if as_json:
            sys.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
            return
        views.estimate_table(result)
