"""Tasks of one fine-tuning run. They pass records of paths and digests, never tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from chexflow import pipeline
from chexflow.config import AnalysisConfig, DataConfig, ModelConfig, TrainConfig


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(
    data_dir: str, data_cfg: DataConfig, fraction: float, seed: int, workdir: str
) -> pipeline.PreparedData:
    """Validate the dataset, carve the fixed evaluation split, draw the fraction."""
    return pipeline.prepare_data(Path(data_dir), data_cfg, fraction, seed, Path(workdir))


def _training_key(_context: Any, params: dict[str, Any]) -> str:
    fp = pipeline.training_fingerprint(
        params["prepared"], params["model_cfg"], params["train_cfg"], params["prepared"].seed
    )
    return f"chexflow-train-{fp}"


@task(
    name="train",
    cache_key_fn=_training_key,
    persist_result=True,
    result_serializer="json",
)
def train(
    prepared: pipeline.PreparedData,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    workdir: str,
    callbacks: list[Any] | None = None,
) -> pipeline.TrainedModel:
    """Fine-tune, resuming from the last complete checkpoint of the same configuration."""
    return pipeline.train_model(
        prepared, data_cfg, model_cfg, train_cfg, Path(workdir), callbacks=callbacks or ()
    )


@task(name="evaluate-and-embed", cache_policy=NO_CACHE)
def evaluate_and_embed(
    prepared: pipeline.PreparedData,
    trained: pipeline.TrainedModel | None,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    workdir: str,
) -> pipeline.Evaluated:
    """Per-class AUROC with bootstrap CIs, and the evaluation embeddings."""
    return pipeline.evaluate_and_embed(
        prepared, trained, data_cfg, model_cfg, train_cfg, Path(workdir)
    )


@task(name="analyse-embeddings", cache_policy=NO_CACHE)
def analyse(
    evaluated: pipeline.Evaluated, analysis_cfg: AnalysisConfig, title: str, seed: int
) -> pipeline.Analysed:
    """t-SNE/PCA maps, cluster metrics and plots of the evaluation embeddings."""
    out = Path(evaluated.output_dir) / "analysis"
    return pipeline.analyse_run(Path(evaluated.embeddings_dir), analysis_cfg, out, title, seed)
