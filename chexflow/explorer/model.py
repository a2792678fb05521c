"""The explorer's inputs: plain typed records of the evaluation images and of the runs.

One ``ExplorerImage`` per evaluation image (the rows of every run's ``embeddings/index.csv``,
in that order) and one ``ExplorerRun`` per fine-tune or reference run, whose maps and
neighbour lists index the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from chexflow.errors import DataError

LabelState = Literal["positive", "negative", "uncertain", "blank", "unknown"]
# CheXpert's label values (1, 0, -1, blank); "unknown" = only "not positive" is known
# (the run's index lists positives, the dataset CSV was not read).
LABEL_STATES: tuple[LabelState, ...] = ("positive", "uncertain", "negative", "blank", "unknown")


@dataclass(frozen=True)
class ExplorerImage:
    """One evaluation image.

    Attributes:
        path: the image path relative to the dataset root (its id in every run's index).
        patient: e.g. ``patient00042``.
        study: e.g. ``patient00042/study1``.
        labels: per evaluation class, its CheXpert label as a ``LabelState``.
    """

    path: str
    patient: str
    study: str
    labels: Mapping[str, LabelState]

    @property
    def positives(self) -> tuple[str, ...]:
        return tuple(c for c, state in self.labels.items() if state == "positive")

    @property
    def uncertain(self) -> tuple[str, ...]:
        return tuple(c for c, state in self.labels.items() if state == "uncertain")


@dataclass(frozen=True)
class ExplorerRun:
    """One run's views of the evaluation images.

    Attributes:
        label: how the page names the run, e.g. ``1% seed 0``.
        fraction: label fraction in [0, 1] (0 = the initial backbone).
        seed: the training seed.
        maps: 2-D map name (``tsne_s0_p30``, ``pca``, ``umap``) -> ``[n, 2]`` coordinates,
            aligned (rotated, reflected) into one frame across runs.
        neighbours: ``[n, k]`` row numbers of each image's nearest images in the run's
            embedding space, nearest first (the image itself excluded).
        key_numbers: ``(name, value as text)`` pairs shown next to the run's maps.
    """

    label: str
    fraction: float
    seed: int
    maps: Mapping[str, np.ndarray]
    neighbours: np.ndarray
    key_numbers: Sequence[tuple[str, str]] = field(default_factory=tuple)


def check_inputs(images: Sequence[ExplorerImage], runs: Sequence[ExplorerRun]) -> list[str]:
    """The map names every run has, in display order (t-SNE maps, then PCA, then UMAP).

    Raises:
        DataError: no images or runs, two runs of one label, a map or neighbour array
            whose rows are not the images, or no map common to all runs.
    """
    n = len(images)
    if n == 0 or not runs:
        raise DataError("the explorer needs at least one evaluation image and one run")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise DataError(f"two runs share a label in {labels}: label each run once")
    for run in runs:
        for name, coords in run.maps.items():
            if np.shape(coords) != (n, 2):
                raise DataError(
                    f"run {run.label}: map {name} has shape {np.shape(coords)}, expected "
                    f"({n}, 2): one row per evaluation image"
                )
        nn = np.asarray(run.neighbours)
        if nn.ndim != 2 or len(nn) != n or (nn.size and (nn.min() < 0 or nn.max() >= n)):
            raise DataError(
                f"run {run.label}: neighbours must be [{n}, k] row numbers below {n}, "
                f"got shape {nn.shape}"
            )
    common = set.intersection(*(set(r.maps) for r in runs))
    if not common:
        raise DataError("the runs have no 2-D map in common (expected tsne_*, pca or umap)")
    return sorted(common, key=map_order)


def map_order(name: str) -> tuple[int, str]:
    """t-SNE maps first (by name), then PCA, UMAP, anything else."""
    rank = 0 if name.startswith("tsne") else {"pca": 1, "umap": 2}.get(name, 3)
    return rank, name


def map_title(name: str) -> str:
    """``tsne_s0_p30`` -> ``t-SNE seed 0, perplexity 30``; ``pca`` -> ``PCA``."""
    if name.startswith("tsne_s") and "_p" in name:
        seed, perplexity = name[len("tsne_s") :].split("_p", 1)
        return f"t-SNE seed {seed}, perplexity {perplexity}"
    return {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}.get(name, name)
