"""Assemble the runs of a comparison from their MLflow artifacts.

A comparison needs nothing but what each fine-tune run logged: its evaluation AUROC,
its cluster metrics, its embeddings and maps. Runs are comparable only when they embedded
the same evaluation images (same ``eval_digest``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexflow import records
from chexflow.errors import ChexflowError


@dataclass
class RunRecord:
    """One fine-tune run as the comparison sees it."""

    run_id: str
    fraction: float
    seed: int
    model: str
    directory: Path
    eval_digest: str
    auroc: dict[str, Any]
    metrics: dict[str, Any]
    table: pd.DataFrame
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "finetune"
    feature_array: np.ndarray | None = None
    start: str = ""  # the starting point (records.INIT_TAG): scratch, pretrain:<run>, ...

    @property
    def label(self) -> str:
        return f"{records.fraction_percent(self.fraction)} seed {self.seed}"

    @property
    def is_reference(self) -> bool:
        """The initial backbone (no labels, fraction 0): a baseline, its head untrained."""
        return self.kind == "reference" or self.fraction == 0.0

    def features(self) -> np.ndarray:
        """The evaluation embeddings ``[n, d]`` (held in memory, else read from disk)."""
        if self.feature_array is not None:
            return self.feature_array
        from chexflow.embed import load_embeddings

        return load_embeddings(self.directory / records.EMBEDDINGS_DIR)[0]

    def exclusive(self) -> list[str | None]:
        """Per evaluation image, its class when it has exactly one, else None."""
        return [e or None for e in self.table["exclusive"].fillna("")]

    def positives(self) -> list[tuple[str, ...]]:
        """Per evaluation image, its positive evaluation classes."""
        return [tuple(p.split("|")) if p else () for p in self.table["positives"].fillna("")]

    def primary_map(self) -> np.ndarray:
        key = self.metrics.get("primary_map") or next(
            (k for k in sorted(self.maps) if k.startswith("tsne")), None
        )
        if key is None or key not in self.maps:
            raise ChexflowError(f"run {self.run_id} logged no t-SNE map under maps/")
        return self.maps[key]


def _read_json(path: Path, run_id: str) -> dict[str, Any]:
    if not path.is_file():
        raise ChexflowError(f"run {run_id} has no artifact {path.parent.name}/{path.name}")
    return json.loads(path.read_text())


def load_run_record(run_id: str, tags: dict[str, str], directory: Path) -> RunRecord:
    """Read a run's downloaded artifacts (``metrics/``, ``embeddings/``, ``maps/``).

    The run's tags (``chexflow.records``) name its fraction, seed and model; the embeddings'
    own metadata fills in what a run without tags (a local directory) lacks.
    """
    from chexflow.embed import load_embeddings

    _features, table, meta = load_embeddings(directory / records.EMBEDDINGS_DIR)
    maps = {
        path.stem: np.load(path, allow_pickle=False)
        for path in sorted((directory / records.MAPS_DIR).glob("*.npy"))
    }
    tagged = records.read_run_tags(tags)
    metrics_dir = directory / records.METRICS_DIR
    return RunRecord(
        run_id=run_id,
        fraction=tagged.fraction
        if tagged.fraction is not None
        else float(meta.get("fraction", "nan")),
        seed=tagged.seed if tagged.seed is not None else int(meta.get("seed", 0)),
        model=tagged.model if tagged.model is not None else meta.get("model", "?"),
        directory=directory,
        eval_digest=meta.get("eval_digest", tagged.eval_digest or ""),
        auroc=_read_json(metrics_dir / records.EVALUATION_FILE, run_id),
        metrics=_read_json(metrics_dir / records.CLUSTER_METRICS_FILE, run_id),
        table=table,
        maps=maps,
        kind=tagged.kind or "finetune",
        start=tagged.init or "",
    )


def check_comparable(records: list[RunRecord]) -> None:
    """Refuse runs whose evaluation sets differ: their maps and metrics would not compare."""
    if not records:
        raise ChexflowError("no finished fine-tune runs to compare: check the sweep or run ids")
    digests = {r.eval_digest for r in records}
    if len(digests) > 1:
        by_digest = {d: [r.run_id[:8] for r in records if r.eval_digest == d] for d in digests}
        raise ChexflowError(
            f"runs embed different evaluation sets {by_digest}: compare runs of one dataset "
            "and split (same data.split_seed, holdout_fraction and eval_source)"
        )
    ids = [r.run_id for r in records]
    if len(set(ids)) != len(ids):
        raise ChexflowError("a run is named twice in the comparison")


def order_records(records: list[RunRecord]) -> list[RunRecord]:
    """Lowest fraction first, then by seed."""
    return sorted(records, key=lambda r: (r.fraction, r.seed))


def aligned_primary_maps(records: list[RunRecord]) -> dict[str, np.ndarray]:
    """Each run's primary t-SNE map rotated (Procrustes) into the largest fraction's frame."""
    from chexflow.analysis.projection import procrustes_align

    ordered = order_records(records)
    reference = ordered[-1].primary_map()
    aligned: dict[str, np.ndarray] = {}
    for record in ordered:
        coords = record.primary_map()
        aligned[record.label] = (
            coords if record is ordered[-1] else procrustes_align(reference, coords)[0]
        )
    return aligned
