"""Each benchmark runs on a tiny size and writes a valid result document (no timed asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--model", "test_resnet", "--image-size", "32"]


def run_bench(module: str, out: Path, *args: str, timeout: float = 600) -> dict:
    """``python -m bench.<module> ... --out out`` in a fresh process; the JSON it wrote."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # In-process flows start a temporary API in a cold home: allow it what the CLI allows.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def check_document(doc: dict, benchmark: str) -> None:
    assert doc["benchmark"] == benchmark
    assert doc["command"].startswith(f"python -m bench.bench_{benchmark}")
    assert doc["date"]
    machine = doc["machine"]
    assert machine["cpu_model"] and machine["usable_cores"] >= 1
    assert {"torch", "numpy"} <= set(machine["versions"])
    assert len(doc["load_average"]["before"]) == 3
    assert len(doc["load_average"]["after"]) == 3
    if doc.get("skipped"):
        return
    assert doc["settings"] and doc["results"]
    assert doc["figures"]
    for fig in doc["figures"]:
        assert {"name", "value", "unit"} <= set(fig)
        if "target" in fig:
            assert isinstance(fig["met"], bool)


def test_training(tmp_path: Path) -> None:
    args = [*TINY_MODEL, "--patients", "120", "--batch-size", "8", "--steps", "2"]
    doc = run_bench("bench_training", tmp_path / "t.json", *args, "--warmup", "1", "--repeats", "2")
    check_document(doc, "training")
    ratio = doc["results"]["ratio_real_to_compute"]
    assert len(ratio["pairs"]) == 2 and ratio["median"] > 0
    assert len(doc["results"]["real_images_per_s"]["samples"]) == 2
    assert doc["settings"]["input_path"] == "float32 normalised in the loader, unpinned"
    other = doc["results"]["input_path"]  # the uint8 path, timed in the same rotation
    assert other["other"] == "uint8 unpinned, normalised on the device"
    assert len(other["ratio_other_to_used"]["pairs"]) == 2


def test_tracking_sqlite(tmp_path: Path) -> None:
    args = [*TINY_MODEL, "--patients", "120", "--batch-size", "8", "--steps", "3"]
    args += ["--repeats", "1", "--request-repeats", "2", "--no-server"]
    doc = run_bench("bench_tracking", tmp_path / "t.json", *args)
    check_document(doc, "tracking")
    share = doc["results"]["sqlite"]["direct_share_of_step_time"]["median"]
    assert 0 <= share < 1


def test_analysis(tmp_path: Path) -> None:
    doc = run_bench("bench_analysis", tmp_path / "a.json", "--sizes", "300", "--repeats", "1")
    check_document(doc, "analysis")
    (row,) = doc["results"]["tsne"]
    assert row["n"] == 300 and row["sklearn_over_opentsne"]["median"] > 0


def test_scaling(tmp_path: Path) -> None:
    args = ["--sizes", "300,600", "--model-sizes", "64,128", "--compare-n", "64"]
    args += ["--fractions", "0.5,1.0", "--patients", "120", "--repeats", "1", *TINY_MODEL]
    doc = run_bench("bench_scaling", tmp_path / "s.json", *args)
    check_document(doc, "scaling")
    assert set(doc["results"]) == {"evaluation", "analysis", "training_fraction"}
    assert doc["results"]["analysis"]["loglog_slope"]["total"] is not None


def test_gpu_without_cuda_is_skipped(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the skip path does not apply")
    doc = run_bench("bench_gpu", tmp_path / "g.json", "--quick")
    check_document(doc, "gpu")
    assert doc["skipped"] is True and "CUDA" in doc["reason"]


@pytest.mark.slow
def test_gpu_script_on_cpu(tmp_path: Path) -> None:
    args = [*TINY_MODEL, "--allow-cpu", "--batch-size", "8", "--patients", "120", "--epochs", "1"]
    args += ["--steps", "2", "--repeats", "1", "--workers", "0", "--timm-warmup", "1"]
    doc = run_bench("bench_gpu", tmp_path / "g.json", *args, "--timm-steps", "1")
    check_document(doc, "gpu")
    assert "ratio_real_loader" in doc["results"]["loops"]
    # On CPU the input path stays float32 (uint8 from pinned memory is CUDA's).
    assert doc["settings"]["input_path"] == "float32 normalised in the loader, unpinned"
    assert "ratio_real_loader_float32" in doc["results"]["loops"]


@pytest.mark.slow
def test_orchestration(tmp_path: Path) -> None:
    args = [*TINY_MODEL, "--patients", "240", "--epochs", "1", "--fractions", "0.25,0.5"]
    args += ["--repeats", "1", "--before-repeats", "0", "--start-repeats", "1", "--no-cli"]
    doc = run_bench("bench_orchestration", tmp_path / "o.json", *args)
    check_document(doc, "orchestration")
    steady = doc["results"]["steady_state"]
    assert steady["ratio_sweep_to_plain"]["median"] > 0
    assert len(steady["api_retries_per_sweep"]) == 1
    (breakdown,) = steady["sweep_breakdown"]
    assert breakdown["flow_runs"] == 5  # sweep, two fine-tunes, the reference, compare
    assert breakdown["task_runs"] > 20 and breakdown["mlflow_calls"] > 20
    assert 0 < breakdown["prefect_flow_engine_s"] < steady["sweep_s"]["median"]
    assert steady["compare_download"]["runs"] == 3  # two fractions and the reference
    one = doc["results"]["one_time"]
    assert one["api_start_cold_s"]["median"] > 0
    assert one["full_collection_objects"] > 100_000
    assert one["subflows_embedded_s"]["samples"] and one["subflows_prefect_default_s"]["samples"]


def test_report_renders_every_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.report import write_report

    results = tmp_path / "results"
    results.mkdir()
    run_bench("bench_analysis", results / "analysis.json", "--sizes", "200", "--repeats", "1")
    skipped = run_bench("bench_gpu", results / "gpu.json", "--quick")
    doc = tmp_path / "BENCHMARKS.md"
    write_report(results, doc, {"analysis": 1.0, "total": 2.0}, [])
    text = doc.read_text()
    assert "scikit-learn TSNE / openTSNE, n=200" in text
    assert "python -m bench.bench_analysis --sizes 200" in text
    assert "## What we optimised and why" in text
    if skipped.get("skipped"):
        assert "**Skipped:**" in text
    assert json.loads((results / "suite.json").read_text())["runtimes_s"]["total"] == 2.0


def test_one_pass_evaluation_equals_two_passes() -> None:
    """The optimisation bench_scaling measures keeps every number identical."""
    from chexflow.config import ModelConfig
    from chexflow.data.dataset import ChexpertImages, make_loader
    from chexflow.embed import extract_embeddings, predict_and_embed
    from chexflow.evaluation import predict
    from chexflow.models import create_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 32, 32), dtype=np.uint8)
    targets = (rng.random((40, 5)) < 0.3).astype(np.float32)
    loader = make_loader(ChexpertImages(images, targets, np.ones_like(targets)), 16, False, 0)
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="test_resnet"), 5)
    device = torch.device("cpu")
    probs, target, mask = predict(model, loader, device)
    features = extract_embeddings(model, loader, device, progress=False)
    one = predict_and_embed(model, loader, device, progress=False)
    for a, b in zip((probs, target, mask, features), one, strict=True):
        np.testing.assert_array_equal(a, b)


def test_command_breakdown_parsers() -> None:
    """The whole-command benchmark's phase and import accounting, on recorded input."""
    from bench.bench_commands import import_breakdown, startup_phases

    marks = {
        "probe_started": 100.5,
        "marks": {
            "import flows.cli": [100.6, 101.0],
            "flows.embedded.start_temporary_api": [102.0, 102.1],
            "api_wait": [105.0, 106.5],
            "chexflow.train.TrainStep.__call__": [110.0, 110.25],
        },
    }
    phases = {p["phase"]: p["s"] for p in startup_phases(marks, 100.0, 20.0)}
    assert phases["Python start"] == 0.5
    assert phases["import the CLI (typer, chexflow.config)"] == 0.5
    assert phases["wait for the Prefect API"] == 1.5
    assert phases["first step"] == 0.25
    assert "load images, create the model" not in phases  # its marks are missing
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:    500000 |        500000 |     numpy",
            "import time:   1500000 |       2000000 |   torch._C",
            "import time:    250000 |       2250000 | torch",
            "import time:    500000 |        500000 |   prefect.server",
            "import time:    250000 |        750000 | prefect",
            "PROBE first-step",
            "import time:   9000000 |       9000000 | sklearn",
        ]
    )
    imports = import_breakdown(stderr)
    assert imports["total_s"] == 3.0  # self times; lines after the first step left out
    assert imports["by_package_s"]["torch"] == 1.75  # without the numpy it imported
    assert imports["by_package_s"]["numpy"] == 0.5
    assert imports["by_package_s"]["prefect.server"] == 0.5
    assert imports["by_package_s"]["prefect"] == 0.25


@pytest.mark.slow
def test_commands(tmp_path: Path) -> None:
    # 161 training images: batch 24 leaves no batch of one (BatchNorm refuses it)
    args = [*TINY_MODEL, "--patients", "160", "--epochs", "1", "--fraction", "0.5"]
    args += ["--set", "train.batch_size=24"]
    args += ["--repeats", "1", "--no-demo", "--no-threads"]
    doc = run_bench("bench_commands", tmp_path / "c.json", *args, timeout=1200)
    check_document(doc, "commands")
    sweep = doc["results"]["sweep"]
    assert sweep["ratio_warm_to_plain"]["median"] > 0
    for key in ("plain", "warm", "cold"):  # each found its first training step
        assert 0 < sweep[key]["first_step_s"]["median"] < sweep[key]["s"]["median"]
    startup = doc["results"]["startup"]
    names = [p["phase"] for p in startup["phases"]]
    assert names[0] == "Python start" and "first step" in names
    assert "wait for the Prefect API" in names
    assert startup["imports_before_first_step"]["by_package_s"]["torch"] > 0
