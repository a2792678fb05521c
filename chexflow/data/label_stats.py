"""Label statistics of a CheXpert ``train.csv``, with the reference file's definitions.

`label_statistics` measures a canonical frame (`chexflow.data.chexpert.read_split`) and
returns a dict shaped like `chexflow.data.reference_stats.CHEXPERT_TRAIN_STATS`:

- image shares over frontal images: per class (the 5 pathologies and No Finding) the
  share positive (``1.0``), uncertain (``-1.0``), negative (``0.0``) and blank, and the
  uncertain share of labelled (non-blank) cells; the shares with exactly one, two or
  more, or none of the six positive; each class's single-label share;
  ``P(B | A)`` for the pathologies; the number of distinct positive sets of the six;
- over all rows: studies per patient (mean, median, max, share with 1 and with 8 or
  more, quantiles), images per study, studies with two or more frontal images, the AP
  share and AP/PA values of frontal images, ages and sexes (rows);
- ``positive_again_in_next_study``: a study's labels are its first frontal image's;
  over each patient's consecutive studies with a frontal image (by study number), the
  share of a class's positive studies whose next study is positive too.

`share_errors` gives the standard error of every share above with the patient as the
resampling unit (the cluster-robust error of a ratio of per-patient sums: a patient's
images and studies are not independent draws). `comparable_shares` flattens either
dict into ``"section/key" -> share``, turning counts into shares of their population so
a small sample and the full release compare directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from chexflow.data.labels import NORMAL_COLUMN, PATHOLOGIES

SIX: tuple[str, ...] = (*PATHOLOGIES, NORMAL_COLUMN)
REPEAT_CLASSES: tuple[str, ...] = SIX
_QUANTILES = (0.5, 0.75, 0.9, 0.99)


class _Tally:
    """Per-patient numerators and denominators of ratio statistics."""

    def __init__(self, codes: np.ndarray, n_patients: int) -> None:
        self.codes = codes
        self.n = n_patients
        self.values: dict[str, float] = {}
        self.errors: dict[str, float] = {}

    def ratio(self, key: str, numerator: np.ndarray, denominator: np.ndarray) -> float:
        """Record sum(numerator) / sum(denominator) (rows of ``codes``) and its error."""
        num = np.bincount(self.codes, weights=numerator.astype(float), minlength=self.n)
        den = np.bincount(self.codes, weights=denominator.astype(float), minlength=self.n)
        total = den.sum()
        value = float(num.sum() / total) if total else float("nan")
        error = float(np.sqrt(((num - value * den) ** 2).sum()) / total) if total else 0.0
        self.values[key], self.errors[key] = value, error
        return value


def _measure(frame: pd.DataFrame) -> tuple[dict[str, Any], dict[str, float]]:
    patients, codes = np.unique(frame["patient"].to_numpy(), return_inverse=True)
    frontal = (frame["view"] == "Frontal").to_numpy()
    fr = frame[frontal]
    tally = _Tally(codes[frontal], len(patients))
    ones = np.ones(len(fr))
    per_class: dict[str, dict[str, float]] = {}
    for name in SIX:
        cells = fr[name].to_numpy(dtype=float)
        blank = np.isnan(cells)
        parts = {
            "positive_share": (cells == 1, ones),
            "uncertain_share_of_images": (cells == -1, ones),
            "negative_share_of_images": (cells == 0, ones),
            "blank_share_of_images": (blank, ones),
            "uncertain_share_of_labelled": (cells == -1, ~blank),
        }
        per_class[name] = {
            field: tally.ratio(f"per_class/{name}/{field}", num, den)
            for field, (num, den) in parts.items()
        }
    positive = np.column_stack([fr[name].to_numpy(dtype=float) == 1 for name in SIX])
    count = positive.sum(axis=1)
    stats: dict[str, Any] = {
        "rows": len(frame),
        "frontal_images": int(frontal.sum()),
        "patients": len(patients),
        "studies": int(frame["study"].nunique()),
        "per_class": per_class,
    }
    for key, hit in (
        ("exactly_one", count == 1),
        ("two_or_more", count >= 2),
        ("none", count == 0),
    ):
        name = f"images_with_{key}_of_six"
        stats[name] = tally.ratio(name, hit, ones)
    stats["single_label_share"] = {
        name: tally.ratio(f"single_label_share/{name}", positive[:, i] & (count == 1), ones)
        for i, name in enumerate(SIX)
    }
    conditional = {}
    for i, a in enumerate(PATHOLOGIES):
        for j, b in enumerate(PATHOLOGIES):
            if i != j:
                key = f"P({b} | {a})"
                both = positive[:, i] & positive[:, j]
                conditional[key] = tally.ratio(f"conditional_positive/{key}", both, positive[:, i])
    stats["conditional_positive"] = conditional
    stats["distinct_combinations_of_six"] = len({tuple(row) for row in positive})
    stats.update(_layout(frame, frontal))
    stats["positive_again_in_next_study"] = _repeats(fr, tally)
    tally.ratio("ap_share_of_frontal", (fr["ap_pa"] == "AP").to_numpy(), ones)
    errors = tally.errors | _layout_errors(frame, frontal, codes, len(patients))
    return stats, errors


def _layout_errors(
    frame: pd.DataFrame, frontal: np.ndarray, codes: np.ndarray, n_patients: int
) -> dict[str, float]:
    """Patient-clustered errors of the layout's shares (`comparable_shares`' keys)."""
    rows = _Tally(codes, n_patients)
    sex = frame["sex"].to_numpy()
    rows.ratio("sex/Male", sex == "Male", np.isin(sex, ("Male", "Female")))
    studies = frame.assign(_code=codes, _frontal=frontal).groupby("study")
    per_study = studies.agg(
        code=("_code", "first"), images=("path", "size"), fr=("_frontal", "sum")
    )
    by_study = _Tally(per_study["code"].to_numpy(), n_patients)
    ones = np.ones(len(per_study))
    for k in np.unique(per_study["images"]):
        by_study.ratio(f"images_per_study/{k}", (per_study["images"] == k).to_numpy(), ones)
    by_study.ratio("studies_with_2plus_frontal", (per_study["fr"] >= 2).to_numpy(), ones)
    counts = np.bincount(per_study["code"].to_numpy(), minlength=n_patients)
    root_n = np.sqrt(n_patients)
    per_patient = {
        "studies_per_patient/mean": float(counts.std(ddof=1) / root_n),
        "studies_per_patient/share_1": float((counts == 1).std() / root_n),
        "studies_per_patient/share_ge_8": float((counts >= 8).std() / root_n),
    }
    return rows.errors | by_study.errors | per_patient


def _layout(frame: pd.DataFrame, frontal: np.ndarray) -> dict[str, Any]:
    """Studies per patient, images per study, views, ages and sexes (all rows)."""
    per_patient = frame.groupby("patient")["study"].nunique().to_numpy()
    per_study = frame.groupby("study").size()
    frontal_per_study = frame[frontal].groupby("study").size()
    ap_pa = frame.loc[frontal, "ap_pa"].value_counts()
    ages = frame["age"].to_numpy()
    return {
        "studies_per_patient": {
            "mean": float(per_patient.mean()),
            "median": float(np.median(per_patient)),
            "max": int(per_patient.max()),
            "share_1": float((per_patient == 1).mean()),
            "share_ge_8": float((per_patient >= 8).mean()),
            "quantiles": {str(q): float(np.quantile(per_patient, q)) for q in _QUANTILES},
        },
        "images_per_study": {
            str(k): int(v) for k, v in per_study.value_counts().sort_index().items()
        },
        "studies_with_2plus_frontal": int((frontal_per_study >= 2).sum()),
        "ap_share_of_frontal": float(ap_pa.get("AP", 0) / max(int(frontal.sum()), 1)),
        "ap_pa_values_of_frontal": {str(k): int(v) for k, v in ap_pa.items()},
        "age": {
            "min": int(ages.min()),
            "max": int(ages.max()),
            "rows_age_0": int((ages == 0).sum()),
        },
        "sex": {str(k): int(v) for k, v in frame["sex"].value_counts().items()},
    }


def _repeats(fr: pd.DataFrame, tally: _Tally) -> dict[str, float]:
    """Share of a class's positive studies whose next study (with a frontal image) is too."""
    first = fr.assign(_row=np.arange(len(fr))).drop_duplicates("study")
    number = first["study"].str.extract(r"study(\d+)$", expand=False).astype(int)
    first = first.assign(_number=number.to_numpy()).sort_values(["patient", "_number"])
    same_patient = first["patient"].to_numpy()[1:] == first["patient"].to_numpy()[:-1]
    rows = first["_row"].to_numpy()[:-1][same_patient]  # the earlier study of each pair
    repeats = {}
    for name in REPEAT_CLASSES:
        positive = first[name].to_numpy(dtype=float) == 1
        now, after = positive[:-1][same_patient], positive[1:][same_patient]
        numerator = np.zeros(len(fr))
        denominator = np.zeros(len(fr))
        np.add.at(numerator, rows, now & after)
        np.add.at(denominator, rows, now)
        key = f"positive_again_in_next_study/{name}"
        repeats[name] = tally.ratio(key, numerator, denominator)
    return repeats


def label_statistics(frame: pd.DataFrame) -> dict[str, Any]:
    """The statistics of a canonical train frame, shaped like the reference (module doc)."""
    return _measure(frame)[0]


def share_errors(frame: pd.DataFrame) -> dict[str, float]:
    """Patient-clustered standard error of each share, keyed as `comparable_shares`."""
    return _measure(frame)[1]


def comparable_shares(stats: Mapping[str, Any]) -> dict[str, float]:
    """``"section/key" -> value`` of the statistics that compare across sample sizes.

    Image shares, conditionals and repeat rates as they are; studies per patient's mean
    and shares; images per study and studies with 2+ frontal images as shares of
    studies; the AP share of frontal images; the male share of rows with a known sex.
    Counts that grow with the sample (maxima, distinct combinations) are left out.
    """
    flat: dict[str, float] = {}
    for name, fields in stats["per_class"].items():
        flat.update({f"per_class/{name}/{k}": float(v) for k, v in fields.items()})
    for key in ("exactly_one", "two_or_more", "none"):
        flat[f"images_with_{key}_of_six"] = float(stats[f"images_with_{key}_of_six"])
    for section in ("single_label_share", "conditional_positive", "positive_again_in_next_study"):
        flat.update({f"{section}/{k}": float(v) for k, v in stats[section].items()})
    spp = stats["studies_per_patient"]
    for key in ("mean", "share_1", "share_ge_8"):
        flat[f"studies_per_patient/{key}"] = float(spp[key])
    studies = stats["studies"]
    for k, v in stats["images_per_study"].items():
        flat[f"images_per_study/{k}"] = v / studies
    flat["studies_with_2plus_frontal"] = stats["studies_with_2plus_frontal"] / studies
    flat["ap_share_of_frontal"] = float(stats["ap_share_of_frontal"])
    sex = stats["sex"]
    flat["sex/Male"] = sex.get("Male", 0) / (sex.get("Male", 0) + sex.get("Female", 0))
    return flat
