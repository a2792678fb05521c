"""Bad input is refused in one line, before anything is half-written to MLflow.

The rows of docs/RELIABILITY.md that earlier tests did not cover: model/input mismatches
through the CLI and the flows, an evaluation class without images, a corrupt JPEG met in
the middle of a flow, and comparisons over runs that cannot be compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, set_args
from mlflow import MlflowClient
from typer.testing import CliRunner

from chexflow import pipeline
from chexflow.config import load_config
from chexflow.errors import ChexflowError, ConfigError, DataError
from chexflow.preflight import check_run_inputs
from chexflow.tracking import default_tracking_uri, make_tracker
from flows import temporary_api
from flows.cli import app

runner = CliRunner()
CHEXFLOW = str(Path(sys.executable).parent / "chexflow")


def _runs(workdir: Path) -> list:
    """Every MLflow run in the workdir's store (none when the store was never created)."""
    if not (workdir / "mlflow.db").exists():
        return []
    client = MlflowClient(default_tracking_uri(workdir))
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


# --- the CLI refuses before any flow or MLflow run starts -----------------------------------


@pytest.mark.parametrize(
    ("config_text", "overrides", "expected"),
    [
        ("train: {epochs: [", [], "malformed YAML"),
        ("trian: {epochs: 3}", [], "trian"),
        ("", ["train.epochs=three"], "train.epochs"),
        ("", ["data.holdout_fraction=0.7"], "data.holdout_fraction"),
        ("", ["data.label_policy={Edema: maybe}"], "data.label_policy"),
        ("", ["model.name=resnet_does_not_exist"], "unknown timm model"),
        ("", ["model.name=test_convnext", "data.image_size=16"], "does not fit"),
        ("", ["model.name=test_vit3", "data.image_size=32"], "does not fit"),
        ("", ["model.init_checkpoint=/nonexistent/weights.pt"], "does not exist"),
    ],
)
@pytest.mark.parametrize("command", ["finetune", "sweep"])
def test_the_cli_refuses_bad_config_in_one_line_and_starts_nothing(
    tiny_dataset: Path,
    tmp_path: Path,
    command: str,
    config_text: str,
    overrides: list[str],
    expected: str,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    workdir = tmp_path / "work"
    selector = ["--fraction", "0.5"] if command == "finetune" else ["--fractions", "0.5"]
    args = [command, "--data", str(tiny_dataset), *selector, "--config", str(config)]
    result = runner.invoke(app, [*args, "--workdir", str(workdir), *set_args(*overrides)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert "Traceback" not in result.output
    assert not (workdir / "mlflow.db").exists() and not (workdir / "prefect").exists()


@pytest.mark.parametrize(
    ("overrides", "error", "expected"),
    [
        (["model.name=resnet_does_not_exist"], ConfigError, "unknown timm model"),
        (["model.name=test_convnext", "data.image_size=16"], ConfigError, "does not fit"),
    ],
)
@pytest.mark.parametrize("flow_name", ["finetune", "sweep"])
def test_flows_refuse_a_bad_model_before_their_mlflow_run(
    prefect_api, tiny_dataset: Path, tmp_path: Path, flow_name, overrides, error, expected
) -> None:
    # Deployments call the flows directly (the UI form, a schedule): they check on their own.
    from flows.finetune import finetune
    from flows.sweep import sweep

    config = load_config(None, [*TINY, *overrides])
    workdir = tmp_path / "work"
    with pytest.raises(error, match=expected) as raised:
        if flow_name == "finetune":
            finetune(str(tiny_dataset), 0.5, 0, config, str(workdir))
        else:
            sweep(str(tiny_dataset), [0.5], [0], config, str(workdir))
    assert "\n" not in str(raised.value)
    assert _runs(workdir) == []


# --- data problems a flow meets ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 patients, none positive for Consolidation: the evaluation hold-out has none.

    (Written into the CSV rather than hoped for from the generator's draws, which change
    when its calibration does.)
    """
    import pandas as pd

    from chexflow.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("small") / "CheXpert-v1.0-small"
    write_synthetic(root, patients=60, image_size=32, seed=0, progress=False)
    table = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    table.loc[table["Consolidation"] == "1.0", "Consolidation"] = "0.0"
    table.to_csv(root / "train.csv", index=False)
    return root


def test_an_evaluation_class_without_images_is_refused(small_dataset: Path, tmp_path) -> None:
    config = load_config(None, TINY)
    with pytest.raises(DataError, match=r"no positive Consolidation image") as raised:
        pipeline.prepare_data(small_dataset, config.data, 0.5, 0, tmp_path)
    assert "data.holdout_fraction" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.slow
def test_the_flow_refuses_an_empty_evaluation_class_before_its_mlflow_run(
    prefect_api, small_dataset: Path, tmp_path: Path
) -> None:
    from flows.finetune import finetune

    with pytest.raises(DataError, match="no positive Consolidation"):
        finetune(str(small_dataset), 0.5, 0, load_config(None, TINY), str(tmp_path / "w"))
    assert _runs(tmp_path / "w") == []


@pytest.mark.slow
def test_a_corrupt_jpeg_is_refused_by_the_flow_before_its_run(
    prefect_api, tiny_dataset: Path, tmp_path: Path
) -> None:
    # Before: the flow created its MLflow run, trained, then failed it at the corrupt image
    # (a FAILED run). A flow started directly (a deployment, the UI) now checks every image
    # at its entry, like the CLI.
    from flows.finetune import finetune

    data = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(tiny_dataset, data)
    config = load_config(None, TINY)
    prepared = pipeline.prepare_data(data, config.data, 0.5, 0, tmp_path / "scratch")
    victim = prepared.frame("train")["path"].iloc[3]
    (data / victim).write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 50)
    workdir = tmp_path / "work"
    with pytest.raises(DataError, match="unreadable") as raised:
        finetune(str(data), 0.5, 0, config, str(workdir))
    assert victim in str(raised.value) and "cannot decode" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert _runs(workdir) == [], "no MLflow run, not even a FAILED one"


# --- comparisons over runs that cannot be compared --------------------------------------------


@pytest.fixture(scope="module")
def two_eval_sets(prefect_api, tiny_dataset: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    """Two finished fine-tunes whose evaluation sets differ (another data.split_seed)."""
    from flows.finetune import finetune

    workdir = tmp_path_factory.mktemp("compare")
    ids = [
        finetune(
            str(tiny_dataset), 0.5, 0, load_config(None, [*TINY, f"data.split_seed={s}"]),
            str(workdir),
        ).run_id
        for s in (0, 1)
    ]  # fmt: skip
    return workdir, ids


@pytest.mark.slow
def test_compare_refuses_runs_with_different_evaluation_sets(two_eval_sets) -> None:
    from flows.compare import compare

    workdir, ids = two_eval_sets
    with pytest.raises(ChexflowError, match="different evaluation sets"):
        compare(run_ids=ids, config=load_config(None, TINY), workdir=str(workdir))
    kinds = [r.data.tags.get("chexflow.kind") for r in _runs(workdir)]
    assert "comparison" not in kinds, "no comparison run was started"


@pytest.mark.slow
def test_compare_refuses_unfinished_and_foreign_runs(two_eval_sets) -> None:
    from flows.compare import compare

    workdir, ids = two_eval_sets
    tracker = make_tracker("chexpert-label-fractions", workdir)
    unfinished = tracker.start_run("finetune", "still-running", {})
    sweep = tracker.start_run("sweep", "a-sweep", {})
    tracker.finish(sweep)
    for other, expected in ((unfinished, "did not finish"), (sweep, "not chexflow fine-tune")):
        with pytest.raises(ChexflowError, match=expected):
            compare(run_ids=[ids[0], other], config=load_config(None, TINY), workdir=str(workdir))
    tracker.finish(unfinished, failure="test: closed")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"sweep_id": "0123456789abcdef"}, "has no finished fine-tune runs"),
        ({"aliases": ["frac-99pct-seed7"], "model_name": "chexpert-finetune"}, "has no alias"),
        ({"run_ids": ["0123456789abcdef"]}, "does not exist"),
    ],
)
def test_compare_refuses_what_mlflow_does_not_hold(two_eval_sets, selector, expected) -> None:
    from flows.compare import compare

    workdir, _ids = two_eval_sets
    with pytest.raises(ChexflowError, match=expected):
        compare(**selector, config=load_config(None, TINY), workdir=str(workdir))


@pytest.mark.slow
def test_compare_over_runs_that_do_not_exist_exits_2_without_a_traceback(
    two_eval_sets, prefect_api, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    workdir, _ids = two_eval_sets
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [CHEXFLOW, "compare", "--runs", "0123456789abcdef,fedcba9876543210",
         "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: MLflow run 0123456789abcdef does not exist in {default_tracking_uri(workdir)}"
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert "Retry" not in result.stdout + result.stderr, "a user error is not retried"


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--data", "{d}", "--fraction", "0.1", "--config", "{d}"],
        ["finetune", "--data", "{d}", "--fraction", "0.1", "--set", "model.init_checkpoint={d}"],
        ["demo", "--labels-from", "{d}"],
        ["synth", "{d}/out", "--labels-from", "{d}"],
    ],
)
def test_a_folder_where_a_file_belongs_is_called_a_folder(tmp_path: Path, args: list) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    work = ["--workdir", str(tmp_path / "work")] if args[0] != "synth" else []
    result = runner.invoke(app, [a.format(d=folder) for a in args] + work)
    assert result.exit_code == 2
    assert "is a directory, not a file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "work").exists()


def test_compare_in_a_workdir_without_runs_refuses_before_anything_exists(tmp_path: Path) -> None:
    # Before: the command started the Prefect API first (40-57 s on the loaded machine), then
    # failed in the flow, leaving mlflow.db and prefect/ behind in a fresh workdir.
    workdir = tmp_path / "work"
    result = runner.invoke(app, ["compare", "--runs", "abc,def", "--workdir", str(workdir)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: no MLflow runs in {workdir} ({workdir / 'mlflow.db'} does not exist): pass "
        "the --workdir of your sweep, or set MLFLOW_TRACKING_URI"
    )
    assert not workdir.exists()


# --- issue 16: one check of everything a run reads, before anything exists ---------------------


def _copy(dataset: Path, tmp_path: Path) -> Path:
    data = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(dataset, data)
    return data


def test_preflight_counts_every_image_of_the_runs(tiny_dataset: Path, tmp_path: Path) -> None:
    config = load_config(None, TINY)
    inputs = check_run_inputs(config, tiny_dataset, [0.25, 0.5], [0, 1])
    rows = {}
    for fraction, seed in [(0.25, 0), (0.5, 0), (0.25, 1), (0.5, 1)]:
        prepared = pipeline.prepare_data(tiny_dataset, config.data, fraction, seed, tmp_path)
        for name in ("train", "val", "eval"):
            rows.update(dict.fromkeys(prepared.frame(name)["path"]))
    assert inputs.n_images == len(rows)
    assert inputs.init is None and inputs.tags() == {}
    assert set(inputs.seconds) == {"config", "model", "data", "images"}


@pytest.mark.parametrize("part", ["eval", "val", "train"])
def test_preflight_refuses_a_missing_image_of_any_part(
    tiny_dataset: Path, tmp_path: Path, part: str
) -> None:
    # Before: a missing evaluation image failed the run after training, at evaluation.
    data = _copy(tiny_dataset, tmp_path)
    config = load_config(None, TINY)
    prepared = pipeline.prepare_data(data, config.data, 0.5, 0, tmp_path / "scratch")
    victim = prepared.frame(part)["path"].iloc[-1]
    (data / victim).unlink()
    with pytest.raises(DataError) as raised:
        check_run_inputs(config, data, [0.5], [0])
    assert str(raised.value) == (
        f"1 of {preflight_images(config, data)} images are missing or unreadable; first: "
        f"{data / victim} (file not found)"
    )


def preflight_images(config, data: Path) -> int:
    from chexflow.preflight import run_images

    return len(run_images(data, config, [0.5], [0])[1])


def test_preflight_refuses_an_undecodable_image(tiny_dataset: Path, tmp_path: Path) -> None:
    data = _copy(tiny_dataset, tmp_path)
    config = load_config(None, TINY)
    prepared = pipeline.prepare_data(data, config.data, 0.5, 0, tmp_path / "scratch")
    victim = prepared.frame("train")["path"].iloc[3]
    (data / victim).write_bytes((data / victim).read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError, match=rf"{victim} \(cannot decode"):
        check_run_inputs(config, data, [0.5], [0])


@pytest.mark.parametrize(
    ("fractions", "seeds", "error", "expected"),
    [
        ([0.5], [-1], ConfigError, "seeds must be whole numbers in [0, 4294967295]: got [-1]"),
        ([0.5, 0.5], [0], ConfigError, "fractions are repeated"),
        ([1e-6], [0], DataError, "less than one patient"),
    ],
)
def test_preflight_refuses_fractions_and_seeds_that_cannot_run(
    tiny_dataset: Path, fractions, seeds, error, expected
) -> None:
    with pytest.raises(error) as raised:
        check_run_inputs(load_config(None, TINY), tiny_dataset, fractions, seeds)
    assert expected in str(raised.value)


def test_preflight_revalidates_a_config_built_without_validation(tiny_dataset: Path) -> None:
    # A flow parameter can arrive as a dict or an unvalidated model.
    config = load_config(None, TINY)
    bad = config.model_copy(update={"analysis": config.analysis.model_construct(perplexities=[0])})
    with pytest.raises(ConfigError, match=r"^config: analysis\.perplexities\.0: Input should be"):
        check_run_inputs(bad, tiny_dataset, [0.5], [0])
    raw = config.model_dump(mode="json")
    raw["train"]["epochs"] = True
    with pytest.raises(ConfigError, match=r"^config: train\.epochs: Input should be a valid int"):
        check_run_inputs(raw, tiny_dataset, [0.5], [0])


def test_preflight_refuses_a_pickle_bearing_checkpoint_unread(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, path)
    config = load_config(None, [*TINY, f"model.init_checkpoint={path}"])
    with pytest.raises(ChexflowError, match="refused to load"):
        check_run_inputs(config, tiny_dataset, [0.5], [0])
    assert not marker.exists()


def test_preflight_checks_checkpoint_coverage_and_reports_it(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    import timm
    from safetensors.torch import save_file

    state = timm.create_model("resnet10t", in_chans=1, num_classes=5).state_dict()
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("layer4")}, str(path))
    base = [*TINY, "model.name=resnet10t", f"model.init_checkpoint={path}"]
    with pytest.raises(ConfigError, match="backbone tensors of resnet10t") as raised:
        check_run_inputs(load_config(None, base), tiny_dataset, [0.5], [0])
    assert "model.init_strict=false" in str(raised.value)
    inputs = check_run_inputs(
        load_config(None, [*base, "model.init_strict=false"]), tiny_dataset, [0.5], [0]
    )
    missing = sum(k.startswith("layer4") and "num_batches" not in k for k in state)
    assert inputs.tags()["chexflow.init_missing"] == str(missing) != "0"
    assert inputs.tags()["chexflow.init_unexpected"] == "0"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


# --- issue 16: degenerate numbers end in one line -----------------------------------------------


def _labelled(n: int) -> tuple[list[tuple[str, ...]], list[str | None]]:
    from chexflow.data.labels import EVAL_CLASSES

    exclusive = [EVAL_CLASSES[i % 3] for i in range(n)]
    return [(c,) for c in exclusive], exclusive


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda rng: np.ones((60, 8), np.float32), "all 60 rows are the same point"),
        (lambda rng: np.zeros((60, 8), np.float32), "all 60 rows are the same point"),
        (
            lambda rng: (1.0 + 1e-9 * rng.standard_normal((60, 8))).astype(np.float64),
            "all 60 rows are the same point",
        ),
        (
            lambda rng: np.where(np.arange(60)[:, None] == 7, np.nan, rng.random((60, 8))),
            "1 of 60 rows hold NaN or infinite values (first at row 7)",
        ),
    ],
)
def test_collapsed_embeddings_are_refused_not_scored_as_perfect(make, expected) -> None:
    # Before: Davies-Bouldin of a collapsed space was 0.0 (the best score), then scipy raised.
    from sklearn.metrics import davies_bouldin_score

    from chexflow.analysis.run_analysis import analyse_embeddings
    from chexflow.config import AnalysisConfig

    features = make(np.random.default_rng(0))
    positives, exclusive = _labelled(len(features))
    if np.isfinite(features).all():
        assert davies_bouldin_score(features, exclusive) == 0.0  # what was reported
    with pytest.raises(DataError) as raised:
        analyse_embeddings(features, positives, exclusive, AnalysisConfig(bootstrap=0))
    assert str(raised.value).startswith("embeddings collapsed: ")
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_a_spread_embedding_is_not_called_collapsed() -> None:
    from chexflow.numerics import collapse_problem

    rng = np.random.default_rng(0)
    assert collapse_problem(rng.standard_normal((50, 4))) is None
    assert collapse_problem(1e3 + 0.1 * rng.standard_normal((50, 4))) is None  # 1e-4 relative
    assert collapse_problem(np.ones((1, 4))) is None  # shapes are the caller's business


# --- issue 16 §1, the whole kind: every bad input above, through the CLI -------------------------


@pytest.fixture(scope="module")
def bad_inputs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files the CLI cases read: datasets with one image missing or undecodable, and
    init checkpoints that do not fit (incomplete, pickle-bearing)."""
    import timm
    import torch
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("bad-inputs")
    config = load_config(None, TINY)
    prepared = pipeline.prepare_data(tiny_dataset, config.data, 0.5, 0, base / "scratch")
    paths: dict[str, Path] = {}
    for name, part, damage in (
        ("missing_eval", "eval", "unlink"),
        ("corrupt_train", "train", "cut"),
    ):
        data = base / name / "CheXpert-v1.0-small"
        shutil.copytree(tiny_dataset, data)
        victim = data / prepared.frame(part)["path"].iloc[0]
        if damage == "unlink":
            victim.unlink()
        else:
            victim.write_bytes(victim.read_bytes()[:200])
        paths[name] = data
    state = timm.create_model("test_resnet", in_chans=1, num_classes=5).state_dict()
    paths["partial"] = base / "partial.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("layer2")}, paths["partial"])
    paths["pickle"] = base / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(base / "pwned")}, paths["pickle"])
    return paths


# (case id, dataset, extra CLI arguments, config file text, --set overrides, expected text)
CLI_CASES = [
    ("perplexity-0", None, [], "", ["analysis.perplexities=[0]"], "analysis.perplexities"),
    ("perplexity-neg", None, [], "", ["analysis.perplexities=[-5]"], "analysis.perplexities"),
    ("perplexity-nan", None, [], "", ["analysis.perplexities=[.nan]"], "analysis.perplexities"),
    ("tsne-seed-neg", None, [], "", ["analysis.tsne_seeds=[-1]"], "analysis.tsne_seeds"),
    ("bootstrap-0", None, [], "", ["train.bootstrap=0"], "train.bootstrap"),
    ("epochs-bool", None, [], "", ["train.epochs=true"], "train.epochs"),
    ("repeated-key", None, [], "train: {epochs: 1}\ntrain: {epochs: 2}\n", [], "repeated"),
    ("model-name-slash", None, [], "", ["tracking.registered_model=radiology/chexpert"],
     "tracking.registered_model"),
    ("seed-neg", None, ["--seed", "-1"], "", [], "seeds must be whole numbers"),
    ("partial-checkpoint", None, [], "", ["model.init_checkpoint={partial}"], "backbone tensors"),
    ("pickle-checkpoint", None, [], "", ["model.init_checkpoint={pickle}"], "refused to load"),
    ("missing-eval-image", "missing_eval", [], "", [], "(file not found)"),
    ("corrupt-train-image", "corrupt_train", [], "", [], "(cannot decode"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("dataset", "extra", "config_text", "overrides", "expected"),
    [case[1:] for case in CLI_CASES],
    ids=[case[0] for case in CLI_CASES],
)
@pytest.mark.parametrize("command", ["finetune", "sweep"])
def test_every_bad_input_exits_2_in_one_line_before_any_run_exists(
    tiny_dataset: Path,
    bad_inputs: dict[str, Path],
    tmp_path: Path,
    command: str,
    dataset: str | None,
    extra: list[str],
    config_text: str,
    overrides: list[str],
    expected: str,
) -> None:
    # Before: a missing evaluation image, an incomplete or pickle-bearing init_checkpoint or
    # a negative seed passed the CLI; the run failed after training, or left a FAILED run.
    data = bad_inputs[dataset] if dataset else tiny_dataset
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    workdir = tmp_path / "work"
    selector = ["--fraction", "0.5"] if command == "finetune" else ["--fractions", "0.5"]
    if command == "sweep":
        extra = ["--seeds" if arg == "--seed" else arg for arg in extra]
    sets = [item.format(**{k: str(v) for k, v in bad_inputs.items()}) for item in overrides]
    args = [command, "--data", str(data), *selector, *extra, "--config", str(config)]
    result = runner.invoke(app, [*args, "--workdir", str(workdir), *set_args(*sets)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert result.stdout == ""
    assert not (workdir / "mlflow.db").exists() and _runs(workdir) == [], "no MLflow run"
    assert not (workdir / "prefect").exists(), "no Prefect API, so no Prefect flow run"
    assert temporary_api.pids() == [], "the API process started for it is stopped"
    assert not (bad_inputs["pickle"].parent / "pwned").exists()
