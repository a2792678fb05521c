"""The MLflow run record: names, key forms and the write -> read round trip (no MLflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chexflow import records
from chexflow.comparison import load_run_record
from chexflow.data.labels import EVAL_CLASSES


@pytest.mark.parametrize(
    ("fraction", "seed", "alias"),
    [
        (0.01, 0, "frac-1pct-seed0"),
        (0.1, 3, "frac-10pct-seed3"),
        (0.005, 2, "frac-0_5pct-seed2"),
        (1.0, 0, "frac-100pct-seed0"),
        (0.0125, 1, "frac-1_25pct-seed1"),
    ],
)
def test_model_alias_format(fraction: float, seed: int, alias: str) -> None:
    assert records.model_alias(fraction, seed) == alias
    assert "." not in alias


def test_the_fraction_text_forms() -> None:
    assert records.fraction_text(0.01) == "0.01"
    assert records.fraction_text(0) == "0.0"
    assert float(records.fraction_text(0.3)) == 0.3
    assert records.fraction_label(0.005) == "0.5pct"
    assert records.fraction_percent(0.25) == "25%"
    assert records.finetune_run_name(0.1, 2) == "finetune-10pct-seed2"
    assert records.sweep_run_name([0.01, 0.1]) == "sweep-0.01-0.1"


def test_metric_keys_of_an_auroc_table() -> None:
    auroc = {
        "mean": 0.7,
        "mean_ci_low": 0.6,
        "mean_ci_high": 0.8,
        "classes": {
            "Pleural Effusion": {"auroc": 0.9, "ci_low": 0.85, "ci_high": 0.95},
            "Edema": {"auroc": None, "ci_low": None, "ci_high": None},
        },
    }
    assert records.evaluation_metrics(auroc) == {
        "val_auroc_mean": 0.7,
        "val_auroc_mean_ci_low": 0.6,
        "val_auroc_mean_ci_high": 0.8,
        "val_auroc/pleural_effusion": 0.9,
        "val_auroc_ci_low/pleural_effusion": 0.85,
        "val_auroc_ci_high/pleural_effusion": 0.95,
        "val_auroc/edema": None,
        "val_auroc_ci_low/edema": None,
        "val_auroc_ci_high/edema": None,
    }


def test_epoch_metrics_leave_out_the_epoch_and_non_numbers() -> None:
    row = {"epoch": 3, "train_loss": 0.5, "val_auroc/edema": 0.7, "note": "x"}
    assert records.epoch_metrics(row) == {"epoch/train_loss": 0.5, "epoch/val_auroc/edema": 0.7}


def test_finetune_tags_round_trip() -> None:
    written = records.finetune_tags(
        0.05, 3, "resnet18", "digest", "prefect-id", "fp", "sweep-id", ["a", "b"]
    )
    written |= records.training_outcome_tags(reused=False, resumed_from_epoch=2)
    written |= {records.KIND_TAG: "finetune", records.PARENT_TAG: "sweep-id"}
    read = records.read_run_tags(written)
    assert read == records.RunTags(
        kind="finetune",
        fraction=0.05,
        seed=3,
        model="resnet18",
        eval_digest="digest",
        sweep_id="sweep-id",
        parent_run_id="sweep-id",
        training_fingerprint="fp",
        previous_attempts=("a", "b"),
        reused_training=False,
        failure=None,
    )
    assert read.is_compared
    assert written[records.RESUMED_FROM_EPOCH_TAG] == "2"


def test_a_reused_training_records_no_resumed_epoch() -> None:
    assert records.training_outcome_tags(True, 4) == {records.REUSED_TRAINING_TAG: "true"}


def test_reference_sweep_and_comparison_tags_read_back() -> None:
    reference = records.read_run_tags(
        {records.KIND_TAG: "reference", **records.reference_tags("m", "d", "p")}
    )
    assert (reference.fraction, reference.seed, reference.sweep_id) == (0.0, 0, None)
    assert reference.is_compared
    sweep = records.sweep_tags("p", [0.01, 0.1], [0, 1])
    assert sweep[records.FRACTIONS_TAG] == "0.01,0.1" and sweep[records.SEEDS_TAG] == "0,1"
    assert not records.read_run_tags({records.KIND_TAG: "sweep", **sweep}).is_compared
    comparison = records.comparison_tags("p", ["r1", "r2"], "s")
    assert comparison[records.COMPARED_RUNS_TAG] == "r1,r2"
    assert comparison[records.SWEEP_TAG] == "s"
    assert records.read_run_tags({}) == records.RunTags(
        None, None, None, None, None, None, None, None, (), None, None
    )


def test_params_hold_the_fraction_and_sizes() -> None:
    params = records.embedding_params({"model.name": "m"}, 0.05, 1, "fp", 10, 4, 7, "tfp")
    assert params == {
        "model.name": "m",
        "fraction": "0.05",
        "seed": "1",
        "data_fingerprint": "fp",
        "n_train_images": "10",
        "n_train_patients": "4",
        "n_eval_images": "7",
        "training_fingerprint": "tfp",
    }
    assert "training_fingerprint" not in records.embedding_params({}, 0, 0, "fp", 0, 0, 7)


def test_the_comparison_reads_what_the_tasks_write(tmp_path, tiny_dataset) -> None:
    """A run directory laid out with the record's artifact paths loads with its tags."""
    from helpers import TINY

    from chexflow import pipeline
    from chexflow.config import load_config

    config = load_config(None, TINY)
    prepared = pipeline.prepare_data(tiny_dataset, config.data, 0.0, 0, tmp_path)
    evaluated = pipeline.evaluate_and_embed(
        prepared, None, config.data, config.model, config.train, tmp_path, progress=False
    )
    analysed = pipeline.analyse_run(
        tmp_path / evaluated.embeddings_dir, config.analysis, tmp_path / "a", "t", 0
    )
    from bench.plain_sweep import _as_run_directory

    directory = _as_run_directory(evaluated, analysed, tmp_path / "run")
    tags = {records.KIND_TAG: "reference", **records.reference_tags("m", "d", "p")}
    record = load_run_record("r", tags, directory)
    assert (record.fraction, record.seed, record.model, record.kind) == (0.0, 0, "m", "reference")
    assert record.is_reference
    written = json.loads((Path(evaluated.output_dir) / records.EVALUATION_FILE).read_text())
    assert record.auroc == written and set(written["classes"]) <= set(EVAL_CLASSES)
