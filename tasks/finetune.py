"""Tasks of one fine-tuning run. They pass records of paths and digests, never tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.serializers import JSONSerializer

from chexflow import checkpoints, pipeline
from chexflow.config import AnalysisConfig, ChexflowConfig, DataConfig, ModelConfig, TrainConfig
from chexflow.errors import ChexflowError

# What the train task's result_serializer="json" writes into its records.
_JSON_SERIALIZER = JSONSerializer().model_dump(mode="json")


# Prefect marks a cache hit only by the state's name (prefect.context does the same).
CACHED_STATE_NAME = "Cached"


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(
    data_dir: str, data_cfg: DataConfig, fraction: float, seed: int, workdir: str
) -> pipeline.PreparedData:
    """Validate the dataset, carve the fixed evaluation split, draw the fraction."""
    return pipeline.prepare_data(Path(data_dir), data_cfg, fraction, seed, Path(workdir))


def check_room(prepared: pipeline.PreparedData, data_cfg: DataConfig, workdir: str) -> None:
    """Refuse a workdir without room for this run's decoded-image cache (and the rest)."""
    n_images = prepared.n_train_images + prepared.n_val_images + prepared.n_eval_images
    pipeline.check_workdir(
        Path(workdir), data_cfg.cache_dir, pipeline.image_bytes(n_images, data_cfg.image_size)
    )


def _training_key(_context: Any, params: dict[str, Any]) -> str:
    fp = pipeline.training_fingerprint(
        params["prepared"], params["model_cfg"], params["train_cfg"], params["prepared"].seed
    )
    return f"chexflow-train-{fp}"


def check_training_record(
    storage: Path, prepared: pipeline.PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig
) -> None:
    """Refuse a training-cache record that the train task did not write, before Prefect reads it.

    Prefect deserialises a stored result with the serializer described inside the record:
    its type, its ``jsonlib`` and its ``object_decoder`` are names that Prefect imports and
    calls. A rewritten record ("pickle", ``jsonlib: pickle``, a decoder that runs a command)
    would run code when the cache is read, so a record is accepted only with exactly the
    JSON serializer the train task uses and a plain ``TrainedModel`` payload.

    Raises:
        ChexflowError: the record is anything else (the message says to delete it).
    """
    path = Path(storage) / _training_key(
        None, {"prepared": prepared, "model_cfg": model_cfg, "train_cfg": train_cfg}
    )
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_bytes())
        serializer = record["metadata"]["serializer"]
        payload = json.loads(record["result"])
        trusted = (
            serializer == _JSON_SERIALIZER
            and payload.get("__class__") == "chexflow.pipeline.TrainedModel"
            and not {"__class__", "__exc_type__"} & _nested_keys(payload["data"])
        )
        if trusted:
            pipeline.TrainedModel.model_validate(payload["data"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        trusted = False
    if not trusted:
        raise ChexflowError(
            f"training cache record {path} was not written by chexflow (it names another "
            "serializer or payload, which Prefect would import and run): delete the file"
        )


def _nested_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(_nested_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_nested_keys(v) for v in value))
    return set()


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
    resume: bool = True,
) -> pipeline.TrainedModel:
    """Fine-tune, resuming from the last complete checkpoint of the same configuration
    (``resume=False``: from scratch). The stored record's paths are relative to the workdir."""
    trained = pipeline.train_model(
        prepared,
        data_cfg,
        model_cfg,
        train_cfg,
        Path(workdir),
        callbacks=callbacks or (),
        resume=resume,
    )
    return trained.relative_to(Path(workdir))


def train_or_reuse(
    prepared: pipeline.PreparedData,
    config: ChexflowConfig,
    workdir: str,
    force: bool,
    callbacks: list[Any],
) -> tuple[pipeline.TrainedModel, bool]:
    """Train, or reuse a finished training of the same fingerprint: (model, reused).

    A cache record that chexflow did not write is refused before Prefect reads it; a
    cached record whose ``best.pt`` is missing or does not match the sha256 recorded
    beside it is not trusted: it retrains. ``force`` trains from scratch (no cache, no
    resume from ``last.pt``). Checkpoint paths come back resolved against ``workdir``.
    """
    storage = Path(workdir) / "prefect-results"
    check_training_record(storage, prepared, config.model, config.train)
    args = (prepared, config.data, config.model, config.train, workdir, callbacks)
    state = train.with_options(refresh_cache=force, result_storage=storage)(
        *args, resume=not force, return_state=True
    )
    trained = state.result().located(Path(workdir))
    problem = checkpoints.digest_problem(Path(trained.best_checkpoint))
    if problem is not None:
        get_run_logger().warning("%s; training again", problem)
        again = train.with_options(refresh_cache=True, result_storage=storage)(*args)
        return again.located(Path(workdir)), False
    return trained, state.name == CACHED_STATE_NAME


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
