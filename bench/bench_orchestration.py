"""Orchestration + tracking overhead: the Prefect + MLflow sweep against the plain pipeline.

    python -m bench.bench_orchestration                 # in-process pairs + start-up costs + CLI
    python -m bench.bench_orchestration --no-cli --repeats 2

Workload: a synthetic CheXpert-format dataset (``write_synthetic``, ``--patients``) and a
small configuration (``--model``, ``--image-size``, ``--epochs``; analysis and bootstrap as
configured by ``--set``), swept over ``--fractions`` with one seed.

1. Steady state, in one process (one-time costs excluded): ``flows.sweep.sweep`` — Prefect
   flows and tasks against the temporary local API, MLflow on SQLite, what ``chexflow
   sweep`` runs — against ``bench.plain_sweep.run_plain_sweep`` (the same
   ``chexflow.pipeline`` steps and report, no Prefect, no MLflow). Every run gets a fresh
   workdir (no image cache, checkpoint or Prefect result crosses runs); the sweeps share
   one MLflow SQLite database created before timing, as they would in a kept workdir. The
   Prefect API is started (and timed) before the first pair, and one untimed sweep and
   plain run warm the process up. The sweep runs with the CLI's embedded-mode settings
   (``flows._common.embedded_run_settings``); ``--before-repeats`` sweeps run without them
   (Prefect's default flow heartbeats), as the CLI did before, for the before/after. As
   ``chexflow sweep`` does, the process freezes its start-up heap (``gc.freeze``) before
   the runs. Prefect client retries (HTTP 503 from the API's SQLite) are counted per sweep,
   and each sweep's time in Prefect's engine, in MLflow calls and in garbage collection is
   measured inside it (``OverheadBreakdown``).
   After the pairs, the comparison's artifact download of the last sweep's runs is timed
   by run id (``MlflowClient.download_artifacts``, before) and by artifact URI (after).
2. One-time costs, each in fresh subprocesses: ``import prefect``; the temporary API's
   start on a new ``PREFECT_HOME`` (database migrations: cold) and on a used one (warm);
   the cost of one flow run with and without heartbeats; a new MLflow SQLite database;
   a command's imports until the API is ready, with the API started after the flows'
   import (as Prefect does) and during it (``flows.embedded.start_temporary_api``, as the
   CLI does); a full garbage collection after the CLI's imports, with and without
   ``gc.freeze``; and
   a flow of three subflows of five tasks on a temporary API with Prefect's task-run
   recorder settings and with the embedded mode's (``EMBEDDED_SERVER_DEFAULTS``).
3. The command line end to end (``--cli``): ``chexflow sweep`` in a fresh workdir with a
   cold and with a warm ``PREFECT_HOME``, against ``python -m bench.plain_sweep``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    add_sweep_workload,
    figure,
    finish_document,
    paired_ratio,
    start_document,
    stats,
)

MODULE = "bench.bench_orchestration"
TARGET = 1.10
OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

_IMPORT_PREFECT = """
import json, time
start = time.perf_counter()
import prefect
print(json.dumps({"import_prefect_s": time.perf_counter() - start}))
"""

_SERVER_START = """
import json, time
start = time.perf_counter()
from prefect.server.api.server import SubprocessASGIServer
imported = time.perf_counter()
server = SubprocessASGIServer()
server.start()
healthy = time.perf_counter()
server.stop()
print(json.dumps({"import_s": imported - start, "start_s": healthy - imported}))
"""

_FLOW_RUN = """
import json, time
from prefect import flow, task
from flows.embedded import embedded_run_settings

@task
def add_one(x):
    return x + 1

@flow
def one_task_flow():
    return add_one(1)

start = time.perf_counter()
one_task_flow()
first = time.perf_counter() - start
default, embedded = [], []
for _ in range({repeats}):
    start = time.perf_counter()
    one_task_flow()
    default.append(time.perf_counter() - start)
    with embedded_run_settings():
        start = time.perf_counter()
        one_task_flow()
        embedded.append(time.perf_counter() - start)
print(json.dumps({{"first_flow_s": first, "default_s": default, "embedded_s": embedded}}))
"""


_FULL_COLLECTION = """
import gc, json, time
import flows.cli, flows.sweep, chexflow.pipeline, chexflow.analysis.run_analysis
objects = len(gc.get_objects())
samples = {{"default": [], "frozen": []}}
for name in samples:
    if name == "frozen":
        gc.freeze()
    for _ in range({repeats}):
        start = time.perf_counter()
        gc.collect()
        samples[name].append(time.perf_counter() - start)
print(json.dumps({{"objects": objects, **samples}}))
"""

_EARLY_API = """
import json, time
start = time.perf_counter()
import chexflow.pipeline  # what a command imports to check its input
if {early}:
    from flows.embedded import start_temporary_api
    api_started = start_temporary_api()
import flows.sweep, flows.compare
if {early}:
    api_started()
else:
    from prefect.server.api.server import SubprocessASGIServer
    from flows.embedded import embedded_run_settings
    with embedded_run_settings():
        SubprocessASGIServer().start()
print(json.dumps({{"api_ready_s": time.perf_counter() - start}}))
"""

_RECORDER = """
import json, time
from prefect import flow, task
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from bench.bench_orchestration import count_client_retries
from flows.embedded import embedded_run_settings

retries = count_client_retries()

@task
def add_one(x):
    return x + 1

@flow
def child(i):
    return [add_one(j) for j in range(5)]

@flow
def parent():
    return [child(i) for i in range(3)]

# heartbeats off in both: only the task-run recorder's settings differ
no_heartbeats = temporary_settings(updates={{PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}})
with embedded_run_settings() if {embedded} else no_heartbeats:
    parent()  # starts the API with these settings
    retries.count = 0
    runs = []
    for _ in range({repeats}):
        start = time.perf_counter()
        parent()
        runs.append(time.perf_counter() - start)
print(json.dumps({{"runs_s": runs, "retries": retries.count}}))
"""


class RetryCounter(logging.Filter):
    """Counts the Prefect client's retries of retryable API answers (HTTP 503: SQLite busy),
    each a ~2 s back-off; lets only INFO and above through to Prefect's handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "retryable" in record.getMessage():
            self.count += 1
        return record.levelno >= logging.INFO


class OverheadBreakdown:
    """Where a sweep's orchestration time goes, measured in the sweep itself: Prefect's
    engine around each task and flow function (``run_task_sync`` minus ``call_task_fn``,
    ``run_flow_sync`` minus ``call_flow_fn``: creating runs, state changes, results), time
    inside ``MlflowClient`` and ``mlflow.artifacts.download_artifacts`` calls, and garbage
    collection pauses. It wraps Prefect internals, so a Prefect release that renames them
    leaves the figures out (``available: false``) rather than failing the benchmark."""

    _PREFECT = (
        ("prefect.task_engine", None, "run_task_sync", "task_total"),
        ("prefect.task_engine", "SyncTaskRunEngine", "call_task_fn", "task_inner"),
        ("prefect.flow_engine", None, "run_flow_sync", "flow_total"),
        ("prefect.flow_engine", "FlowRunEngine", "call_flow_fn", "flow_inner"),
    )

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.available = True
        self._mlflow_depth = 0
        self._gc_start = 0.0
        self._patched: list[tuple[Any, str, Any]] = []

    def _add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
        self.calls[key] = self.calls.get(key, 0) + 1

    def _wrap(self, owner: Any, name: str, key: str, mlflow: bool = False) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if mlflow and self._mlflow_depth:  # an MLflow call inside another
                return original(*args, **kwargs)
            self._mlflow_depth += mlflow
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._mlflow_depth -= mlflow
                self._add(key, time.perf_counter() - start)

        setattr(owner, name, timed)
        self._patched.append((owner, name, original))

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self._add(f"gc_gen{info['generation']}", time.perf_counter() - self._gc_start)

    def __enter__(self) -> OverheadBreakdown:
        import importlib

        import mlflow.artifacts
        from mlflow import MlflowClient

        try:
            for module, cls, name, key in self._PREFECT:
                owner = importlib.import_module(module)
                self._wrap(getattr(owner, cls) if cls else owner, name, key)
        except AttributeError:
            self.available = False
        for name in dir(MlflowClient):
            if not name.startswith("_") and inspect.isfunction(
                inspect.getattr_static(MlflowClient, name)
            ):
                self._wrap(MlflowClient, name, "mlflow", mlflow=True)
        self._wrap(mlflow.artifacts, "download_artifacts", "mlflow", mlflow=True)
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._gc)
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)

    def summary(self) -> dict[str, Any]:
        s, n = self.seconds, self.calls
        out: dict[str, Any] = {
            "mlflow_s": round(s.get("mlflow", 0.0), 3),
            "mlflow_calls": n.get("mlflow", 0),
            "gc_full_s": round(s.get("gc_gen2", 0.0), 3),
            "gc_full_collections": n.get("gc_gen2", 0),
            "gc_young_s": round(s.get("gc_gen0", 0.0) + s.get("gc_gen1", 0.0), 3),
        }
        if self.available:
            out["prefect_task_engine_s"] = round(s["task_total"] - s["task_inner"], 3)
            out["task_runs"] = n["task_total"]
            # nested subflows: their engine time is inside the parent's flow function,
            # so the difference of the sums counts each flow run's engine time once
            out["prefect_flow_engine_s"] = round(s["flow_total"] - s["flow_inner"], 3)
            out["flow_runs"] = n["flow_total"]
        return out


def count_client_retries() -> RetryCounter:
    counter = RetryCounter()
    client_logger = logging.getLogger("prefect.client")
    client_logger.setLevel(logging.DEBUG)
    client_logger.addFilter(counter)
    return counter


def run_json(code: str, env: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    """Run Python ``code`` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path.cwd(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"subprocess failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a measured subprocess: offline, this repo importable, and the
    torch thread count of the in-process runs (``CHEXFLOW_BENCH_THREADS``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",)}
    threads = os.environ.get("CHEXFLOW_BENCH_THREADS")
    if threads:
        env["OMP_NUM_THREADS"] = threads
    env.update(OFFLINE_ENV)
    # A cold home migrates its database first: on a loaded 2-core machine that outlasts
    # Prefect's default wait for the temporary API (the CLI allows 180 s the same way).
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def one_time_costs(tmp: Path, repeats: int) -> dict[str, Any]:
    """Prefect import, API start cold/warm, one flow run with/without heartbeats, MLflow DB."""
    out: dict[str, Any] = {}
    tmp.mkdir(parents=True, exist_ok=True)
    env = base_env(PREFECT_HOME=str(tmp / "import-home"))
    out["import_prefect_s"] = stats(
        [run_json(_IMPORT_PREFECT, env)["import_prefect_s"] for _ in range(repeats)], 3
    )
    cold = [
        run_json(_SERVER_START, base_env(PREFECT_HOME=str(tmp / f"cold-home-{i}")))
        for i in range(max(1, repeats - 1))
    ]
    warm_home = base_env(PREFECT_HOME=str(tmp / "warm-home"))
    run_json(_SERVER_START, warm_home)  # migrates the warm home
    warm = [run_json(_SERVER_START, warm_home) for _ in range(repeats)]
    out["api_start_cold_s"] = stats([r["start_s"] for r in cold], 3)
    out["api_start_warm_s"] = stats([r["start_s"] for r in warm], 3)
    out["server_module_import_s"] = stats([r["import_s"] for r in warm], 3)
    flows = run_json(_FLOW_RUN.format(repeats=repeats), warm_home)
    out["first_flow_call_s"] = round(flows["first_flow_s"], 3)
    out["flow_run_default_s"] = stats(flows["default_s"], 3)
    out["flow_run_embedded_s"] = stats(flows["embedded_s"], 3)
    out["mlflow_new_sqlite_db_s"] = stats([new_mlflow_db(tmp / f"mlflow-{i}") for i in range(2)], 3)
    early_home = base_env(PREFECT_HOME=str(tmp / "early-home"))
    run_json(_SERVER_START, early_home)  # migrates it
    ready: dict[str, list[float]] = {"sequential": [], "early": []}
    for i in range(repeats):  # alternating order
        for mode in ("sequential", "early") if i % 2 == 0 else ("early", "sequential"):
            code = _EARLY_API.format(early=mode == "early")
            ready[mode].append(run_json(code, early_home)["api_ready_s"])
    out["api_ready_sequential_s"] = stats(ready["sequential"], 3)
    out["api_ready_early_s"] = stats(ready["early"], 3)
    collections = run_json(_FULL_COLLECTION.format(repeats=repeats), warm_home)
    out["full_collection_objects"] = collections["objects"]
    out["full_collection_s"] = stats(collections["default"], 3)
    out["full_collection_frozen_s"] = stats(collections["frozen"], 4)
    for name, embedded in (("prefect_default", False), ("embedded", True)):
        home = base_env(PREFECT_HOME=str(tmp / f"recorder-{name}"))
        measured = run_json(_RECORDER.format(embedded=embedded, repeats=repeats + 1), home)
        out[f"subflows_{name}_s"] = stats(measured["runs_s"], 3)
        out[f"subflows_{name}_retries"] = measured["retries"]
    return out


def new_mlflow_db(directory: Path) -> float:
    """Seconds to create an MLflow SQLite store and its experiment (first use of a workdir)."""
    from chexflow.tracking import Tracker

    directory.mkdir(parents=True)
    start = time.perf_counter()
    Tracker(f"sqlite:///{directory / 'mlflow.db'}", "bench", directory.as_uri()).experiment_id()
    return time.perf_counter() - start


def steady_state(
    args: argparse.Namespace, data: Path, tmp: Path, overrides: list[str]
) -> dict[str, Any]:
    """Paired in-process sweeps and plain runs (module docstring, part 1)."""
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ.pop("PREFECT_API_URL", None)
    import torch
    from prefect import flow

    from bench.plain_sweep import run_plain_sweep
    from chexflow.config import load_config
    from chexflow.tracking import Tracker
    from flows.embedded import embedded_run_settings
    from flows.sweep import sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(None, overrides)
    gc.freeze()  # as `chexflow sweep` does after its imports (cli._freeze_startup_heap)
    retries = count_client_retries()

    @flow
    def start_api() -> None:
        return None

    start = time.perf_counter()
    with embedded_run_settings():
        start_api()
    api_start_s = time.perf_counter() - start
    start = time.perf_counter()
    Tracker(
        os.environ["MLFLOW_TRACKING_URI"], config.tracking.experiment, (tmp / "art").as_uri()
    ).experiment_id()
    mlflow_db_s = time.perf_counter() - start

    runs = iter(range(10**6))

    def workdir() -> Path:
        return tmp / f"work-{next(runs)}"

    def plain(cfg: Any = config) -> float:
        start = time.perf_counter()
        run_plain_sweep(data, args.fractions, [0], cfg, workdir())
        return time.perf_counter() - start

    last_sweep: dict[str, Any] = {}
    breakdowns: list[dict[str, Any]] = []

    def flow_sweep(embedded: bool = True, cfg: Any = config) -> float:
        start = time.perf_counter()
        if embedded:
            with embedded_run_settings(), OverheadBreakdown() as breakdown:
                result = sweep(str(data), args.fractions, [0], cfg, str(workdir()))
                last_sweep.update(result.model_dump())
            breakdowns.append(breakdown.summary())
        else:
            sweep(str(data), args.fractions, [0], cfg, str(workdir()))
        return time.perf_counter() - start

    # Warm-up (imports, first calls, the MLflow experiment): the same runs with 1 epoch.
    short = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})})
    warm = {"plain_s": round(plain(short), 3), "sweep_s": round(flow_sweep(cfg=short), 3)}
    del breakdowns[:]
    samples: dict[str, list[float]] = {"plain": [], "sweep": [], "sweep_before": []}
    retries_per_sweep: list[int] = []
    before_pairs: list[tuple[float, float]] = []
    for i in range(args.repeats):
        measures: list[tuple[str, Callable[[], float]]] = [
            ("plain", plain),
            ("sweep", flow_sweep),
        ]
        if i < args.before_repeats:
            measures.append(("sweep_before", lambda: flow_sweep(embedded=False)))
        shift = i % len(measures)
        this: dict[str, float] = {}
        for name, measure in measures[shift:] + measures[:shift]:
            before = retries.count
            this[name] = measure()
            samples[name].append(this[name])
            if name == "sweep":
                retries_per_sweep.append(retries.count - before)
        if "sweep_before" in this:
            before_pairs.append((this["sweep_before"], this["plain"]))
        print(f"[orchestration] repeat {i + 1}: {this}", flush=True)
    overheads = [s - p for s, p in zip(samples["sweep"], samples["plain"], strict=True)]
    results: dict[str, Any] = {
        "plain_s": stats(samples["plain"], 3),
        "sweep_s": stats(samples["sweep"], 3),
        "ratio_sweep_to_plain": paired_ratio(samples["sweep"], samples["plain"]),
        "overhead_s": round(statistics.median(overheads), 3),
        "api_start_in_process_s": round(api_start_s, 3),
        "mlflow_db_and_experiment_s": round(mlflow_db_s, 3),
        "warmup_excluded": warm,
        "api_retries_per_sweep": retries_per_sweep,
        "sweep_breakdown": breakdowns,
        "compare_download": download_before_after(last_sweep, tmp / "downloads"),
    }
    if before_pairs:
        results["sweep_before_s"] = stats([b for b, _ in before_pairs], 3)
        results["ratio_before_to_plain"] = paired_ratio(
            [b for b, _ in before_pairs], [p for _, p in before_pairs]
        )
    return results


def download_before_after(result: dict[str, Any], tmp: Path, repeats: int = 3) -> dict:
    """The comparison's download of a sweep's runs: by run id (before) / by artifact URI."""
    from chexflow.records import COMPARED_ARTIFACTS as ARTIFACTS
    from chexflow.tracking import Tracker

    tracker = Tracker(os.environ["MLFLOW_TRACKING_URI"], "unused")
    run_ids = [r["run_id"] for r in result["runs"]] + [result["reference"]["run_id"]]
    runs = [tracker.client.get_run(run_id) for run_id in run_ids]
    calls = iter(range(10**6))

    def by_run_id() -> float:
        start = time.perf_counter()
        for run in runs:
            dst = tmp / f"{next(calls)}"
            dst.mkdir(parents=True)
            for name in ARTIFACTS:
                tracker.client.download_artifacts(run.info.run_id, name, str(dst))
        return time.perf_counter() - start

    def by_uri() -> float:
        start = time.perf_counter()
        for run in runs:
            tracker.download(run.info.artifact_uri, ARTIFACTS, tmp / f"{next(calls)}")
        return time.perf_counter() - start

    before, after = [], []
    for _ in range(repeats):
        before.append(by_run_id())
        after.append(by_uri())
    return {"runs": len(runs), "by_run_id_s": stats(before, 3), "by_uri_s": stats(after, 3)}


def cli_runs(args: argparse.Namespace, data: Path, tmp: Path, overrides: list[str]) -> dict:
    """``chexflow sweep`` end to end (cold and warm Prefect home) vs the plain script."""
    chexflow = Path(sys.executable).parent / "chexflow"
    settings = [x for item in overrides for x in ("--set", item)]
    fractions = ",".join(f"{f:g}" for f in args.fractions)
    tmp.mkdir(parents=True, exist_ok=True)
    warm_home = tmp / "cli-warm-home"
    run_json(_SERVER_START, base_env(PREFECT_HOME=str(warm_home)))  # migrate it once

    def timed_command(command: list[str], env: dict[str, str], log: Path) -> float:
        start = time.perf_counter()
        with open(log, "w") as out:
            done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed; see {log}")
        return time.perf_counter() - start

    def cli(home: Path, n: int) -> float:
        work = tmp / f"cli-work-{n}"
        command = [str(chexflow), "sweep", "--data", str(data), "--fractions", fractions]
        command += ["--workdir", str(work), *settings]
        env = base_env(PREFECT_HOME=str(home))
        env.pop("MLFLOW_TRACKING_URI", None)
        return timed_command(command, env, tmp / f"cli-{n}.log")

    def plain(n: int) -> float:
        command = [sys.executable, "-m", "bench.plain_sweep", "--data", str(data)]
        command += ["--fractions", fractions, "--workdir", str(tmp / f"plain-work-{n}")]
        command += [x for item in overrides for x in ("--set", item)]
        return timed_command(command, base_env(), tmp / f"plain-{n}.log")

    cold = cli(tmp / "cli-cold-home", 0)
    warm, plains = [], []
    for i in range(args.cli_repeats):
        if i % 2 == 0:
            plains.append(plain(i))
            warm.append(cli(warm_home, i + 1))
        else:
            warm.append(cli(warm_home, i + 1))
            plains.append(plain(i))
    return {
        "cli_cold_home_s": round(cold, 3),
        "cli_warm_home_s": stats(warm, 3),
        "plain_script_s": stats(plains, 3),
        "ratio_cli_warm_to_plain": paired_ratio(warm, plains),
        "ratio_cli_cold_to_plain": round(cold / statistics.median(plains), 4),
        "note": "whole processes: imports, Prefect API start, a new MLflow SQLite database",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_workload(parser, fractions="0.1,0.5")
    parser.add_argument("--demo", action="store_true", help="the `chexflow demo` workload")
    parser.add_argument("--repeats", type=int, default=5, help="paired sweep/plain runs")
    parser.add_argument("--before-repeats", type=int, default=1, help="sweeps with heartbeats")
    parser.add_argument("--start-repeats", type=int, default=3, help="one-time cost samples")
    parser.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cli-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/orchestration.json"))
    args = parser.parse_args(argv)
    args.fractions = [float(f) for f in args.fractions.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if args.threads:
        os.environ["CHEXFLOW_BENCH_THREADS"] = str(args.threads)
    doc = start_document("orchestration", MODULE, argv)
    if args.demo:
        from chexflow.demo import FULL

        args.patients, args.fractions = int(FULL["patients"]), list(FULL["fractions"])
        args.image_size = 64
        overrides = [*FULL["overrides"], *args.overrides]
    else:
        overrides = [
            f"data.image_size={args.image_size}",
            f"model.name={args.model}",
            f"train.epochs={args.epochs}",
            "train.batch_size=32",
            "train.bootstrap=100",
            "analysis.bootstrap=100",
            "analysis.kmeans_seeds=2",
            *args.overrides,
        ]
    with tempfile.TemporaryDirectory(prefix="chexflow-bench-orchestration-") as name:
        tmp = Path(name)
        from chexflow.data.synthetic import write_synthetic

        data = write_synthetic(tmp / "data", args.patients, args.image_size, 0, progress=False)
        results: dict[str, Any] = {"one_time": one_time_costs(tmp / "one-time", args.start_repeats)}
        results["steady_state"] = steady_state(args, data, tmp / "steady", overrides)
        if args.cli:
            results["cli"] = cli_runs(args, data, tmp / "cli", overrides)
    doc["settings"] = {
        "patients": args.patients,
        "fractions": args.fractions,
        "seeds": [0],
        "config_overrides": overrides,
        "repeats": args.repeats,
        "before_repeats": args.before_repeats,
        "torch_threads": args.threads,
        "demo_workload": args.demo,
        "warmup": "one untimed sweep and plain run (1 epoch); the Prefect API started first",
    }
    doc["results"] = results
    doc["figures"] = orchestration_figures(results)
    finish_document(doc, args.out)
    return doc


def median_breakdown(breakdowns: list[dict[str, Any]]) -> dict[str, float]:
    """Each ``OverheadBreakdown.summary`` key's median over the timed sweeps."""
    keys = set.intersection(*(set(b) for b in breakdowns)) if breakdowns else set()
    return {k: statistics.median(b[k] for b in breakdowns) for k in sorted(keys)}


def orchestration_figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    steady, one = results["steady_state"], results["one_time"]
    ratio = steady["ratio_sweep_to_plain"]["median"]
    figures = [
        figure(
            "sweep (Prefect + MLflow) / plain pipeline, API start excluded",
            ratio,
            "ratio",
            f"<= {TARGET}",
            ratio <= TARGET,
        ),
        figure("sweep overhead over plain pipeline", steady["overhead_s"], "s"),
        figure(
            f"plain runtime from which the overhead is <= {TARGET - 1:.0%}",
            round(steady["overhead_s"] / (TARGET - 1), 1),
            "s",
        ),
    ]
    if "ratio_before_to_plain" in steady:
        figures.append(
            figure(
                "same, before (flow heartbeats on)",
                steady["ratio_before_to_plain"]["median"],
                "ratio",
            )
        )
    breakdown = median_breakdown(steady.get("sweep_breakdown", []))
    if "prefect_flow_engine_s" in breakdown:
        figures.append(
            figure(
                f"in a sweep: Prefect engine for {breakdown['flow_runs']:.0f} flow runs / "
                f"{breakdown['task_runs']:.0f} task runs, MLflow "
                f"({breakdown['mlflow_calls']:.0f} calls), full GC",
                f"{breakdown['prefect_flow_engine_s']:.3f} / "
                f"{breakdown['prefect_task_engine_s']:.3f} / {breakdown['mlflow_s']:.3f} / "
                f"{breakdown['gc_full_s']:.3f}",
                "s",
            )
        )
    figures.append(
        figure(
            "Prefect client retries (HTTP 503, ~2 s each) per sweep",
            statistics.median(steady["api_retries_per_sweep"]),
            "count",
        )
    )
    if "subflows_embedded_s" in one:
        figures.append(
            figure(
                "3 subflows x 5 tasks, no heartbeats: Prefect's task-run recorder / embedded "
                f"settings (API retries {one['subflows_prefect_default_retries']} / "
                f"{one['subflows_embedded_retries']})",
                f"{one['subflows_prefect_default_s']['median']:.3f} / "
                f"{one['subflows_embedded_s']['median']:.3f}",
                "s",
            )
        )
    if "api_ready_early_s" in one:
        figures.append(
            figure(
                "imports + API ready (used PREFECT_HOME): API started after / during the "
                "flows' import",
                f"{one['api_ready_sequential_s']['median']:.3f} / "
                f"{one['api_ready_early_s']['median']:.3f}",
                "s",
            )
        )
    if "full_collection_s" in one:
        figures.append(
            figure(
                f"full garbage collection after the CLI's imports "
                f"({one['full_collection_objects']:,} objects): default / gc.freeze",
                f"{one['full_collection_s']['median']:.3f} / "
                f"{one['full_collection_frozen_s']['median']:.4f}",
                "s",
            )
        )
    if "compare_download" in steady:
        download = steady["compare_download"]
        figures.append(
            figure(
                f"compare: download {download['runs']} runs' artifacts, by run id / by URI",
                f"{download['by_run_id_s']['median']:.3f} / {download['by_uri_s']['median']:.3f}",
                "s",
            )
        )
    figures += [
        figure("Prefect API start, new PREFECT_HOME", one["api_start_cold_s"]["median"], "s"),
        figure("Prefect API start, used PREFECT_HOME", one["api_start_warm_s"]["median"], "s"),
        figure("import prefect", one["import_prefect_s"]["median"], "s"),
        figure(
            "one flow run with 1 task: default / embedded settings",
            f"{one['flow_run_default_s']['median']:.3f} / "
            f"{one['flow_run_embedded_s']['median']:.3f}",
            "s",
        ),
    ]
    if "cli" in results:
        cli = results["cli"]
        figures.append(
            figure(
                "`chexflow sweep` process / plain script process (warm PREFECT_HOME)",
                cli["ratio_cli_warm_to_plain"]["median"],
                "ratio",
            )
        )
    return figures


if __name__ == "__main__":
    main()
