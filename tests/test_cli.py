"""The command line: contracts, exit codes and one-line errors (in-process, no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_data_summary_json_counts_the_dataset(tiny_dataset: Path) -> None:
    result = invoke("data", "summary", "--data", str(tiny_dataset), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["schema"] == "chexflow.data-summary/1"
    train = pd.read_csv(tiny_dataset / "train.csv")
    patients = train["Path"].str.extract(r"(patient\d+)")[0]
    assert summary["splits"]["train"]["images"] == len(train)
    assert summary["splits"]["train"]["patients"] == patients.nunique()
    holdout = summary["holdout"]
    parts = [holdout[part]["patients"] for part in ("eval", "val", "pool")]
    assert sum(parts) == patients.nunique(), "the three parts partition the patients"
    frontal = train[train["Frontal/Lateral"] == "Frontal"]  # labels count the filtered views
    edema = summary["labels"]["train"]["Edema"]
    assert edema["positive"] == int((frontal["Edema"] == 1).sum())
    assert edema["uncertain"] == int((frontal["Edema"] == -1).sum())
    assert [f["fraction"] for f in summary["fractions"]] == [0.01, 0.1]


def test_data_summary_table(tiny_dataset: Path) -> None:
    result = invoke("data", "summary", "--data", str(tiny_dataset))
    assert result.exit_code == 0, result.output
    assert "Edema" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["finetune", "--data", "/nonexistent", "--fraction", "0.1"], "--data"),
        (["finetune", "--data", ".", "--fraction", "1.5"], "(0, 1]"),
        (["finetune", "--data", ".", "--fraction", "0"], "(0, 1]"),
        (["sweep", "--data", ".", "--fractions", "0.1,0.1"], "repeated"),
        (["sweep", "--data", ".", "--fractions", "0.1,abc"], "--fractions"),
        (["sweep", "--data", ".", "--fractions", "0.1,2"], "(0, 1]"),
        (["sweep", "--data", ".", "--seeds", "0,0"], "repeated"),
        (["sweep", "--data", ".", "--dispatch", "cloud"], "--dispatch"),
        (["sweep", "--data", ".", "--set", "train.epochs=0"], "train.epochs"),
        (["sweep", "--data", ".", "--set", "nope.key=1"], "nope"),
        (["sweep", "--data", ".", "--config", "/nonexistent.yaml"], "does not exist"),
        (["compare"], "exactly one"),
        (["compare", "--sweep", "a", "--runs", "b"], "exactly one"),
        (["data", "summary", "--data", "/nonexistent"], "/nonexistent"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_synth_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    result = invoke("synth", str(tmp_path), "--patients", "10", "--image-size", "32")
    assert result.exit_code == 2
    assert (tmp_path / "x").read_text() == "keep me"


def test_synth_writes_a_dataset_the_summary_reads(tmp_path: Path) -> None:
    out = tmp_path / "CheXpert-v1.0-small"
    result = invoke("synth", str(out), "--patients", "30", "--image-size", "32")
    assert result.exit_code == 0, result.output
    assert (out / "train.csv").is_file() and (out / "valid.csv").is_file()


@pytest.mark.parametrize("fractions", ["2", "0", "0.1,nan", "0.1,0.1"])
def test_data_summary_refuses_fractions_outside_0_1(tiny_dataset: Path, fractions: str) -> None:
    # `--fractions 2` printed "fraction 2.0 is outside (0, 1]" in the table and exited 0.
    result = invoke("data", "summary", "--data", str(tiny_dataset), "--fractions", fractions)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "fractions" in lines[0], result.output


def test_synth_draws_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "data"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("chexflow")), "synth", str(out), "--patients", "12",
         "--image-size", "16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "synthetic images" not in done.stderr  # a bar: 72 updates in a redirected demo.err


def test_version_names_the_stack_it_runs_on() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.split() == [
        "chexflow", version("chexflow"), "torch", version("torch"), "timm", version("timm"),
        "prefect", version("prefect"), "mlflow", version("mlflow"),
    ]  # fmt: skip


@pytest.mark.parametrize("command", ["finetune", "sweep", "compare", "demo"])
def test_a_prefect_server_that_does_not_answer_is_refused_at_the_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dataset: Path, command: str
) -> None:
    # Before: 438 lines of retries ending "Failed to reach API", exit 1 after 20 s, and a
    # workdir with an MLflow database left behind (a new-user trial).
    url = "http://127.0.0.1:9/api"  # the discard port: nothing listens
    monkeypatch.setenv("PREFECT_API_URL", url)
    work = tmp_path / "work"
    args = {
        "finetune": ["--data", str(tiny_dataset), "--fraction", "0.5"],
        "sweep": ["--data", str(tiny_dataset), "--fractions", "0.5"],
        "compare": ["--runs", "a,b"],
        "demo": ["--quick"],
    }[command]
    result = runner.invoke(app, [command, *args, "--workdir", str(work)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: no Prefect server answers at PREFECT_API_URL={url}: start it (chexflow up) "
        "or unset PREFECT_API_URL to run against a temporary local API"
    ]
    assert not work.exists()


def test_dispatch_to_deployments_without_a_server_is_refused_at_the_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: 42 s, 566 lines of tracebacks ending in ObjectNotFound, exit 1, a failed
    # sweep run and a workdir left behind.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    work = tmp_path / "work"
    result = runner.invoke(
        app, ["sweep", "--data", str(data), "--dispatch", "deployment", "--workdir", str(work)]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --dispatch deployment needs a Prefect server with the deployments: "
        "PREFECT_API_URL is not set (start one with `chexflow up`, then `chexflow deploy`)"
    ]
    assert not work.exists()
