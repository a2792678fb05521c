"""Run a ``chexflow`` command in this process and record when each start-up step happens.

    python [-X importtime] -m bench.startup_probe MARKS.json sweep --data DIR ...

Used by ``bench.bench_commands`` for the breakdown of the time before the first training
step. Nothing in the product changes: an import hook wraps a few functions of the modules
it loads (each function's first call is timed, wall clock ``time.time()``) and
``TrainStep.__call__`` (the first optimiser step). The marks are written to ``MARKS.json``
when the process exits; the first step also writes ``PROBE first-step`` to stderr, so the
``-X importtime`` lines before it are the imports the command paid before training.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE_STARTED = time.time()
FIRST_STEP_LINE = "PROBE first-step"

# module -> functions whose first call is timed; "Class.method" wraps a method
WRAPPED: dict[str, list[str]] = {
    "flows.cli": [],
    "flows.sweep": [],
    "flows.embedded": ["start_temporary_api"],
    "chexflow.config": ["load_config"],
    "chexflow.demo": ["ensure_demo_data"],
    "chexflow.pipeline": ["check_model_input", "prepare_data", "train_model", "build_dataset"],
    "chexflow.tracking": ["make_tracker"],
    "chexflow.models": ["create_model"],
    "chexflow.train": ["fit", "TrainStep.__call__"],
}


class Marks:
    """First start and end (epoch seconds) of each label."""

    def __init__(self) -> None:
        self.first: dict[str, list[float]] = {}

    def start(self, label: str) -> bool:
        if label in self.first:
            return False
        self.first[label] = [time.time()]
        return True

    def end(self, label: str) -> None:
        self.first[label].append(time.time())

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            first = self.start(label)
            try:
                result = fn(*args, **kwargs)
            finally:
                if first:
                    self.end(label)
                    if label == "chexflow.train.TrainStep.__call__":
                        print(FIRST_STEP_LINE, file=sys.stderr, flush=True)
            if first and label == "flows.embedded.start_temporary_api":
                return self.timed("api_wait", result)
            return result

        return wrapper


MARKS = Marks()


class _Hook(importlib.abc.MetaPathFinder):
    """Times the import of each ``WRAPPED`` module and wraps its functions once loaded."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in WRAPPED:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module  # type: ignore[union-attr]

        def exec_module(module: Any) -> None:
            MARKS.start(f"import {name}")
            execute(module)
            MARKS.end(f"import {name}")
            for attr in WRAPPED[name]:
                owner_name, _, method = attr.rpartition(".")
                owner = getattr(module, owner_name) if owner_name else module
                label = f"{name}.{attr}"
                setattr(owner, method or attr, MARKS.timed(label, getattr(owner, method or attr)))

        spec.loader.exec_module = exec_module  # type: ignore[union-attr]
        return spec


def main() -> None:
    out = Path(sys.argv[1])
    sys.argv = ["chexflow", *sys.argv[2:]]
    sys.meta_path.insert(0, _Hook())

    def write() -> None:  # registered first, so it runs after every other exit handler
        MARKS.start("exit handlers done")
        out.write_text(json.dumps({"probe_started": PROBE_STARTED, "marks": MARKS.first}))

    atexit.register(write)
    from flows.cli import main as cli_main

    try:
        cli_main()
    finally:
        MARKS.start("command returned")


if __name__ == "__main__":
    main()
