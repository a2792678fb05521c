"""The device's idle share in a sweep, with the analysis of run k overlapped with the
training of run k+1 (``chexflow sweep --overlap``, the default) and without (``--no-overlap``).

    python -m bench.bench_overlap                       # ~6 min on 2 idle cores
    python -m bench.bench_overlap --repeats 1 --patients 400

Each run is a whole ``chexflow sweep`` (several fractions, the 0% reference and the
comparison, as users run it) in a fresh workdir on one synthetic dataset, the two modes
alternating. The device is busy while a fine-tune trains or embeds its evaluation set
(the ``train`` and ``evaluate-and-embed`` task runs, which hold
``flows.device.device_turn``); the idle share is the part of the sweep flow run's wall
time (Prefect's record in the workdir's ``PREFECT_HOME``) covered by neither. On a
CPU-only machine "device" means the training work: the figure is the share a GPU would
wait for the CPU, and the wall times show what the overlap costs or saves when both
share the same cores.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_commands import base_env, run_process, start_offline
from bench.common import add_sweep_workload, figure, finish_document, paired_ratio, stats

MODULE = "bench.bench_overlap"
DEVICE_TASKS = ("train", "evaluate-and-embed")


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def union_s(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` intervals, in their unit."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def device_idle(workdir: Path) -> dict[str, Any]:
    """The sweep flow run's wall seconds, the seconds some device task ran, and the idle share,
    from the Prefect database of the command's ``PREFECT_HOME`` (``<workdir>/prefect``)."""
    with sqlite3.connect(workdir / "prefect" / "prefect.db") as con:
        ((start, end),) = con.execute(
            "SELECT start_time, end_time FROM flow_run WHERE flow_id IN "
            "(SELECT id FROM flow WHERE name = 'sweep')"
        ).fetchall()
        tasks = con.execute(
            "SELECT name, start_time, end_time FROM task_run WHERE start_time IS NOT NULL"
        ).fetchall()
    device = [
        (_seconds(s), _seconds(e))
        for name, s, e in tasks
        if e is not None and name.rsplit("-", 1)[0] in DEVICE_TASKS
    ]
    wall = _seconds(end) - _seconds(start)
    busy = union_s(device)
    return {
        "sweep_s": round(wall, 3),
        "device_busy_s": round(busy, 3),
        "idle_share": round(1 - busy / wall, 4),
        "device_tasks": len(device),
    }


def run_sweep(tmp: Path, data: Path, index: int, overlap: bool, args: argparse.Namespace) -> dict:
    work, log = tmp / f"sweep-{index}", tmp / f"sweep-{index}.log"
    sets = [
        f"data.image_size={args.image_size}",
        f"model.name={args.model}",
        f"train.epochs={args.epochs}",
        "train.batch_size=32",
        *args.overrides,
    ]
    command = [str(Path(sys.executable).parent / "chexflow"), "sweep", "--data", str(data)]
    command += ["--fractions", args.fractions, "--workdir", str(work)]
    command += ["--overlap" if overlap else "--no-overlap"]
    command += [x for item in sets for x in ("--set", item)]
    _, seconds, cpu = run_process(command, base_env(), log)
    return {"overlap": overlap, "s": round(seconds, 3), "cpu_s": round(cpu, 3), **device_idle(work)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_workload(parser, fractions="0.25,0.5,1.0")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of overlap / series")
    parser.add_argument("--out", type=Path, default=Path("bench/results/overlap.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    doc = start_offline("overlap", MODULE, argv)
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="chexflow-bench-overlap-") as name:
        tmp = Path(name)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "user-cache")
        from chexflow.data.synthetic import write_synthetic

        data = write_synthetic(tmp / "data", args.patients, args.image_size, 0, progress=False)
        run_sweep(tmp, data, 0, True, args)  # untimed: file cache, database templates
        index = 1
        for round_ in range(args.repeats):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for overlap in order:
                runs[overlap].append(run_sweep(tmp, data, index, overlap, args))
                index += 1
    on, off = runs[True], runs[False]
    idle_on = stats([r["idle_share"] for r in on])["median"]
    idle_off = stats([r["idle_share"] for r in off])["median"]
    ratio = paired_ratio([r["s"] for r in on], [r["s"] for r in off])
    cpu_ratio = paired_ratio([r["cpu_s"] for r in on], [r["cpu_s"] for r in off])
    doc["settings"] = {
        "patients": args.patients,
        "fractions": args.fractions,
        "model": args.model,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "overrides": args.overrides,
        "repeats": args.repeats,
        "pairing": "rounds of overlap and series in alternating order, fresh workdirs",
        "usable_cores": len(os.sched_getaffinity(0)),
    }
    doc["results"] = {
        "overlap": {
            "s": stats([r["s"] for r in on], 3),
            "idle_share": stats([r["idle_share"] for r in on]),
        },
        "series": {
            "s": stats([r["s"] for r in off], 3),
            "idle_share": stats([r["idle_share"] for r in off]),
        },
        "wall_ratio_overlap_to_series": ratio,
        "cpu_ratio_overlap_to_series": cpu_ratio,
        "runs": on + off,
    }
    doc["figures"] = [
        figure(
            "sweep's device-idle share (no training or embedding runs): series → overlapped",
            f"{idle_off:.1%} → {idle_on:.1%}",
            "",
            target="cut",
            met=idle_on < idle_off,
        ),
        figure(
            "`chexflow sweep` start to exit, overlapped / series (same cores)",
            f"{ratio['median']:.3f} (pairs {', '.join(f'{x:.3f}' for x in ratio['pairs'])})",
            "ratio",
        ),
        figure(
            "same in CPU seconds (command and its children)",
            f"{cpu_ratio['median']:.3f} (pairs "
            f"{', '.join(f'{x:.3f}' for x in cpu_ratio['pairs'])})",
            "ratio",
        ),
        figure(
            "idle share of each run, series / overlapped",
            " / ".join(", ".join(f"{r['idle_share']:.1%}" for r in group) for group in (off, on)),
            "",
        ),
    ]
    return finish_document(doc, args.out)


if __name__ == "__main__":
    main()
