"""Whole-command figures: what a user waits for, from a command's start to its exit.

    python -m bench.bench_commands                      # the default (~6 min on 2 idle cores)
    python -m bench.bench_commands --repeats 1 --no-demo --no-threads

Every figure is a whole process started with ``subprocess`` (imports, the Prefect API, a
new MLflow database, the work, the exit), in a fresh workdir, on a synthetic dataset
written once (``--patients`` at ``--image-size``):

1. ``chexflow sweep`` (one fraction, the 0% reference and the comparison: the small
   workload of ``bench.bench_orchestration``'s configuration) against
   ``python -m bench.plain_sweep`` on the same data and settings (the same
   ``chexflow.pipeline`` steps, no Prefect, no MLflow), in ``--repeats`` rounds of three
   runs in rotating order: plain, the command with a used ``PREFECT_HOME`` (warm: its
   database migrated by an earlier run) and the command with the default home inside the
   new workdir (cold; since ``flows.prefect_home`` a new home starts from the template an
   untimed first command left in a fresh ``XDG_CACHE_HOME``). Ratios are medians of the
   rounds' ratios; CPU seconds (the command and the processes it waited for, such as the
   Prefect API) give the same ratio immune to other load. ``--before REF`` adds the CLI
   of git ``REF`` (``git archive``) to the rounds, warm and cold.
2. ``chexflow demo --quick`` in a fresh workdir, cold and warm ``PREFECT_HOME``.
3. Time to the first training step of each command: the MLflow timestamp of the run's
   first ``train_loss_step`` metric (logged after step 1) minus the command's start;
   the plain script prints its own.
4. Where the time before the first step goes: one more warm sweep under
   ``bench.startup_probe`` (first call of the start-up functions, timed by an import hook)
   and ``python -X importtime`` (imports before the first step, by top-level package).
5. Threads (``--threads``): the command with its automatic settings
   (``chexflow.runtime``) against ``--set train.threads=1`` and ``=2``, in rotating order.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import figure, finish_document, jsonable, paired_ratio, start_document, stats

MODULE = "bench.bench_commands"
RATIO_TARGET = 1.3
FIRST_STEP_TARGET_S = 10.0
STEP_METRIC = "train_loss_step"  # chexflow.tracking.BatchedMetricLogger, logged after a step
OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # what the CLI sets too: a loaded machine can take longer than Prefect's default 20 s
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
_MIGRATE_HOME = """
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer()
server.start()
server.stop()
"""


def start_offline(benchmark: str, module: str, argv: Sequence[str]) -> dict[str, Any]:
    """The result document of a whole-command benchmark, with this process (and the
    commands it starts) offline: ``OFFLINE_ENV`` where the user has not set it."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    return start_document(benchmark, module, argv)


def base_env(**extra: str) -> dict[str, str]:
    """A user's environment: offline, no Prefect server or MLflow URI, this repo importable.

    Thread variables are left as they are: the command chooses its own settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI")
    }
    env.update(OFFLINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_process(
    command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> tuple[float, float, float]:
    """Run a whole command: (its start as epoch seconds, its wall seconds, the CPU seconds of
    it and every process it waited for, such as the Prefect API). Raises on failure.

    CPU seconds do not grow when other work shares the cores (wall seconds do)."""
    started = time.time()
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}):\n{tail}")
    return started, seconds, cpu


def first_step_s(workdir: Path, started: float) -> float | None:
    """Seconds from the command's start to its first logged training step (MLflow SQLite)."""
    db = workdir / "mlflow.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as con:
        (first,) = con.execute(
            "SELECT MIN(timestamp) FROM metrics WHERE key = ?", (STEP_METRIC,)
        ).fetchone()
    return None if first is None else round(first / 1000 - started, 3)


def plain_first_step_s(log: Path, started: float) -> float | None:
    """The plain script prints ``first training step at <epoch seconds>``."""
    found = re.findall(r"first training step at ([0-9.]+)", log.read_text())
    return round(float(found[-1]) - started, 3) if found else None


class Runner:
    """Fresh workdirs and logs under ``tmp``; each run returns its figures."""

    def __init__(self, tmp: Path, data: Path, overrides: list[str], fraction: str) -> None:
        self.tmp, self.data, self.fraction = tmp, data, fraction
        self.settings = [x for item in overrides for x in ("--set", item)]
        self.chexflow = [str(Path(sys.executable).parent / "chexflow")]
        self.count = 0
        self.warm_home = tmp / "warm-prefect-home"
        self.before: Path | None = None

    def checkout_before(self, ref: str) -> str:
        """The project at git ``ref`` (``git archive``), to run its CLI as "before"."""
        self.before = self.tmp / "before"
        self.before.mkdir()
        archive = subprocess.run(["git", "archive", ref], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(self.before)], input=archive.stdout, check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", ref], capture_output=True, text=True, check=True
        )
        return commit.stdout.strip()

    def _cli(self, before: bool) -> tuple[list[str], dict[str, str], Path | None]:
        """The command line, environment additions and directory of the CLI now or before
        (run from its own checkout, which ``python -c`` puts first on ``sys.path``)."""
        if not before:
            return self.chexflow, {}, None
        assert self.before is not None
        code = "import sys; from flows.cli import main; sys.argv[0] = 'chexflow'; main()"
        return [sys.executable, "-c", code], {"PYTHONPATH": str(self.before)}, self.before

    def _next(self, name: str) -> tuple[Path, Path]:
        self.count += 1
        return self.tmp / f"{name}-{self.count}", self.tmp / f"{name}-{self.count}.log"

    def migrate_warm_home(self) -> None:
        """Create and migrate the used ``PREFECT_HOME`` the warm runs share."""
        done = subprocess.run(
            [sys.executable, "-c", _MIGRATE_HOME],
            env=base_env(PREFECT_HOME=str(self.warm_home)),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrating the Prefect home failed: {done.stderr[-2000:]}")

    def _home_env(self, warm: bool) -> dict[str, str]:
        # cold: the CLI's default, a new home inside the new workdir
        return base_env(PREFECT_HOME=str(self.warm_home)) if warm else base_env()

    def sweep(self, warm: bool, extra: Sequence[str] = (), before: bool = False) -> dict:
        name = ("before-" if before else "") + ("sweep-warm" if warm else "sweep-cold")
        work, log = self._next(name)
        cli, env, cwd = self._cli(before)
        command = [*cli, "sweep", "--data", str(self.data)]
        command += ["--fractions", self.fraction, "--workdir", str(work), *self.settings, *extra]
        started, seconds, cpu = run_process(command, {**self._home_env(warm), **env}, log, cwd)
        return {
            "s": round(seconds, 3),
            "cpu_s": round(cpu, 3),
            "first_step_s": first_step_s(work, started),
        }

    def plain(self) -> dict[str, Any]:
        work, log = self._next("plain")
        command = [sys.executable, "-m", "bench.plain_sweep", "--data", str(self.data)]
        command += ["--fractions", self.fraction, "--workdir", str(work), *self.settings]
        started, seconds, cpu = run_process(command, base_env(), log)
        return {
            "s": round(seconds, 3),
            "cpu_s": round(cpu, 3),
            "first_step_s": plain_first_step_s(log, started),
        }

    def demo(self, warm: bool) -> dict[str, Any]:
        work, log = self._next("demo-warm" if warm else "demo-cold")
        command = [*self.chexflow, "demo", "--quick", "--workdir", str(work)]
        started, seconds, cpu = run_process(command, self._home_env(warm), log)
        return {
            "s": round(seconds, 3),
            "cpu_s": round(cpu, 3),
            "first_step_s": first_step_s(work, started),
        }

    def probe(self) -> dict[str, Any]:
        """One warm sweep under the start-up probe and ``-X importtime``."""
        work, log = self._next("probe")
        marks_file = self.tmp / f"marks-{self.count}.json"
        command = [sys.executable, "-X", "importtime", "-m", "bench.startup_probe"]
        command += [str(marks_file), "sweep", "--data", str(self.data)]
        command += ["--fractions", self.fraction, "--workdir", str(work), *self.settings]
        started, seconds, cpu = run_process(command, self._home_env(True), log)
        marks = json.loads(marks_file.read_text())
        return {
            "s": round(seconds, 3),
            "cpu_s": round(cpu, 3),
            "first_step_s": first_step_s(work, started),
            "phases": startup_phases(marks, started, seconds),
            "imports_before_first_step": import_breakdown(log.read_text()),
        }


# (phase, from mark, to mark); a mark is "label" (its start) or "label:end"
SWEEP_PHASES: list[tuple[str, str, str]] = [
    ("Python start", "process", "probe"),
    ("import the CLI (typer, chexflow.config)", "probe", "import flows.cli:end"),
    ("config and input checks", "import flows.cli:end", "flows.embedded.start_temporary_api"),
    (
        "start the API thread, import the flows (Prefect, torch, timm, MLflow)",
        "flows.embedded.start_temporary_api",
        "api_wait",
    ),
    ("wait for the Prefect API", "api_wait", "api_wait:end"),
    ("Prefect: sweep flow run starts", "api_wait:end", "chexflow.tracking.make_tracker"),
    (
        "MLflow set-up, sweep run, finetune subflow starts",
        "chexflow.tracking.make_tracker",
        "chexflow.pipeline.prepare_data",
    ),
    (
        "data: split and fraction",
        "chexflow.pipeline.prepare_data",
        "chexflow.pipeline.prepare_data:end",
    ),
    (
        "MLflow finetune run, train task starts",
        "chexflow.pipeline.prepare_data:end",
        "chexflow.pipeline.train_model",
    ),
    (
        "load images, create the model",
        "chexflow.pipeline.train_model",
        "chexflow.train.fit",
    ),
    ("fit set-up", "chexflow.train.fit", "chexflow.train.TrainStep.__call__"),
    (
        "first step",
        "chexflow.train.TrainStep.__call__",
        "chexflow.train.TrainStep.__call__:end",
    ),
    ("rest of the work", "chexflow.train.TrainStep.__call__:end", "command returned"),
    ("exit handlers (stop the Prefect API)", "command returned", "exit handlers done"),
    ("interpreter shutdown", "exit handlers done", "process end"),
]


def startup_phases(probe: dict[str, Any], started: float, seconds: float) -> list[dict[str, Any]]:
    """Seconds of each ``SWEEP_PHASES`` phase, from the probe's marks (epoch seconds)."""
    at: dict[str, float] = {
        "process": started,
        "probe": probe["probe_started"],
        "process end": started + seconds,
    }
    for label, times in probe["marks"].items():
        at[label] = times[0]
        if len(times) > 1:
            at[f"{label}:end"] = times[1]
    phases = []
    for name, first, last in SWEEP_PHASES:
        if first in at and last in at:
            phases.append(
                {
                    "phase": name,
                    "s": round(at[last] - at[first], 3),
                    "ends_at_s": round(at[last] - started, 3),
                }
            )
    return phases


def import_breakdown(stderr: str, top: int = 10) -> dict[str, Any]:
    """Seconds of ``-X importtime`` imports before the first step, by top-level package
    (and ``prefect.server`` apart from the rest of Prefect).

    Each module's own ("self") time goes to its package, so the packages partition the
    import time (a package's figure leaves out what it imports of others)."""
    by_package: dict[str, float] = {}
    for line in stderr.splitlines():
        if line.startswith("PROBE first-step"):
            break
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| (.*)$", line)
        if match:
            name = match.group(2).strip()
            # Prefect's server modules apart from its client: the client imports them in
            # the command's process to start the temporary API
            package = "prefect.server" if name.startswith("prefect.server") else name.split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1e6
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
    shown = {k: round(v, 3) for k, v in ranked[:top]}
    shown["other"] = round(sum(v for _, v in ranked[top:]), 3)
    return {"total_s": round(sum(by_package.values()), 3), "by_package_s": shown}


def rotate(measures: list[tuple[str, Callable[[], dict[str, Any]]]], repeats: int) -> dict:
    """``repeats`` rounds of every measure, the order rotated each round."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in measures}
    for i in range(repeats):
        shift = i % len(measures)
        for name, measure in measures[shift:] + measures[:shift]:
            out[name].append(measure())
            print(f"[commands] round {i + 1} {name}: {out[name][-1]}", flush=True)
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [r["first_step_s"] for r in runs if r.get("first_step_s") is not None]
    return {
        "s": stats([r["s"] for r in runs], 3),
        "cpu_s": stats([r["cpu_s"] for r in runs], 3),
        "first_step_s": stats(steps, 3) if steps else None,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fraction", default="0.5")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of plain/warm/cold")
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--demo-repeats", type=int, default=2, help="warm demo runs")
    parser.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads-repeats", type=int, default=2)
    parser.add_argument("--threads-pinned", default="1,2", help="pinned train.threads values")
    parser.add_argument(
        "--before", default="", help="git ref whose CLI joins the rounds as 'before'"
    )
    parser.add_argument("--before-homes", default="warm,cold", help="its PREFECT_HOME kinds")
    parser.add_argument("--out", type=Path, default=Path("bench/results/commands.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    doc = start_offline("commands", MODULE, argv)
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
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chexflow-bench-commands-") as name:
        tmp = Path(name)
        from chexflow.data.synthetic import write_synthetic

        data = write_synthetic(tmp / "data", args.patients, args.image_size, 0, progress=False)
        runner = Runner(tmp, data, overrides, args.fraction)
        # The user cache (the Prefect home template of flows.prefect_home) starts empty.
        os.environ["XDG_CACHE_HOME"] = str(tmp / "user-cache")
        runner.migrate_warm_home()
        # Untimed: warms the file cache (site-packages, the dataset) for every variant
        # alike, and leaves the Prefect home template that later new workdirs copy.
        runner.sweep(False)
        measures: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("plain", runner.plain),
            ("sweep_warm", lambda: runner.sweep(True)),
            ("sweep_cold", lambda: runner.sweep(False)),
        ]
        before_homes = [h for h in args.before_homes.split(",") if h] if args.before else []
        if args.before:
            results["before_commit"] = runner.checkout_before(args.before)
            for home in before_homes:
                warm = home == "warm"
                measures.append(
                    (f"before_{home}", lambda warm=warm: runner.sweep(warm, before=True))
                )
        rounds = rotate(measures, args.repeats)
        plain_s = [r["s"] for r in rounds["plain"]]
        results["sweep"] = {
            "plain": summary(rounds["plain"]),
            "warm": summary(rounds["sweep_warm"]),
            "cold": summary(rounds["sweep_cold"]),
            "ratio_warm_to_plain": paired_ratio([r["s"] for r in rounds["sweep_warm"]], plain_s),
            "ratio_cold_to_plain": paired_ratio([r["s"] for r in rounds["sweep_cold"]], plain_s),
            "cpu_ratio_warm_to_plain": paired_ratio(
                [r["cpu_s"] for r in rounds["sweep_warm"]], [r["cpu_s"] for r in rounds["plain"]]
            ),
            "cpu_ratio_cold_to_plain": paired_ratio(
                [r["cpu_s"] for r in rounds["sweep_cold"]], [r["cpu_s"] for r in rounds["plain"]]
            ),
            "overhead_warm_s": round(
                statistics.median(
                    w["s"] - p["s"]
                    for w, p in zip(rounds["sweep_warm"], rounds["plain"], strict=True)
                ),
                3,
            ),
            "runs": rounds,
        }
        if args.before:
            for home in before_homes:
                before = rounds[f"before_{home}"]
                results["sweep"][f"before_{home}"] = summary(before)
                results["sweep"][f"ratio_before_{home}_to_plain"] = paired_ratio(
                    [r["s"] for r in before], plain_s
                )
                results["sweep"][f"cpu_ratio_before_{home}_to_plain"] = paired_ratio(
                    [r["cpu_s"] for r in before], [r["cpu_s"] for r in rounds["plain"]]
                )
        _save_partial(doc, results, args.out)
        if args.probe:
            results["startup"] = runner.probe()
            _save_partial(doc, results, args.out)
        if args.demo:
            cold = runner.demo(False)
            warm = [runner.demo(True) for _ in range(args.demo_repeats)]
            results["demo_quick"] = {"cold": cold, "warm": summary(warm), "warm_runs": warm}
            _save_partial(doc, results, args.out)
        if args.threads:
            variants: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("automatic", lambda: runner.sweep(True))
            ]
            for n in (n for n in args.threads_pinned.split(",") if n):
                pinned = ["--set", f"train.threads={int(n)}"]
                variants.append((n, lambda pinned=pinned: runner.sweep(True, pinned)))
            threads = rotate(variants, args.threads_repeats)
            results["threads"] = {k: summary(v) for k, v in threads.items()}
            results["threads"]["runs"] = threads
    doc["settings"] = {
        "patients": args.patients,
        "fraction": args.fraction,
        "seeds": "0",
        "config_overrides": overrides,
        "repeats": args.repeats,
        "demo_repeats": args.demo_repeats if args.demo else 0,
        "threads_repeats": args.threads_repeats if args.threads else 0,
        "usable_cores": len(os.sched_getaffinity(0)),
        "warmup": "one untimed command in a new workdir (file cache, the Prefect home "
        "template in a fresh XDG_CACHE_HOME); the warm PREFECT_HOME migrated first",
        "pairing": "rounds of plain, warm and cold command in rotating order",
        "before": args.before or None,
        "before_homes": args.before_homes if args.before else None,
    }
    doc["results"] = results
    doc["figures"] = command_figures(results)
    finish_document(doc, args.out)
    return doc


def _save_partial(doc: dict[str, Any], results: dict[str, Any], out: Path) -> None:
    """Write what is measured so far (``partial: true``), so a run stopped later keeps it."""
    partial = {**doc, "results": results, "figures": command_figures(results), "partial": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(jsonable(partial), indent=2, allow_nan=False) + "\n")


def command_figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    sweep = results["sweep"]
    ratio = sweep["ratio_warm_to_plain"]["median"]
    figures = [
        figure(
            "`chexflow sweep` / `python -m bench.plain_sweep`, whole processes, warm PREFECT_HOME",
            ratio,
            "ratio",
            f"<= {RATIO_TARGET}",
            ratio <= RATIO_TARGET,
        ),
        figure(
            "same, cold PREFECT_HOME (new workdir, the CLI's default)",
            sweep["ratio_cold_to_plain"]["median"],
            "ratio",
        ),
        figure(
            "same in CPU seconds (immune to other load): warm / cold PREFECT_HOME",
            f"{sweep['cpu_ratio_warm_to_plain']['median']:.3f} / "
            f"{sweep['cpu_ratio_cold_to_plain']['median']:.3f}",
            "ratio",
        ),
        figure(
            "command / plain / command cold: start to exit",
            f"{sweep['warm']['s']['median']:.1f} / {sweep['plain']['s']['median']:.1f} / "
            f"{sweep['cold']['s']['median']:.1f}",
            "s",
        ),
    ]
    for home in ("warm", "cold"):
        if f"before_{home}" not in sweep:
            continue
        figures.append(
            figure(
                f"same, before ({results.get('before_commit')}), {home} PREFECT_HOME: "
                "wall (CPU seconds)",
                f"{sweep[f'ratio_before_{home}_to_plain']['median']:.3f} "
                f"({sweep[f'cpu_ratio_before_{home}_to_plain']['median']:.3f})",
                "ratio",
            )
        )
    if "before_warm" in sweep:
        before_step = (sweep["before_warm"]["first_step_s"] or {}).get("median")
        if before_step is not None:
            figures.append(figure("before: start to first training step, warm", before_step, "s"))
    warm_step = (sweep["warm"]["first_step_s"] or {}).get("median")
    if warm_step is not None:
        plain_step = (sweep["plain"]["first_step_s"] or {}).get("median")
        cold_step = (sweep["cold"]["first_step_s"] or {}).get("median")
        figures.append(
            figure(
                "`chexflow sweep`: start to first training step, warm PREFECT_HOME",
                warm_step,
                "s",
                f"<= {FIRST_STEP_TARGET_S:g} s (idle machine)",
                warm_step <= FIRST_STEP_TARGET_S,
            )
        )
        figures.append(
            figure(
                "start to first training step: plain script / command cold",
                f"{plain_step if plain_step is not None else float('nan'):.1f} / "
                f"{cold_step if cold_step is not None else float('nan'):.1f}",
                "s",
            )
        )
    demo = results.get("demo_quick")
    if demo:
        figures.append(
            figure(
                "`chexflow demo --quick`: start to exit, cold / warm PREFECT_HOME",
                f"{demo['cold']['s']:.1f} / {demo['warm']['s']['median']:.1f}",
                "s",
            )
        )
        step = (demo["warm"]["first_step_s"] or {}).get("median")
        figures.append(
            figure(
                "`chexflow demo --quick`: start to first training step, cold / warm",
                f"{demo['cold']['first_step_s'] or float('nan'):.1f} / "
                f"{step if step is not None else float('nan'):.1f}",
                "s",
            )
        )
    threads = results.get("threads")
    if threads:
        kinds = [k for k in threads if k != "runs"]
        figures.append(
            figure(
                f"`chexflow sweep` with train.threads {' / '.join(kinds)}: start to exit",
                " / ".join(f"{threads[k]['s']['median']:.1f}" for k in kinds),
                "s",
            )
        )
    return figures


if __name__ == "__main__":
    main()
