"""What the MLflow UI shows: the experiment opens on its runs, the comparison run carries its
headline contrasts as metrics and its conclusion as the description; `chexflow ui` is lean.

Real MLflow stores (SQLite in a temporary directory, and a real `mlflow server`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from chexflow import records
from chexflow.config import ChexflowConfig
from chexflow.tracking import Tracker, default_tracking_uri

CONCLUSION = {
    "contrast": {"from": 0.05, "to": 0.25},
    "downstream": {"mean": {"delta": 0.0118, "ci_low": -0.0777, "ci_high": 0.0770}},
    "representation": {
        "silhouette": {"delta": -0.0239, "ci_low": -0.0694, "ci_high": 0.0255},
        "knn_accuracy": {"delta": -0.0263, "ci_low": None, "ci_high": None},
        "davies_bouldin": None,
    },
}
REPORT_MD = """# Label-fraction comparison

## Runs

| run | fraction |

## Conclusion

Headline contrast: 5% → 25%.

- **Downstream**: Mean AUROC shows no detectable change.

## Downstream effect: AUROC by fraction

Details.
"""


def _tracker(tmp_path: Path, name: str = "chexpert-label-fractions") -> Tracker:
    return Tracker(default_tracking_uri(tmp_path), name, (tmp_path / "mlartifacts").as_uri())


def test_new_experiment_opens_on_model_training_runs(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    experiment = tracker.client.get_experiment(tracker.experiment_id())
    assert experiment.tags[records.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_existing_experiment_without_a_kind_gets_one(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path, "made-elsewhere")
    experiment_id = tracker.client.create_experiment("made-elsewhere")
    assert records.EXPERIMENT_KIND_TAG not in tracker.client.get_experiment(experiment_id).tags
    assert tracker.experiment_id() == experiment_id
    tags = tracker.client.get_experiment(experiment_id).tags
    assert tags[records.EXPERIMENT_KIND_TAG] == records.EXPERIMENT_KIND


def test_contrast_metrics_leave_out_what_was_not_computed() -> None:
    metrics = records.contrast_metrics(CONCLUSION)
    assert metrics == {
        "contrast/auroc_mean": 0.0118,
        "contrast/auroc_mean_ci_low": -0.0777,
        "contrast/auroc_mean_ci_high": 0.0770,
        "contrast/silhouette": -0.0239,
        "contrast/silhouette_ci_low": -0.0694,
        "contrast/silhouette_ci_high": 0.0255,
        "contrast/knn_accuracy": -0.0263,
    }


def test_a_long_conclusion_is_cut_to_fit_the_tag() -> None:
    note = records.comparison_note("word " * 5000, "1", "abc", "/w/report.html")
    assert len(note) <= records.MAX_NOTE_LENGTH
    assert "continued in the report" in note and note.endswith("`/w/report.html`")


def test_comparison_run_has_contrasts_description_and_report_link(tmp_path: Path) -> None:
    from tasks.tracking import log_report

    report = tmp_path / "report"
    report.mkdir()
    (report / "comparison.json").write_text(json.dumps({"conclusion": CONCLUSION}))
    (report / "report.md").write_text(REPORT_MD)
    (report / "report.html").write_text("<html><body>report</body></html>")
    tracker = _tracker(tmp_path)
    run_id = tracker.start_run("comparison", "comparison-test", {})
    log_report.fn(tracker, run_id, str(report), ChexflowConfig())
    run = tracker.client.get_run(run_id)
    assert run.data.metrics == records.contrast_metrics(CONCLUSION)
    note = run.data.tags[records.NOTE_TAG]
    assert note.startswith("Headline contrast: 5% → 25%.")
    assert "Mean AUROC shows no detectable change" in note
    assert "Details." not in note and "## Runs" not in note  # the conclusion only
    experiment_id = tracker.experiment_id()
    link = f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/report/report.html"
    assert link in note and str(report / "report.html") in note
    listed = {f.path for f in tracker.client.list_artifacts(run_id, "report")}
    assert "report/report.html" in listed


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        assert process.poll() is None, "chexflow ui exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not healthy after {timeout_s} s")


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


@pytest.mark.slow
def test_chexflow_ui_serves_the_workdir_lean_on_loopback(tmp_path: Path) -> None:
    from deployments.stack.network import free_port

    tracker = _tracker(tmp_path)
    tracker.experiment_id()
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    chexflow = str(Path(sys.executable).parent / "chexflow")
    process = subprocess.Popen(
        [chexflow, "ui", "--workdir", str(tmp_path), "--port", str(port)],
        env=clean, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        took = _wait_healthy(url, process)
        body = json.dumps({"max_results": 10})
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/experiments/search", data=body.encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            names = {e["name"] for e in json.loads(response.read())["experiments"]}
        assert "chexpert-label-fractions" in names  # the workdir's own store
        pids = _tree(process.pid)
        assert len(pids) <= 4, f"{len(pids)} processes: not lean"
        with open(f"/proc/{process.pid}/environ", "rb") as env_file:
            environ = env_file.read().split(b"\0")
        print(f"\nchexflow ui healthy after {took:.1f} s; {len(pids)} processes")
    finally:
        os.killpg(process.pid, 15)
        output = process.communicate(timeout=30)[0]
    assert f"MLflow UI: {url}" in output, output
    # `chexflow ui` becomes the server (exec): its environment is the server's.
    assert b"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in environ
