"""The pretraining step and flow: cache by content, strict loading, starting-point tags."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY
from PIL import Image

from chexflow import records
from chexflow.config import ChexflowConfig, ModelConfig, load_config
from chexflow.models import create_model, load_backbone_weights
from chexflow.pretrain_step import (
    load_cached,
    pretrain_key,
    pretrain_pool,
    run_pretraining,
    starting_point,
)

BRIEF = ["pretrain.epochs=1", "pretrain.max_images=48", "pretrain.batch_size=16"]


@pytest.fixture(scope="module")
def config() -> ChexflowConfig:
    return load_config(None, [*TINY, *BRIEF, "model.init_from_pretraining=true"])


@pytest.fixture()
def dataset(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A private copy: the tests edit image bytes."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "CheXpert-v1.0-small"))


def test_pool_is_the_training_pool_subset_and_the_key_follows_the_bytes(
    dataset: Path, config: ChexflowConfig
) -> None:
    pool = pretrain_pool(dataset, config.data, config.pretrain)
    assert len(pool) == 48 and pool["path"].is_unique
    from chexflow.data.chexpert import read_split
    from chexflow.data.splits import make_splits

    splits = make_splits(read_split(dataset, "train"), None, config.data)
    assert set(pool["path"]) <= set(splits.pool["path"])  # never evaluation or validation
    key = pretrain_key(dataset, pool, 32, "test_resnet", config.pretrain)
    assert key == pretrain_key(dataset, pool, 32, "test_resnet", config.pretrain)
    assert key != pretrain_key(dataset, pool, 32, "resnet10t", config.pretrain)
    assert key != pretrain_key(
        dataset, pool, 32, "test_resnet", config.pretrain.model_copy(update={"epochs": 2})
    )
    # the registered-model name does not change the weights, so not the key
    renamed = config.pretrain.model_copy(update={"registered_model": "other"})
    assert key == pretrain_key(dataset, pool, 32, "test_resnet", renamed)
    image = dataset / pool["path"].iloc[0]
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] ^= 1  # one pixel, one grey level
    Image.fromarray(pixels).save(image)
    assert key != pretrain_key(dataset, pool, 32, "test_resnet", config.pretrain)


def test_backbone_is_cached_loads_strictly_and_names_its_run(
    dataset: Path, config: ChexflowConfig, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    pool = pretrain_pool(dataset, config.data, config.pretrain)
    key = pretrain_key(dataset, pool, 32, "test_resnet", config.pretrain)
    assert load_cached(workdir, key) is None
    made = run_pretraining(
        dataset, pool, config.data, config.model, config.pretrain, workdir, key, run_id="abc123"
    )
    assert made.images == 48 and len(made.losses) == 1 and made.cpu_seconds > 0
    assert load_cached(workdir, key) == made
    tuned = create_model(ModelConfig(name="test_resnet"), num_classes=5)
    report = load_backbone_weights(tuned, made.checkpoint, strict=True)
    assert report.complete and report.backbone_missing == ()
    model_cfg = config.model.model_copy(update={"init_checkpoint": Path(made.checkpoint)})
    assert starting_point(model_cfg) == "pretrain:abc123"
    # a checkpoint without its record is named by its bytes; a changed file is not reused
    foreign = tmp_path / "foreign.safetensors"
    shutil.copy(made.checkpoint, foreign)
    named = starting_point(model_cfg.model_copy(update={"init_checkpoint": foreign}))
    assert named == f"checkpoint:{made.sha256[:12]}"
    with open(made.checkpoint, "ab") as handle:
        handle.write(b"\0")
    assert load_cached(workdir, key) is None


def test_starting_points_without_checkpoint() -> None:
    assert starting_point(ModelConfig(name="test_resnet")) == "scratch"
    hub = ModelConfig(name="resnet18", pretrained=True)
    assert starting_point(hub) == "hub:resnet18"
    tags = records.read_run_tags({records.INIT_TAG: "scratch"})
    assert tags.init == "scratch"


def test_train_augment_reaches_the_training_images(tiny_dataset: Path, tmp_path: Path) -> None:
    from chexflow.pipeline import build_dataset, prepare_data

    cfg = load_config(None, TINY)
    prepared = prepare_data(tiny_dataset, cfg.data, 0.5, 0, tmp_path)
    plain, _ = build_dataset(prepared, "train", ["Edema"], cfg.data, tmp_path)
    jittered, _ = build_dataset(prepared, "train", ["Edema"], cfg.data, tmp_path, augment=True)
    batch = np.arange(8)
    assert not torch.equal(plain[batch][0], jittered[batch][0])
    assert torch.equal(jittered[batch][0], jittered[batch][0])  # seeded by the batch


@pytest.mark.slow
def test_flow_reuses_and_the_sweep_tags_every_start(
    prefect_api, tiny_dataset: Path, config: ChexflowConfig, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from chexflow.tracking import default_tracking_uri
    from flows.pretrain import pretrain
    from flows.sweep import sweep

    workdir = str(tmp_path / "work")
    first = pretrain(str(tiny_dataset), config, workdir)
    again = pretrain(str(tiny_dataset), config, workdir)
    assert not first.reused and again.reused
    assert (again.run_id, again.checkpoint) == (first.run_id, first.checkpoint)
    client = MlflowClient(default_tracking_uri(Path(workdir)))
    run = client.get_run(first.run_id)
    assert run.data.tags[records.KIND_TAG] == "pretrain" and run.info.status == "FINISHED"
    assert "pretrain_loss" in run.data.metrics
    version = client.get_model_version("chexpert-pretrain", first.model_version)
    assert version.run_id == first.run_id
    swept = sweep(str(tiny_dataset), [0.5], [0], config, workdir)
    assert swept.pretraining is not None and swept.pretraining.run_id == first.run_id
    assert swept.pretraining.reused  # the sweep paid nothing for it
    runs = [r.run_id for r in swept.runs] + [swept.reference.run_id]
    for run_id in runs:
        tags = client.get_run(run_id).data.tags
        assert tags[records.INIT_TAG] == f"pretrain:{first.run_id}", run_id
    report = Path(swept.comparison.markdown).read_text()
    assert f"pretrain:{first.run_id}" in report
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    pretrain_runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{records.KIND_TAG}` = 'pretrain'"
    )
    assert len(pretrain_runs) == 1


def test_bench_augment_writes_its_figures(tmp_path: Path) -> None:
    from test_bench import check_document, run_bench

    doc = run_bench("bench_augment", tmp_path / "a.json", "--batch", "4", "--repeats", "1")
    check_document(doc, "augment")
    assert set(doc["results"]) >= {"s64", "s320", "pretrain_step_resnet10t_s64"}
    s64, s320 = doc["results"]["s64"], doc["results"]["s320"]
    assert s320["simclr_two_views_cpu_s_per_image"]["median"] > 0
    assert s64["gather_with_augment_cpu_s_per_image"]["median"] > 0


def test_cli_pretrain_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["pretrain", "--data", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "--data" in missing.output
    bad = runner.invoke(
        app, ["pretrain", "--data", str(tmp_path), "--set", "pretrain.max_images=1"]
    )
    assert bad.exit_code == 2 and "pretrain.max_images" in bad.output
