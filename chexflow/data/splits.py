"""The fixed, patient-disjoint evaluation / validation / training-pool split.

The split depends only on the data, the view filters and ``DataConfig.split_seed`` — never
on the run seed or the label fraction — so every fine-tune of a sweep is evaluated on the
same images and their embeddings are comparable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from chexflow.data.chexpert import filter_views
from chexflow.data.labels import EVAL_CLASSES, LabelPolicy, column_of
from chexflow.errors import DataError


class SplitSettings(Protocol):
    """The fields of ``chexflow.config.DataConfig`` that the split reads (the data layer
    does not import the configuration: ``config`` imports ``data``)."""

    @property
    def frontal_only(self) -> bool: ...
    @property
    def view(self) -> Literal["any", "AP", "PA"]: ...
    @property
    def eval_source(self) -> Literal["holdout", "valid", "both"]: ...
    @property
    def split_seed(self) -> int: ...
    @property
    def holdout_fraction(self) -> float: ...
    @property
    def val_fraction(self) -> float: ...


@dataclass(frozen=True)
class Splits:
    """Canonical frames of the three patient-disjoint parts.

    Attributes:
        pool: train.csv patients that label fractions are drawn from.
        val: train.csv patients held out for epoch selection.
        eval: the evaluation set (train.csv hold-out, valid.csv, or both).
    """

    pool: pd.DataFrame
    val: pd.DataFrame
    eval: pd.DataFrame


def seeded_order(ids: Iterable[str], seed: int, salt: str) -> list[str]:
    """Unique ``ids`` in a pseudo-random order fixed by ``seed`` and ``salt``.

    Each id is ranked by a hash of (salt, seed, id), so an id's position relative to any
    other id does not depend on which other ids are present: adding or filtering patients
    leaves the rest of the order unchanged. The salt decorrelates orders used for
    different purposes with the same seed.
    """
    unique = set(ids)
    return sorted(unique, key=lambda i: hashlib.sha256(f"{salt}:{seed}:{i}".encode()).digest())


def make_splits(train: pd.DataFrame, valid: pd.DataFrame | None, cfg: SplitSettings) -> Splits:
    """Split canonical frames into training pool, validation and evaluation parts.

    The view filters of ``cfg`` are applied first. ``holdout_fraction`` of the train.csv
    patients form the hold-out and the next ``val_fraction`` the validation set (each at
    least one patient); the rest is the pool. ``eval_source`` picks the evaluation set:
    the hold-out, valid.csv, or both (with ``valid`` no train.csv patient is held out).
    Patients that also appear in valid.csv are kept out of the pool and validation set
    whenever valid.csv is evaluated on, so the parts stay patient-disjoint.

    Raises:
        DataError: valid.csv is needed but missing, or too few patients for three parts.
    """
    train = filter_views(train, cfg.frontal_only, cfg.view)
    uses_valid = cfg.eval_source in ("valid", "both")
    if uses_valid and valid is None:
        raise DataError(f"eval_source={cfg.eval_source} needs valid.csv, which was not given")
    valid = filter_views(valid, cfg.frontal_only, cfg.view) if uses_valid else None
    if valid is not None and valid.empty:
        raise DataError(
            f"valid.csv has no images left after the view filters (frontal_only="
            f"{cfg.frontal_only}, view={cfg.view}); relax them or set eval_source=holdout"
        )
    reserved = set(valid["patient"]) if valid is not None else set()
    ranked = seeded_order(train["patient"], cfg.split_seed, "split")
    order = [p for p in ranked if p not in reserved]
    n_holdout = _share(cfg.holdout_fraction, len(order)) if cfg.eval_source != "valid" else 0
    n_val = _share(cfg.val_fraction, len(order))
    if n_holdout + n_val >= len(order):
        raise DataError(
            f"train.csv has {len(order)} usable patients after the view filters: too few for "
            f"holdout_fraction={cfg.holdout_fraction} and val_fraction={cfg.val_fraction} "
            "to leave patients for training; use more data or smaller fractions"
        )
    holdout = set(order[:n_holdout])
    val = set(order[n_holdout : n_holdout + n_val])
    pool = set(order[n_holdout + n_val :])
    evaluation = [_rows(train, holdout)] if holdout else []
    if valid is not None:
        evaluation.append(valid)
    return Splits(
        pool=_rows(train, pool),
        val=_rows(train, val),
        eval=pd.concat(evaluation, ignore_index=True),
    )


def _share(fraction: float, n: int) -> int:
    """Patients for ``fraction`` of ``n``: rounded, at least one."""
    return max(1, round(fraction * n))


def _rows(frame: pd.DataFrame, patients: set[str]) -> pd.DataFrame:
    """The rows of ``patients``, in the frame's order."""
    return frame[frame["patient"].isin(patients)].reset_index(drop=True)


def eval_digest(
    frame: pd.DataFrame,
    *,
    root: Path | None = None,
    policy: Mapping[str, LabelPolicy] | None = None,
) -> str:
    """Identify an evaluation set, whatever the order of its rows; 16 hex characters.

    Covers the sorted image paths and, with ``root``, what was scored: each image's bytes
    (``dataset.content_keys``), its evaluation-class labels, the label ``policy`` and
    ``dataset.PREPROCESS_VERSION``. Runs whose digests differ were not scored on one
    evaluation set (``compare`` refuses them). Without ``root``: the paths only.

    Raises:
        DataError: (with ``root``) an image is missing or unreadable.
    """
    order = np.argsort(frame["path"].to_numpy(dtype=str), kind="stable")
    rows = frame.iloc[order]
    digest = hashlib.sha256("\n".join(rows["path"].tolist()).encode())
    if root is not None:
        from chexflow.data.dataset import PREPROCESS_VERSION, content_keys

        settings = {
            "policy": dict(sorted((policy or {}).items())),
            "preprocess": PREPROCESS_VERSION,
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        digest.update("\n".join(content_keys(root, rows["path"].tolist())).encode())
        labels = rows[[column_of(name) for name in EVAL_CLASSES]].to_numpy(dtype=np.float32)
        digest.update(np.nan_to_num(labels, nan=-9.0).tobytes())
    return digest.hexdigest()[:16]
