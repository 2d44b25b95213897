"""The one registry of rules: every problem sftctl reports has an id from here.

An id is a letter for the concern and three digits, numbered in the order rules were
added and never reused:

- ``F`` the files themselves: YAML syntax, encoding, presets and ``extends``;
- ``C`` the shape of a config and of ``--set``;
- ``A`` ms-swift arguments: names, values, combinations ms-swift refuses late;
- ``S`` secrets written where others can read them;
- ``L`` the GPU layout (processes, GPUs, nodes);
- ``H`` this machine, checked by ``validate --host`` and before every ``run``;
- ``M`` memory: model shapes and the estimate;
- ``R`` run records and rendered files.

Problems are built here and nowhere else (a test keeps it so): callers use :func:`report`
with a literal id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sftctl.errors import Problem

Phase = Literal["config", "host"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    """One check: what it finds, when it runs, and how bad it is."""

    id: str
    phase: Phase
    severity: Severity
    summary: str


def _rules(phase: Phase, *rows: tuple[str, str] | tuple[str, str, Severity]) -> list[Rule]:
    return [Rule(r[0], phase, r[2] if len(r) == 3 else "error", r[1]) for r in rows]


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in [
        *_rules(
            "config",
            ("F001", "malformed YAML"),
            ("F002", "a key written twice in one mapping"),
            ("F003", "a key that is not a plain name"),
            ("F004", "an empty config file"),
            ("F005", "a top level that is not a mapping"),
            ("F006", "a file that is not UTF-8 text"),
            ("F007", "a config file that does not exist or cannot be read"),
            ("F008", "an unknown preset name"),
            ("F009", "a cycle of extends"),
            ("F010", "an extends that names no preset or file"),
            ("F011", "a YAML document whose aliases expand beyond any real config"),
            ("C001", "an unknown config key"),
            ("C002", "a config value of the wrong type or range"),
            ("C003", "args that is not a mapping"),
            ("C004", "a --set that is not KEY=VALUE"),
            ("C005", "a --set into an unknown config section"),
            ("C006", "an invalid or unsupported swift_version"),
            ("C007", "an empty --set value for an argument that takes no string"),
            ("C008", "a flat ms-swift config (its keys belong under args:)"),
            ("C009", "an env variable that the launch settings own (GPUs, process count, rendezvous)"),
            ("A001", "an unknown ms-swift argument"),
            ("A002", "an argument removed in the target ms-swift version"),
            ("A003", "an ms-swift 2.x argument name"),
            ("A004", "a command-line negation (no_x) written as an argument"),
            ("A005", "an abbreviation ms-swift would silently expand"),
            ("A006", "one argument written under two names"),
            ("A007", "a value that does not fit its argument's type or choices"),
            ("A008", "a value the preset leaves to the user (<PLACEHOLDER>)"),
            ("A009", "no model"),
            ("A010", "an empty model"),
            ("A011", "an unknown builtin: asset"),
            ("A012", "a tuner type the target ms-swift does not have"),
            ("A013", "a DeepSpeed config ms-swift does not know"),
            ("A014", "packing or padding_free without flash attention"),
            ("A015", "a value that ms-swift would read as a flag (starts with --)"),
            ("A016", "a number outside the range ms-swift, transformers or torch accept"),
            ("A017", "a value with a NUL character, which no command line can carry"),
            ("A018", "quant_bits without quant_method: ms-swift loads the model unquantized", "warning"),
            ("S001", "a secret passed as an ms-swift argument"),
            ("S002", "a secret written into the config's env"),
            ("L001", "more than one node without launch.master_addr"),
            ("L002", "a negative GPU id"),
            ("L003", "a GPU listed twice"),
            ("L004", "more processes per node than visible GPUs"),
            ("L005", "visible GPUs that do not divide evenly over the processes"),
            ("L006", "DeepSpeed or FSDP with several GPUs per process (device_map)"),
            ("L007", "several processes, no GPU, and use_cpu unset"),
            ("L008", "launch.gpus auto in a rendered script (GPUs are picked when run starts)"),
            ("L010", "a node rank outside 0..nnodes-1"),
            ("L011", "a c10d rendezvous with the swift launcher (ms-swift cannot pass one to torchrun)"),
            ("L012", "a multi-node script or run without its node's rank (--node-rank K)"),
            ("L009", "an out-of-memory recovery permission without on_oom: recover", "warning"),
            ("M001", "a model whose shape (config.json) sftctl cannot find"),
            ("M002", "no layout fits the GPUs (sftctl plan)"),
            ("M003", "a run setting beyond any machine (the estimate cannot size it)"),
        ),
        *_rules(
            "host",
            ("H001", "a local dataset that does not exist"),
            ("H002", "a local model folder without config.json"),
            ("H003", "a Python package the config needs is not installed"),
            ("H004", "the launcher (swift or torchrun) is not on PATH"),
            ("H005", "output_dir holds another run's checkpoints and add_version is false"),
            ("H006", "the fixed master_port is in use"),
            ("H007", "not enough disk for the checkpoints the run keeps"),
            ("H008", "checkpoint size unknown: free disk not checked", "warning"),
            ("H009", "save_total_limit unset: every checkpoint is kept", "warning"),
            ("H010", "no complete checkpoint to resume from"),
            ("H011", "the run to resume is still running"),
            ("H012", "output_dir cannot be created or written"),
            ("H013", "sftctl's cache cannot be written"),
            ("H014", "output_dir is in use by another run"),
            ("H015", "a GPU config on a machine with no NVIDIA GPU"),
            ("H016", "GPU ids that do not exist on this machine"),
            ("H017", "a configured GPU already in use (processes or memory)", "warning"),
            ("H018", "a configured GPU leased by another sftctl run"),
            ("H019", "--gpus auto finds too few free GPUs"),
            ("H020", "the GPU lease folder cannot be used"),
            ("H021", "the estimated peak memory exceeds the GPUs' free memory"),
            ("H022", "a second supervisor for the same node of a multi-node run"),
            ("R001", "a rendered file that differs from the rendering"),
            ("R002", "no sftctl run record where one was expected"),
            ("R003", "a process a run record names that is not that run's"),
            ("R004", "a run that ran out of memory has no rung of the ladder left to resume with"),
        ),
    ]
}


def report(rule_id: str, location: str, message: str, fix: str | None = None) -> Problem:
    """A problem found by rule ``rule_id``; its severity comes from the registry."""
    rule = RULES[rule_id]
    return Problem(rule_id, rule.severity, location, message, fix)
