"""Everything a run will read, checked before any MLflow run or Prefect flow run exists.

``check_run_inputs`` is what the entry points (the CLI commands and the flows, which
deployments call directly) run first: a bad config, a missing or undecodable image of the
training, validation or evaluation set, a label fraction that cannot be drawn, or an
``init_checkpoint`` that does not fit the model is refused with one line (a
``ChexflowError``) while nothing has been created yet. What it measures about the inputs
(image count, checkpoint coverage) comes back in ``RunInputs`` for the run to record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import ValidationError

from chexflow.config import ChexflowConfig, ModelConfig, check_fractions, check_seeds, describe
from chexflow.data.chexpert import find_dataset_root, read_split
from chexflow.data.dataset import check_image_files
from chexflow.data.fractions import sample_patients
from chexflow.data.splits import make_splits
from chexflow.errors import ConfigError, DataError
from chexflow.models import LoadReport, create_model, load_backbone_weights


@dataclass(frozen=True)
class RunInputs:
    """What the checks found, for the run to record.

    Attributes:
        config: the validated config (a copy when the input was a dict or needed coercion).
        dataset_root: the folder holding ``train.csv``.
        n_images: distinct images the run (every fraction × seed, validation and
            evaluation) reads; ``pipeline.image_bytes(n_images, size)`` sizes its cache.
        init: the ``init_checkpoint`` load report, None without a checkpoint.
        seconds: wall time of each check (``config``, ``model``, ``data``, ``images``).
    """

    config: ChexflowConfig
    dataset_root: Path
    n_images: int
    init: LoadReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """Run tags: checkpoint coverage counts when ``model.init_strict=false`` let an
        incomplete checkpoint through (``chexflow.init_loaded/missing/unexpected``)."""
        if self.init is None or self.init.complete:
            return {}
        return self.init.tags()


def check_run_inputs(
    config: ChexflowConfig | dict[str, Any],
    data_dir: Path | str,
    fractions: Sequence[float],
    seeds: Sequence[int],
    *,
    cache_dir: Path | None = None,
    check_pixels: bool = True,
) -> RunInputs:
    """Check the config, the model and checkpoint, the data and every image a run reads.

    Call it at the entry point, before a workdir, a Prefect API, a flow run or an MLflow
    run exists; a sweep passes all its fractions and seeds at once (a reference-only run:
    ``fractions=[]``). The model is built once, with random weights (no hub download).
    A call that an earlier one of this process covers (same config, data and cache; its
    fractions and seeds among those checked) returns that one's result unchecked: the
    runs of a sweep, whose entry checked them all, do not check again.

    Args:
        config: the whole config tree (re-validated: a flow parameter may come from a
            form, a dict or ``model_construct``).
        data_dir: the dataset folder (``find_dataset_root`` rules).
        fractions: label fractions in (0, 1], none repeated; may be empty.
        seeds: run seeds in [0, 2**32), none repeated.
        cache_dir: the image cache (``pipeline.image_cache_dir``): an image whose bytes
            it holds decoded is not decoded again, only read and hashed.
        check_pixels: decode every image (at 1/8 scale) that the cache does not hold;
            False only checks that the files exist.

    Returns:
        What was checked, with the checkpoint coverage for run tags.

    Raises:
        ConfigError: a config value, fraction or seed out of bounds; an unknown model, an
            image size the model cannot take, or an ``init_checkpoint`` that does not fit
            (shapes, or backbone coverage unless ``model.init_strict=false``).
        ChexflowError: an ``init_checkpoint`` that is not a plain tensor file (a pickle).
        DataError: no dataset, a malformed CSV, a split or fraction that cannot be drawn,
            an evaluation class without a positive image, or images missing or undecodable
            (names the first and the count).
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    config = validate_config(config)
    fractions = check_fractions(list(fractions)) if fractions else []
    seeds = check_seeds(list(seeds))
    seconds["config"] = time.perf_counter() - started
    key = (
        config.model_dump_json(),
        str(Path(data_dir).resolve()),
        str(Path(cache_dir).resolve()) if cache_dir else "",
        check_pixels,
    )
    for passed_key, passed_fractions, passed_seeds, passed in _PASSED:
        if passed_key == key and set(fractions) <= passed_fractions and set(seeds) <= passed_seeds:
            return passed

    started = time.perf_counter()
    init = check_model(config.model, config.data.image_size)
    seconds["model"] = time.perf_counter() - started

    started = time.perf_counter()
    root, frame = run_images(Path(data_dir), config, fractions, seeds)
    seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    if check_pixels:
        check_image_files(root, frame["path"].tolist(), config.data.image_size, cache_dir)
    else:
        missing = [p for p in frame["path"] if not (root / p).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(frame)} images are missing or unreadable; first: "
                f"{root / missing[0]} (file not found)"
            )
    seconds["images"] = time.perf_counter() - started
    inputs = RunInputs(config, root, len(frame), init, seconds)
    _PASSED.append((key, frozenset(fractions), frozenset(seeds), inputs))
    return inputs


# What passed in this process: a sweep's entry checks every fraction and seed at once, and
# the runs it starts (their own entry points) find themselves covered here.
_PASSED: list[tuple[tuple[str, str, str, bool], frozenset[float], frozenset[int], RunInputs]] = []


def validate_config(config: ChexflowConfig | dict[str, Any]) -> ChexflowConfig:
    """The config validated again from its values.

    Raises:
        ConfigError: naming the first bad key.
    """
    values = config.model_dump() if isinstance(config, ChexflowConfig) else config
    try:
        return ChexflowConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"config: {describe(exc)}") from None


def check_model(cfg: ModelConfig, image_size: int) -> LoadReport | None:
    """Build the architecture once, pass a blank image through it, load the checkpoint.

    Random weights only (no hub download): the hub is reached when training starts.

    Raises:
        ConfigError: unknown model, an image size it cannot take, or an
            ``init_checkpoint`` that does not fit (see ``models.load_backbone_weights``).
        ChexflowError: a checkpoint that is not a plain tensor file.
    """
    bare = cfg.model_copy(update={"pretrained": False, "init_checkpoint": None})
    model = create_model(bare).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size))
    except (RuntimeError, AssertionError, ValueError) as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        raise ConfigError(
            f"data.image_size={image_size} does not fit model.name={cfg.name} ({reason}); "
            "use a larger image size or another model"
        ) from None
    if cfg.init_checkpoint is None:
        return None
    return load_backbone_weights(model, cfg.init_checkpoint, strict=cfg.init_strict)


def run_images(
    data_dir: Path, config: ChexflowConfig, fractions: Sequence[float], seeds: Sequence[int]
) -> tuple[Path, pd.DataFrame]:
    """The dataset root and the rows of every image the runs read, each once.

    Draws each fraction × seed exactly as ``pipeline.prepare_data`` does, so a fraction
    that cannot be drawn (too small, a class without positives) is refused here.

    Raises:
        DataError: as ``check_run_inputs``, images aside.
    """
    from chexflow.pipeline import check_eval_classes

    cfg = config.data
    root = find_dataset_root(data_dir)
    train = read_split(root, "train")
    valid = read_split(root, "valid") if (root / "valid.csv").is_file() else None
    if valid is None and cfg.eval_source != "holdout":
        raise DataError(f"{root / 'valid.csv'} is missing; use data.eval_source=holdout")
    splits = make_splits(train, valid, cfg)
    check_eval_classes(splits.eval)
    patients: set[str] = set()
    for seed in seeds:
        for fraction in fractions:
            patients.update(sample_patients(splits.pool, fraction, seed, cfg.min_class_count))
    drawn = splits.pool[splits.pool["patient"].isin(patients)]
    frame = pd.concat([drawn, splits.val, splits.eval], ignore_index=True)
    return root, frame.drop_duplicates("path", ignore_index=True)
