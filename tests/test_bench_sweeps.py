"""The whole-sweep benchmarks (the full demo, the overlapped analysis) on tiny sizes, and
their accounting on constructed input (no timed asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bench import TINY_MODEL, check_document, run_bench

from bench.bench_demo import phases
from bench.bench_overlap import union_s


def test_union_counts_overlapping_device_time_once() -> None:
    assert union_s([]) == 0
    assert union_s([(0, 10), (5, 12), (20, 21)]) == pytest.approx(13)
    assert union_s([(3, 4), (0, 10)]) == pytest.approx(10)  # nested, any order


def test_demo_phases_follow_the_mlflow_runs() -> None:
    runs = [
        {"name": "sweep-0.01-0.1", "start_s": 60.0, "end_s": 300.0, "s": 240.0},
        {"name": "pretrain-simclr", "start_s": 61.0, "end_s": 80.0, "s": 19.0},
        {"name": "finetune-1pct-seed0", "start_s": 81.0, "end_s": 120.0, "s": 39.0},
    ]
    assert phases(runs, 303.0) == {
        "before the first MLflow run (imports, API, data, checks)": 61.0,
        "pretrain-simclr": 19.0,
        "finetune-1pct-seed0": 39.0,
        "after the last run (exit)": 3.0,
    }


@pytest.mark.slow
def test_overlap(tmp_path: Path) -> None:
    args = [*TINY_MODEL, "--patients", "160", "--epochs", "1", "--fractions", "0.25,0.5"]
    args += ["--repeats", "1", "--set", "train.bootstrap=20", "--set", "analysis.bootstrap=20"]
    doc = run_bench("bench_overlap", tmp_path / "o.json", *args)
    check_document(doc, "overlap")
    runs = doc["results"]["runs"]
    assert sorted(r["overlap"] for r in runs) == [False, True]
    for run in runs:
        # two fine-tunes (train + evaluate-and-embed each) and the reference's embedding
        assert run["device_tasks"] == 5
        assert 0 < run["device_busy_s"] < run["sweep_s"]
        assert 0 < run["idle_share"] < 1
    assert doc["figures"][0]["target"] == "cut"
