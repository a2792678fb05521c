"""What a dataset holds and what a configuration would draw from it (``chexflow data summary``).

``summarise`` returns a JSON-able dict with a stable schema (``chexflow.data-summary/1``);
classes appear in ``EVAL_CLASSES`` order, counts are images unless named ``patients``:

- ``schema``: ``"chexflow.data-summary/1"``; ``root``: the dataset root (str).
- ``filters``: ``{"frontal_only": bool, "view": "any"|"AP"|"PA"}``.
- ``splits``: ``{"train": S, "valid": S | null}`` (``valid`` is null without valid.csv),
  S = ``{"images", "patients", "studies", "views": {"Frontal", "Lateral"},
  "ap_pa": {value or "blank": images}, "frontal_ap_pa": {value or "blank": frontal
  images}, "used_images", "used_patients"}``; ``used_*`` count what is left after the
  view filters, everything else counts the whole CSV. ``Frontal`` rows whose AP/PA is
  ``LL`` or ``RL`` (17 in the real train.csv) are frontal views by the rule of
  ``chexpert.filter_views``: kept by ``view=any``, dropped by ``view=AP`` or ``PA``.
- ``labels``: ``{"train": L, "valid": L | null}`` after the view filters,
  L = ``{class: {"positive", "negative", "uncertain", "blank"}}``.
- ``exclusivity``: ``{"train": E, "valid": E | null}`` after the view filters,
  E = ``{"exclusive", "multi_label", "none", "exclusive_by_class": {class: images}}``
  (images with exactly one, several, or no positive evaluation class).
- ``holdout``: ``{"eval_source", "split_seed", "holdout_fraction", "val_fraction",
  "eval_digest", "eval_digest_error", "eval", "val", "pool", "error"}`` with
  eval/val/pool = ``{"patients", "images"}``; when the split is impossible, ``error``
  holds the reason and the other computed values are null. ``eval_digest`` is the one a
  run records (``splits.eval_digest`` over the images' bytes, labels and label policy);
  null, with the reason in ``eval_digest_error``, when an evaluation image is unreadable.
- ``fractions``: one ``fractions.fraction_sizes`` entry per requested fraction
  (``fraction``, ``seed``, ``patients``, ``images``, ``positives``, ``error``) drawn from
  the pool with ``min_class_count`` of the config; empty when the split is impossible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from chexflow.data.chexpert import exclusive_labels, filter_views, find_dataset_root, read_split
from chexflow.data.fractions import fraction_sizes
from chexflow.data.labels import EVAL_CLASSES, column_of
from chexflow.data.splits import SplitSettings, eval_digest, make_splits
from chexflow.errors import DataError

SCHEMA = "chexflow.data-summary/1"


class SummarySettings(SplitSettings, Protocol):
    """``DataConfig``'s fields that the summary reads: the split's and the class floor."""

    @property
    def min_class_count(self) -> int: ...
    @property
    def label_policy(self) -> Mapping[str, str]: ...


def summarise(
    root: Path, cfg: SummarySettings, fractions: Sequence[float], seed: int = 0
) -> dict[str, Any]:
    """Counts of the dataset at ``root`` and of what ``cfg`` and ``fractions`` draw from it.

    Raises:
        DataError: the dataset cannot be found or read (a split that cannot be made is
            reported in ``holdout.error`` instead).
    """
    root = find_dataset_root(Path(root))
    train = read_split(root, "train")
    needs_valid = cfg.eval_source != "holdout"
    valid = read_split(root, "valid") if needs_valid or (root / "valid.csv").is_file() else None
    frames = {"train": train, "valid": valid}
    used = {
        name: filter_views(frame, cfg.frontal_only, cfg.view) if frame is not None else None
        for name, frame in frames.items()
    }
    holdout, pool = _holdout(root, train, valid, cfg)
    return {
        "schema": SCHEMA,
        "root": str(root),
        "filters": {"frontal_only": cfg.frontal_only, "view": cfg.view},
        "splits": {
            name: _split_counts(frame, used[name]) if frame is not None else None
            for name, frame in frames.items()
        },
        "labels": {name: _label_counts(f) if f is not None else None for name, f in used.items()},
        "exclusivity": {
            name: _exclusivity(f) if f is not None else None for name, f in used.items()
        },
        "holdout": holdout,
        "fractions": fraction_sizes(pool, fractions, seed, cfg.min_class_count)
        if pool is not None
        else [],
    }


def _split_counts(frame: pd.DataFrame, used: pd.DataFrame) -> dict[str, Any]:
    ap_pa = frame["ap_pa"].replace("", "blank").value_counts().sort_index()
    return {
        "images": len(frame),
        "patients": int(frame["patient"].nunique()),
        "studies": int(frame["study"].nunique()),
        "views": {v: int((frame["view"] == v).sum()) for v in ("Frontal", "Lateral")},
        "ap_pa": {str(k): int(v) for k, v in ap_pa.items()},
        "frontal_ap_pa": _frontal_ap_pa(frame),
        "used_images": len(used),
        "used_patients": int(used["patient"].nunique()),
    }


def _frontal_ap_pa(frame: pd.DataFrame) -> dict[str, int]:
    """Frontal images by their AP/PA value: AP and PA first, then the others by name."""
    values = frame.loc[frame["view"] == "Frontal", "ap_pa"].replace("", "blank")
    counts = values.value_counts()
    order = [v for v in ("AP", "PA") if v in counts] + sorted(
        str(v) for v in counts.index if v not in ("AP", "PA")
    )
    return {name: int(counts[name]) for name in order}


def _label_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts = {}
    for name in EVAL_CLASSES:
        values = frame[column_of(name)].to_numpy(dtype=np.float32)
        counts[name] = {
            "positive": int((values == 1).sum()),
            "negative": int((values == 0).sum()),
            "uncertain": int((values == -1).sum()),
            "blank": int(np.isnan(values).sum()),
        }
    return counts


def _exclusivity(frame: pd.DataFrame) -> dict[str, Any]:
    columns = [column_of(name) for name in EVAL_CLASSES]
    n_positive = (frame[columns].to_numpy(dtype=np.float32) == 1).sum(axis=1)
    exclusive = pd.Series(exclusive_labels(frame), dtype=object)
    return {
        "exclusive": int((n_positive == 1).sum()),
        "multi_label": int((n_positive > 1).sum()),
        "none": int((n_positive == 0).sum()),
        "exclusive_by_class": {name: int((exclusive == name).sum()) for name in EVAL_CLASSES},
    }


def _holdout(
    root: Path, train: pd.DataFrame, valid: pd.DataFrame | None, cfg: SummarySettings
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The ``holdout`` section and the training pool (None when no split is possible)."""
    section: dict[str, Any] = {
        "eval_source": cfg.eval_source,
        "split_seed": cfg.split_seed,
        "holdout_fraction": cfg.holdout_fraction,
        "val_fraction": cfg.val_fraction,
        "eval_digest": None,
        "eval_digest_error": None,
        "eval": None,
        "val": None,
        "pool": None,
        "error": None,
    }
    try:
        splits = make_splits(train, valid, cfg)
    except DataError as exc:
        section["error"] = str(exc)
        return section, None
    try:
        section["eval_digest"] = eval_digest(splits.eval, root=root, policy=cfg.label_policy)
    except DataError as exc:
        section["eval_digest_error"] = str(exc)
    for name in ("eval", "val", "pool"):
        part = getattr(splits, name)
        section[name] = {"patients": int(part["patient"].nunique()), "images": len(part)}
    return section, splits.pool


def format_summary(summary: dict[str, Any]) -> str:
    """The ``summarise`` dict as plain-text tables."""
    filters = summary["filters"]
    blocks = [
        f"CheXpert dataset {summary['root']} "
        f"(frontal_only={filters['frontal_only']}, view={filters['view']})",
        _splits_table(summary["splits"]),
        _ap_pa_table(summary["splits"]),
        _labels_table(summary["labels"]),
        _exclusivity_table(summary["exclusivity"]),
        _holdout_table(summary["holdout"]),
        _fractions_table(summary["fractions"]),
    ]
    return "\n\n".join(block for block in blocks if block) + "\n"


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A titled table: first column left-aligned, the others right-aligned."""
    cells = [[_cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if k == 0 else cell.rjust(width)
            for k, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]
    return "\n".join([title, *lines])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _splits_table(splits: dict[str, Any]) -> str:
    header = ["split", "images", "patients", "studies", "frontal", "lateral", "used", "used pat."]
    rows = [
        [
            name,
            s["images"],
            s["patients"],
            s["studies"],
            s["views"]["Frontal"],
            s["views"]["Lateral"],
            s["used_images"],
            s["used_patients"],
        ]
        for name, s in splits.items()
        if s is not None
    ]
    return _table("images by split (used = after the view filters)", header, rows)


def _ap_pa_table(splits: dict[str, Any]) -> str:
    present = {name: s["frontal_ap_pa"] for name, s in splits.items() if s is not None}
    values = list(dict.fromkeys(v for counts in present.values() for v in counts))
    rows = [[value] + [counts.get(value, 0) for counts in present.values()] for value in values]
    odd = {
        name: sum(n for v, n in counts.items() if v not in ("AP", "PA"))
        for name, counts in present.items()
    }
    table = _table("frontal images by AP/PA", ["AP/PA", *present], rows)
    if any(odd.values()):
        counts = ", ".join(f"{name} {n}" for name, n in odd.items() if n)
        table += (
            f"\n  neither AP nor PA ({counts}): frontal views, kept by view=any, "
            "dropped by view=AP or view=PA"
        )
    return table


def _labels_table(labels: dict[str, Any]) -> str:
    present = [name for name, counts in labels.items() if counts is not None]
    kinds = {"positive": "pos", "negative": "neg", "uncertain": "unc", "blank": "blank"}
    header = ["class"] + [f"{name} {short}" for name in present for short in kinds.values()]
    rows = [
        [cls] + [labels[name][cls][kind] for name in present for kind in kinds]
        for cls in EVAL_CLASSES
    ]
    return _table("labels of the used images (pos / neg / uncertain / blank)", header, rows)


def _exclusivity_table(exclusivity: dict[str, Any]) -> str:
    present = [name for name, e in exclusivity.items() if e is not None]
    rows = [
        [kind.replace("_", "-")] + [exclusivity[name][kind] for name in present]
        for kind in ("exclusive", "multi_label", "none")
    ]
    rows += [
        [f"  only {cls}"] + [exclusivity[name]["exclusive_by_class"][cls] for name in present]
        for cls in EVAL_CLASSES
    ]
    return _table("positive evaluation classes per used image", ["images", *present], rows)


def _holdout_table(holdout: dict[str, Any]) -> str:
    title = (
        f"evaluation split (eval_source={holdout['eval_source']}, "
        f"split_seed={holdout['split_seed']}, eval_digest={holdout['eval_digest']})"
    )
    if holdout["error"]:
        return f"{title}\n  not possible: {holdout['error']}"
    if holdout.get("eval_digest_error"):
        title += f"\n  no eval_digest: {holdout['eval_digest_error']}"
    parts = ("eval", "val", "pool")
    rows = [[name, holdout[name]["patients"], holdout[name]["images"]] for name in parts]
    return _table(title, ["part", "patients", "images"], rows)


def _fractions_table(fractions: list[dict[str, Any]]) -> str:
    if not fractions:
        return ""
    rows = [[f["fraction"], f["patients"], f["images"], f["error"] or "ok"] for f in fractions]
    title = f"label fractions of the pool (seed {fractions[0]['seed']})"
    return _table(title, ["fraction", "patients", "images", "coverage"], rows)
