"""The explorer's inputs from what a comparison already holds: its ``RunRecord``s.

Each run's ``embeddings/`` give the images (``index.csv``) and their nearest neighbours
(from ``features.npy``), its ``maps/`` the 2-D maps, its ``metrics/`` the key numbers.
Two things are not in the runs' artifacts: the full CheXpert labels (the index keeps
the positives only) and the radiographs. Both come from the dataset folder when the
caller passes it; without it, labels read "positive" / "not positive" and the page
has no thumbnails.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexflow.comparison import RunRecord, check_comparable, order_records
from chexflow.data.labels import EVAL_CLASSES, column_of
from chexflow.errors import DataError
from chexflow.explorer.model import ExplorerImage, ExplorerRun, LabelState, map_order

NEIGHBOURS_K = 10  # as the report's neighbourhood agreement (report/resample.py)
TOP_PAIRS = 2
_STATE_OF_VALUE: dict[float, LabelState] = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}


def dataset_labels(data_dir: Path) -> pd.DataFrame:
    """The evaluation classes' CheXpert values (1, 0, -1, NaN) by image path, from
    ``train.csv`` and ``valid.csv`` of the dataset folder.

    Raises:
        DataError: the folder is not a CheXpert dataset, or a CSV is malformed.
    """
    from chexflow.data.chexpert import find_dataset_root, read_split

    root = find_dataset_root(Path(data_dir))
    splits = ["train", *(["valid"] if (root / "valid.csv").is_file() else [])]
    frame = pd.concat([read_split(root, s) for s in splits], ignore_index=True)  # type: ignore[arg-type]
    columns = {column_of(c): c for c in EVAL_CLASSES}
    return frame.set_index("path")[["study", *columns]].rename(columns=columns)


def pct(value: float) -> str:
    """A share as a whole percent, as the report writes it (``31%``)."""
    return f"{value * 100:.0f}%"


def value_ci(block: dict[str, Any] | None) -> str:
    """``0.312 [0.301, 0.335]`` as the report writes it; ``—`` without a value."""
    if not block or block.get("value") is None:
        return "—"
    low, high = block.get("ci_low"), block.get("ci_high")
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{block['value']:.3f}{interval}"


def _state(value: Any) -> LabelState:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "blank"
    return _STATE_OF_VALUE.get(float(value), "blank")


def _study(path: str) -> str:
    """``train/patient00001/study1/view1_frontal.jpg`` -> ``patient00001/study1``."""
    parts = path.split("/")
    return "/".join(parts[-3:-1]) if len(parts) >= 3 else path


def explorer_images(table: pd.DataFrame, labels: pd.DataFrame | None) -> list[ExplorerImage]:
    """One ``ExplorerImage`` per row of a run's ``index.csv`` (``embed.INDEX_COLUMNS``).

    Args:
        table: the index (``path``, ``patient``, ``positives`` as ``A|B``, ...).
        labels: ``dataset_labels`` of the dataset the runs embedded, or None.

    Raises:
        DataError: an indexed image is not in ``labels`` (another dataset's folder).
    """
    paths = table["path"].astype(str).tolist()
    if labels is not None:
        missing = [p for p in paths if p not in labels.index]
        if missing:
            raise DataError(
                f"{len(missing)} evaluation images (first: {missing[0]}) are not in the "
                "dataset's train.csv or valid.csv: pass the dataset folder the runs used"
            )
        rows = labels.loc[paths]
        return [
            ExplorerImage(
                path=path,
                patient=str(patient),
                study=str(study),
                labels={c: _state(v) for c, v in zip(EVAL_CLASSES, values, strict=True)},
            )
            for path, patient, study, values in zip(
                paths,
                table["patient"],
                rows["study"],
                rows[list(EVAL_CLASSES)].to_numpy().tolist(),
                strict=True,
            )
        ]
    images = []
    for path, patient, positives in zip(
        paths, table["patient"], table["positives"].fillna(""), strict=True
    ):
        plus = set(str(positives).split("|")) if positives else set()
        states: dict[str, LabelState] = {
            c: "positive" if c in plus else "unknown" for c in EVAL_CLASSES
        }
        images.append(ExplorerImage(path, str(patient), _study(path), states))
    return images


def embedding_neighbours(features: np.ndarray, k: int = NEIGHBOURS_K) -> np.ndarray:
    """Each image's ``k`` most cosine-similar other images ``[n, k]``, nearest first."""
    from chexflow.analysis.projection import cosine_neighbours, l2_normalise

    return cosine_neighbours(l2_normalise(np.asarray(features, dtype=np.float32)), k)[0]


def aligned_maps(records: Sequence[RunRecord]) -> dict[str, dict[str, np.ndarray]]:
    """Per run label, its maps rotated (Procrustes) into the reference run's frame.

    The reference is the largest fraction's first run (``comparison.order_records``), as
    in ``comparison.aligned_primary_maps``; each map name is aligned to the reference's
    map of the same name (t-SNE seed and perplexity, PCA, UMAP). The ``tsne`` copy of the
    primary map is left out (it repeats a ``tsne_s*_p*`` map).
    """
    from chexflow.analysis.projection import procrustes_align

    ordered = order_records(list(records))
    top = max(r.fraction for r in ordered)
    reference = next(r for r in ordered if r.fraction == top)
    names = sorted(set.intersection(*(set(r.maps) for r in ordered)) - {"tsne"}, key=map_order)
    out: dict[str, dict[str, np.ndarray]] = {}
    for record in ordered:
        out[record.label] = {
            name: np.asarray(record.maps[name], dtype=np.float32)
            if record is reference
            else procrustes_align(reference.maps[name], record.maps[name])[0]
            for name in names
        }
    return out


def _overlap_pairs(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The pairs whose kNN overlap most exceeds chance: ``("Cons ↔ Edema", "31% (chance 18%)")``.

    Overlap is the report's symmetric kNN mixing ``(M[a, b] + M[b, a]) / 2``; chance is what
    random neighbours would give, the mean of the two classes' shares of the single-label
    images. Pairs at chance (as printed) are left out: they are not overlapping.
    """
    mixing = metrics.get("knn", {}).get("mixing", {})
    classes, matrix = mixing.get("classes", []), mixing.get("matrix", [])
    base = mixing.get("base_rate") or []
    if len(base) != len(classes):
        return []
    pairs = []
    for i, j in combinations(range(len(classes)), 2):
        ab, ba = matrix[i][j], matrix[j][i]
        if ab is None or ba is None:
            continue
        share, chance = (ab + ba) / 2, (base[i] + base[j]) / 2
        if pct(share) != pct(chance) and share > chance:  # above chance as printed
            pairs.append((share - chance, classes[i], classes[j], share, chance))
    pairs.sort(reverse=True)
    return [
        (f"overlap {a} ↔ {b}", f"{pct(share)} (chance {pct(chance)})")
        for _, a, b, share, chance in pairs[:TOP_PAIRS]
    ]


def key_numbers(record: RunRecord) -> list[tuple[str, str]]:
    """What the page prints under a run's maps: the report's headline numbers of the run."""
    a, m = record.auroc, record.metrics
    auroc = {
        "value": a.get("mean"),
        "ci_low": a.get("mean_ci_low"),
        "ci_high": a.get("mean_ci_high"),
    }
    return [
        ("mean AUROC", value_ci(auroc)),
        ("silhouette", value_ci(m.get("silhouette"))),
        ("kNN accuracy", value_ci(m.get("knn", {}).get("accuracy"))),
        *_overlap_pairs(m),
    ]


def explorer_runs(records: Sequence[RunRecord], k: int = NEIGHBOURS_K) -> list[ExplorerRun]:
    """One ``ExplorerRun`` per record (lowest fraction first): aligned maps, neighbours
    from the run's embeddings, key numbers from its metrics."""
    maps = aligned_maps(records)
    return [
        ExplorerRun(
            label=r.label,
            fraction=r.fraction,
            seed=r.seed,
            maps=maps[r.label],
            neighbours=embedding_neighbours(r.features(), k),
            key_numbers=key_numbers(r),
        )
        for r in order_records(list(records))
    ]


def write_comparison_explorer(
    records: Sequence[RunRecord],
    out_path: Path,
    data_dir: Path | None = None,
    title: str = "Label-fraction explorer",
) -> Path:
    """Write the explorer page of a comparison's runs to ``out_path`` (one HTML file).

    Args:
        records: the compared runs (one evaluation set: ``comparison.check_comparable``).
        out_path: the ``.html`` file to write.
        data_dir: the dataset folder the runs used, for thumbnails and full labels; None
            gives a page without thumbnails whose labels are positives only.
        title: the page's heading.

    Raises:
        DataError: runs of different evaluation sets, or ``data_dir`` is not their dataset.
    """
    from chexflow.explorer.page import write_explorer
    from chexflow.explorer.thumbnails import thumbnail_uris

    check_comparable(list(records))
    table = order_records(list(records))[0].table
    labels = dataset_labels(data_dir) if data_dir is not None else None
    images = explorer_images(table, labels)
    thumbnails = None
    if data_dir is not None:
        from chexflow.data.chexpert import find_dataset_root

        thumbnails = thumbnail_uris(find_dataset_root(Path(data_dir)), [im.path for im in images])
    return write_explorer(out_path, images, explorer_runs(records), thumbnails, title=title)
