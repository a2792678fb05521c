"""Run the benchmark suite and write bench/results/*.json and docs/BENCHMARKS.md.

    python -m bench.run_all                 # the default suite, ~25 min on 2 cores (make bench)
    python -m bench.run_all --large         # + resnet18 128 px, the demo's sweep, t-SNE 50k, 100k
    python -m bench.run_all --only training,tracking
    python -m bench.run_all --report-only   # rewrite docs/BENCHMARKS.md from the JSON files

Each benchmark runs in its own process (fresh imports, its own Prefect/MLflow settings);
its output goes to ``bench/results/logs/<name>.log`` and its headline figures to stdout.
A benchmark that fails is reported as failed in the table; the others still run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import RESULTS_DIR
from bench.report import write_report

DOC = Path("docs/BENCHMARKS.md")


@dataclass(frozen=True)
class Bench:
    """One benchmark command of the suite."""

    name: str
    module: str
    args: list[str] = field(default_factory=list)


def suite(large: bool) -> list[Bench]:
    """The default suite; ``large`` adds the big sizes (docs/BENCHMARKS.md, "Sizes")."""
    benches = [
        Bench("training", "bench.bench_training"),
        Bench("tracking", "bench.bench_tracking", ["--steps", "20"]),
        Bench("orchestration", "bench.bench_orchestration", [] if large else ["--no-cli"]),
        Bench("analysis", "bench.bench_analysis"),
        Bench("scaling", "bench.bench_scaling", ["--large"] if large else []),
        Bench("gpu", "bench.bench_gpu", ["--quick"]),
        Bench(
            "commands",
            "bench.bench_commands",
            [] if large else ["--repeats", "2", "--demo-repeats", "1", "--threads-repeats", "1"],
        ),
        Bench("demo", "bench.bench_demo"),
        Bench("overlap", "bench.bench_overlap", [] if large else ["--repeats", "1"]),
    ]
    if large:
        resnet18 = ["--model", "resnet18", "--image-size", "128", "--patients", "800"]
        demo = ["--demo", "--repeats", "2", "--before-repeats", "1", "--start-repeats", "1"]
        benches += [
            Bench(
                "training_resnet18",
                "bench.bench_training",
                [*resnet18, "--out", f"{RESULTS_DIR}/training_resnet18.json"],
            ),
            Bench(
                "orchestration_demo",
                "bench.bench_orchestration",
                [*demo, "--no-cli", "--out", f"{RESULTS_DIR}/orchestration_demo.json"],
            ),
            Bench(
                "analysis_large",
                "bench.bench_analysis",
                ["--sizes", "", "--large", "--out", f"{RESULTS_DIR}/analysis_100k.json"],
            ),
        ]
    return benches


def run_one(bench: Bench, logs: Path) -> tuple[bool, float]:
    """Run one benchmark in a subprocess; stream its figure lines; return (ok, seconds)."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{bench.name}.log"
    command = [sys.executable, "-m", bench.module, *bench.args]
    print(f"== {bench.name}: {' '.join(command[1:])}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if line.startswith(f"[{bench.name.split('_')[0]}]"):
                print("   " + line.rstrip(), flush=True)
        code = process.wait()
    seconds = time.perf_counter() - start
    status = "ok" if code == 0 else f"FAILED (exit {code}; see {log})"
    print(f"   {bench.name}: {status} in {seconds:.0f} s", flush=True)
    return code == 0, seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="add the large sizes")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the doc")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    runtimes: dict[str, float] = {}
    failed: list[str] = []
    if not args.report_only:
        started = time.perf_counter()
        for bench in suite(args.large):
            if (only and bench.name not in only) or bench.name in skip:
                continue
            ok, seconds = run_one(bench, RESULTS_DIR / "logs")
            runtimes[bench.name] = seconds
            if not ok:
                failed.append(bench.name)
        total = time.perf_counter() - started
        if not (only or skip):  # partial runs keep the per-benchmark times only
            runtimes["total with --large" if args.large else "total"] = total
        print(f"== suite: {total / 60:.1f} min", flush=True)
    write_report(RESULTS_DIR, args.doc, runtimes, failed)
    print(f"== wrote {args.doc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
