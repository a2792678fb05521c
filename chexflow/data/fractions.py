"""Label fractions of the training pool, drawn by patient, nested per seed.

For one seed every patient of the pool gets a place in a single order; a fraction is the
prefix of ``ceil(fraction * n_patients)`` patients of that order. Prefixes nest, so the
patients of 1% are a subset of the patients of 10% for the same seed, and another seed
gives another order, hence other subsets.

The order is a seeded permutation (``splits.seeded_order``) with a short *coverage front*
moved ahead of it: for each class (rarest first), the first patients in the permutation
that carry it are moved to the front until the front holds ``min_class_count`` positive
images of the class (or all of them, when the pool has fewer). Any fraction whose prefix
reaches past the front therefore has every class; a smaller one raises a ``DataError``
that names the class and the smallest fraction that would cover it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chexflow.data.labels import EVAL_CLASSES, column_of
from chexflow.data.splits import seeded_order
from chexflow.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Plan:
    """The seeded patient order of a pool and the positives each prefix holds."""

    patients: list[str]
    classes: tuple[str, ...]
    cumulative: np.ndarray  # [n_patients, n_classes] positives in each prefix
    images: np.ndarray  # [n_patients] images in each prefix
    needed: np.ndarray  # [n_classes] min(min_class_count, positives in the pool)
    min_class_count: int

    def size(self, fraction: float) -> int:
        """Patients in ``fraction`` of the pool; raises for fractions outside (0, 1]."""
        n = len(self.patients)
        if not 0 < fraction <= 1:
            raise DataError(f"fraction {fraction} is outside (0, 1]; e.g. 0.01 for 1%")
        if n == 0:
            raise DataError("the training pool has no patients to draw a fraction from")
        if fraction * n < 1:
            raise DataError(
                f"fraction {fraction} of the pool's {n} patients is less than one patient; "
                f"the smallest fraction is {_round_up(1 / n)}"
            )
        # Round first so that 0.1 * 100 = 10.000000000000002 takes 10 patients, not 11.
        return math.ceil(round(fraction * n, 9))

    def shortfall(self, fraction: float, size: int) -> str | None:
        """Why the prefix of ``size`` patients lacks a class, or None when it has them all."""
        have = self.cumulative[size - 1]
        short = np.flatnonzero(have < self.needed)
        if short.size == 0:
            return None
        j = int(short[0])
        covering = max(
            int(np.argmax(self.cumulative[:, k] >= self.needed[k])) + 1
            for k in range(len(self.classes))
        )
        others = f" (and {short.size - 1} more classes)" if short.size > 1 else ""
        return (
            f"fraction {fraction} ({size} of {len(self.patients)} patients) has "
            f"{int(have[j])} positive {self.classes[j]!r} images, fewer than "
            f"min_class_count={self.min_class_count} (the pool has "
            f"{int(self.cumulative[-1, j])}){others}; the smallest fraction that covers every "
            f"class is {_round_up(covering / len(self.patients))}"
        )


def _round_up(value: float, digits: int = 4) -> float:
    """``value`` rounded up at ``digits`` decimals, so ceil(result * n) still reaches it."""
    scale = 10**digits
    return math.ceil(value * scale - 1e-9) / scale


def _plan(pool: pd.DataFrame, seed: int, min_class_count: int, classes: Sequence[str]) -> _Plan:
    classes = tuple(classes)
    positive = pool[[column_of(c) for c in classes]].to_numpy(dtype=np.float32) == 1.0
    per_patient = (
        pd.DataFrame(positive.astype(np.int64), columns=list(classes))
        .assign(_images=1)
        .groupby(pool["patient"].to_numpy())
        .sum()
    )
    permutation = seeded_order(per_patient.index, seed, "fraction")
    counts = per_patient.loc[permutation, list(classes)].to_numpy()
    totals = counts.sum(axis=0)
    needed = np.minimum(min_class_count, totals)
    for j in np.flatnonzero(totals < min_class_count):
        log.warning(
            "the pool has only %d positive %r images, fewer than min_class_count=%d",
            totals[j],
            classes[j],
            min_class_count,
        )
    order = _coverage_first(counts, needed)
    return _Plan(
        patients=[permutation[i] for i in order],
        classes=classes,
        cumulative=np.cumsum(counts[order], axis=0),
        images=np.cumsum(per_patient.loc[permutation, "_images"].to_numpy()[order]),
        needed=needed,
        min_class_count=min_class_count,
    )


def _coverage_first(counts: np.ndarray, needed: np.ndarray) -> np.ndarray:
    """Indices of the permutation with the coverage front (module docstring) moved first."""
    n = counts.shape[0]
    in_front = np.zeros(n, dtype=bool)
    front: list[np.ndarray] = []
    # Rarest class first: its carriers often cover the common classes too.
    for j in sorted(range(counts.shape[1]), key=lambda k: (counts[:, k].sum(), k)):
        missing = needed[j] - counts[in_front, j].sum()
        if missing <= 0:
            continue
        carriers = np.flatnonzero(~in_front & (counts[:, j] > 0))
        enough = int(np.searchsorted(np.cumsum(counts[carriers, j]), missing)) + 1
        taken = carriers[:enough]
        in_front[taken] = True
        front.append(taken)
    return np.concatenate([*front, np.flatnonzero(~in_front)]).astype(np.int64)


def sample_patients(
    pool: pd.DataFrame,
    fraction: float,
    seed: int,
    min_class_count: int,
    classes: Sequence[str] = EVAL_CLASSES,
) -> list[str]:
    """The sorted patient ids of ``fraction`` of the pool for ``seed`` (module docstring).

    Raises:
        DataError: ``fraction`` is outside (0, 1] or below one patient, or its patients hold
            fewer than ``min_class_count`` positives of a class that the pool has.
    """
    plan = _plan(pool, seed, min_class_count, classes)
    size = plan.size(fraction)
    problem = plan.shortfall(fraction, size)
    if problem:
        raise DataError(problem)
    return sorted(plan.patients[:size])


def fraction_frame(pool: pd.DataFrame, patients: Sequence[str]) -> pd.DataFrame:
    """The pool's rows of ``patients``, in pool order."""
    chosen = set(patients)
    missing = chosen.difference(pool["patient"])
    if missing:
        raise DataError(
            f"{len(missing)} sampled patients are not in the pool (e.g. {min(missing)}); "
            "sample from the same pool"
        )
    return pool[pool["patient"].isin(chosen)].reset_index(drop=True)


def fraction_sizes(
    pool: pd.DataFrame,
    fractions: Sequence[float],
    seed: int,
    min_class_count: int = 1,
    classes: Sequence[str] = EVAL_CLASSES,
) -> list[dict[str, Any]]:
    """What each fraction would draw, without raising: one JSON-able dict per fraction.

    Keys: ``fraction``, ``seed``, ``patients`` and ``images`` (None when the fraction is
    invalid), ``positives`` (class → positive images, empty when invalid) and ``error``
    (the ``DataError`` message ``sample_patients`` would raise, or None).
    """
    plan = _plan(pool, seed, min_class_count, classes)
    sizes: list[dict[str, Any]] = []
    for fraction in fractions:
        entry: dict[str, Any] = {
            "fraction": float(fraction),
            "seed": seed,
            "patients": None,
            "images": None,
            "positives": {},
            "error": None,
        }
        try:
            size = plan.size(fraction)
        except DataError as exc:
            entry["error"] = str(exc)
        else:
            entry["patients"] = size
            entry["images"] = int(plan.images[size - 1])
            entry["positives"] = {
                c: int(v) for c, v in zip(plan.classes, plan.cumulative[size - 1], strict=True)
            }
            entry["error"] = plan.shortfall(fraction, size)
        sizes.append(entry)
    return sizes
