"""A `sitecustomize` for end-to-end tests: makes the timing of a real training run
deterministic, whatever the speed of the host.

Not imported by the tests: ``conftest.pause_hook`` copies this file as
``sitecustomize.py`` into a folder put first on PYTHONPATH, next to ``pause_hook.json``
that holds its settings. Python imports it at start-up in every process of the run
(sftctl, the ``swift`` launcher, the training process); it acts only in ms-swift's
training process, the one whose ``sys.argv[0]`` is ``.../swift/cli/sft.py``, and even
there it imports nothing heavy: it waits for ``transformers.trainer`` to be imported
(a ``sys.meta_path`` finder), then wraps two methods of ``Trainer`` and writes
``patched-<pid>.json`` next to itself (pid, argv[0], settings):

``step_delay``   ``training_step`` sleeps that many seconds first, so the steps (and
                 their progress lines) are spread over time even on a fast host.
``after_step``   once ``_save_checkpoint`` has written the checkpoint of that global
                 step (model, optimizer, trainer_state.json, old ones rotated), it
                 writes ``marker`` and sleeps ``pause_s``: training stops right there
                 and the test decides what happens next (e.g. SIGTERM to sftctl).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET = "transformers.trainer"


def _settings() -> dict[str, Any]:
    path = Path(__file__).with_name("pause_hook.json")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data


def _is_training_process() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0.replace(os.sep, "/").endswith("swift/cli/sft.py")


def _patch(module: ModuleType, settings: dict[str, Any]) -> None:
    trainer = module.Trainer
    # For the test to see that the hook is in effect, and where.
    record = Path(__file__).with_name(f"patched-{os.getpid()}.json")
    record.write_text(json.dumps({"pid": os.getpid(), "argv0": sys.argv[0], **settings}))
    delay = float(settings.get("step_delay") or 0.0)
    after_step = settings.get("after_step")

    if delay > 0:
        training_step = trainer.training_step

        @functools.wraps(training_step)
        def slow_training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
            time.sleep(delay)
            return training_step(self, *args, **kwargs)

        trainer.training_step = slow_training_step

    if after_step is not None:
        save_checkpoint = trainer._save_checkpoint
        marker = Path(settings["marker"])
        pause_s = float(settings.get("pause_s", 600))

        @functools.wraps(save_checkpoint)
        def pausing_save_checkpoint(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = save_checkpoint(self, *args, **kwargs)
            step = self.state.global_step
            if step == after_step:
                tmp = marker.with_name(marker.name + ".tmp")
                tmp.write_text(json.dumps({"pid": os.getpid(), "global_step": step}))
                os.replace(tmp, marker)  # appears complete or not at all
                time.sleep(pause_s)
            return result

        trainer._save_checkpoint = pausing_save_checkpoint


def _exec_and_patch(
    exec_module: Callable[[ModuleType], None], settings: dict[str, Any]
) -> Callable[[ModuleType], None]:
    def exec_and_patch(module: ModuleType) -> None:
        exec_module(module)
        _patch(module, settings)

    return exec_and_patch


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``transformers.trainer`` through the other finders and patches the module
    as soon as its code has run, before anyone can use ``Trainer``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            loader = spec.loader
            if loader is None or not hasattr(loader, "exec_module"):
                return spec
            # Only this module's loader object: its type (and get_source) stay as they were.
            loader.exec_module = _exec_and_patch(loader.exec_module, self.settings)  # type: ignore[method-assign]
            return spec
        return None


def _install() -> None:
    if not _is_training_process():
        return
    settings = _settings()
    if not settings:
        return
    loaded = sys.modules.get(TARGET)
    if loaded is not None:
        _patch(loaded, settings)
    else:
        sys.meta_path.insert(0, _PatchOnImport(settings))


_install()
