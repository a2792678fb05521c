"""The synthetic dataset's label model: which observations a study reports, and how clearly.

Every rate is fitted to the statistics measured on the real CheXpert train set
(`chexflow.data.reference_stats`, fitted by `chexflow.data.label_fit`); nothing about the
six evaluation classes is hand-tuned:

- Each study is in one of 33 *states*: which of the 5 pathologies are positive (any of
  the 32 subsets), or No Finding. The state distribution is the maximum-entropy one with
  the release's prevalence, pairwise co-occurrence, single-label shares and share with
  none of the six (e.g. Consolidation 6.8% positive, alone in 2.3% of images, with
  Pleural Effusion in 51% of its images).
- A patient's first study draws its state from that distribution; each later study from
  a Markov chain with the release's repeat rates (Pleural Effusion positive again in the
  next study 71%, Consolidation 26%) that keeps the distribution stationary.
- A pathology that is not positive is uncertain (``-1.0``), negative (``0.0``) or blank
  at the release's rates (Atelectasis 49% and Consolidation 43% of labelled cells
  uncertain); in No Finding studies it is only ever ``0.0`` or blank, as CheXpert's
  labeller writes No Finding only when nothing is positive or uncertain.

The 8 other observations (Lung Opacity, Support Devices, ...) have no reference figures;
their rates are CheXpert-like and depend on the positives (Lung Opacity with an opacity,
Pneumonia with Consolidation). A study with none of the six positive and nothing else
mentioned gets one other finding, so that its No Finding stays blank.

`draw_study` gives one study's labels and the strength in [0, 1] of each finding's
visual signature, which `chexflow.data.radiograph.render_radiograph` draws: clear for
positive labels, weak (or none: the report hedged on nothing visible) for uncertain ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import numpy as np

from chexflow.data.label_fit import (
    NORMAL_STATE,
    fit_combinations,
    fit_persistence,
    fit_studies_per_patient,
    state_positives,
)
from chexflow.data.labels import NORMAL_COLUMN, OBSERVATIONS, PATHOLOGIES
from chexflow.data.reference_stats import CHEXPERT_TRAIN_STATS

_T = TypeVar("_T")

ATELECTASIS, CARDIOMEGALY, CONSOLIDATION, EDEMA, EFFUSION = PATHOLOGIES
_OTHERS: tuple[str, ...] = tuple(
    o for o in OBSERVATIONS if o not in PATHOLOGIES and o != NORMAL_COLUMN
)
SUPPORT_DEVICES = "Support Devices"


@dataclass(frozen=True, eq=False)
class LabelModel:
    """The fitted label model (see the module docstring); build it with `label_model`."""

    states: np.ndarray  # P(state), length 33
    transitions: np.ndarray  # P(next state | state), 33 x 33
    studies_per_patient: np.ndarray  # P(n studies) at index n - 1
    uncertain: Mapping[str, float]  # P(-1.0 | not positive, not No Finding)
    negative: Mapping[str, float]  # P(0.0 | neither positive nor uncertain)

    def first_state(self, rng: np.random.Generator) -> int:
        """A first study's state."""
        return _draw(rng, self.states)

    def next_state(self, rng: np.random.Generator, state: int) -> int:
        """The state of the study after one in ``state``."""
        return _draw(rng, self.transitions[state])

    def n_studies(self, rng: np.random.Generator) -> int:
        """A patient's number of studies (heavy-tailed: 1 for half the patients)."""
        return 1 + _draw(rng, self.studies_per_patient)


def _draw(rng: np.random.Generator, p: np.ndarray) -> int:
    """An index drawn with probability ``p`` (the last row axis)."""
    cumulative = np.cumsum(p)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right"), len(p) - 1))


def fit_label_model(stats: Mapping[str, Any]) -> LabelModel:
    """The label model fitted to ``stats`` (shaped like ``CHEXPERT_TRAIN_STATS``)."""
    states = fit_combinations(stats)
    per_class = stats["per_class"]
    normal = per_class[NORMAL_COLUMN]["positive_share"]
    uncertain, negative = {}, {}
    for name in PATHOLOGIES:
        c = per_class[name]
        uncertain[name] = c["uncertain_share_of_images"] / (1 - c["positive_share"] - normal)
        quiet = c["negative_share_of_images"] + c["blank_share_of_images"]
        negative[name] = c["negative_share_of_images"] / quiet
    return LabelModel(
        states=states,
        transitions=fit_persistence(states, stats),
        studies_per_patient=fit_studies_per_patient(stats),
        uncertain=uncertain,
        negative=negative,
    )


@cache
def label_model() -> LabelModel:
    """The label model fitted to the real CheXpert train set's statistics (cached)."""
    return fit_label_model(CHEXPERT_TRAIN_STATS)


# (positive, uncertain, negative) rates of the other observations in abnormal studies.
_OTHER_RATES: dict[str, tuple[float, float, float]] = {
    "Enlarged Cardiomediastinum": (0.03, 0.05, 0.10),
    "Lung Opacity": (0.25, 0.03, 0.03),
    "Lung Lesion": (0.04, 0.007, 0.006),
    "Pneumonia": (0.01, 0.07, 0.015),
    "Pneumothorax": (0.08, 0.015, 0.25),
    "Pleural Other": (0.015, 0.012, 0.002),
    "Fracture": (0.04, 0.003, 0.012),
    SUPPORT_DEVICES: (0.55, 0.005, 0.03),
}
# What an "other findings only" study shows when its draws came out empty.
_OTHER_FORCED = (
    ("Lung Opacity", 0.45),
    ("Pneumothorax", 0.2),
    ("Lung Lesion", 0.12),
    ("Fracture", 0.1),
    ("Enlarged Cardiomediastinum", 0.08),
    ("Pleural Other", 0.05),
)
_OPACITIES = (ATELECTASIS, CONSOLIDATION, EDEMA)
_MENTIONED = (1, -1)


@dataclass(frozen=True)
class Study:
    """One study's labels and how clearly each finding shows in its images."""

    labels: dict[str, int | None]  # observation -> 1, 0, -1 or None (blank)
    findings: dict[str, float]  # observation -> signature strength in [0, 1]


def choice(rng: np.random.Generator, table: Sequence[tuple[_T, float]]) -> _T:
    """An item of ``table``, drawn with probability proportional to its weight."""
    total = sum(w for _, w in table)
    r, cumulative = rng.random() * total, 0.0
    for item, weight in table:
        cumulative += weight
        if r < cumulative:
            return item
    return table[-1][0]


def _strength(rng: np.random.Generator, label: int | None) -> float:
    """Signature strength: clear for positives, weak or absent for uncertain mentions."""
    if label == 1:
        return float(rng.uniform(0.35, 1.0))
    if label == -1:
        return float(rng.uniform(0.0, 0.4))
    return 0.0


def _draw_other(
    rng: np.random.Generator, name: str, positives: set[str], certain: bool
) -> int | None:
    pos, unc, neg = _OTHER_RATES[name]
    if name == "Lung Opacity" and positives & set(_OPACITIES):
        pos, unc = 0.7, 0.03
    elif name == "Enlarged Cardiomediastinum" and CARDIOMEGALY in positives:
        pos, unc = 0.35, 0.2
    elif name == "Pneumonia" and CONSOLIDATION in positives:
        pos, unc = 0.3, 0.35
    r = rng.random()
    if r < pos:
        return 1
    if r < pos + unc:
        return 0 if certain else -1
    if r < pos + unc + neg:
        return 0
    return 0 if certain else None


def _draw_pathologies(
    rng: np.random.Generator, model: LabelModel, state: int, certain: bool
) -> dict[str, int | None]:
    blank = 0 if certain else None
    positives = set(state_positives(state))
    labels: dict[str, int | None] = {}
    draws = rng.random((len(PATHOLOGIES), 2))
    for name, (r_unc, r_neg) in zip(PATHOLOGIES, draws, strict=True):
        if name in positives:
            labels[name] = 1
        elif state != NORMAL_STATE and not certain and r_unc < model.uncertain[name]:
            labels[name] = -1
        elif r_neg < model.negative[name]:
            labels[name] = 0
        else:
            labels[name] = blank
    return labels


def _draw_others(
    rng: np.random.Generator, state: int, pathologies: Mapping[str, int | None], certain: bool
) -> dict[str, int | None]:
    """The 8 other observations, given the state and its pathologies' labels."""
    blank = 0 if certain else None
    if state == NORMAL_STATE:
        r = rng.random(3)
        others: dict[str, int | None] = dict.fromkeys(_OTHERS, blank)
        others["Pneumothorax"] = 0 if r[0] < 0.35 else blank
        others["Enlarged Cardiomediastinum"] = 0 if r[1] < 0.15 else blank
        others[SUPPORT_DEVICES] = 1 if r[2] < 0.35 else (0 if r[2] < 0.38 else blank)
        return others
    positives = {name for name, value in pathologies.items() if value == 1}
    others = {name: _draw_other(rng, name, positives, certain) for name in _OTHERS}
    forced = choice(rng, _OTHER_FORCED)
    seen = [v for o, v in (*pathologies.items(), *others.items()) if o != SUPPORT_DEVICES]
    if not any(v in _MENTIONED for v in seen):
        others[forced] = 1  # none of the six, but something was seen: No Finding stays off
    return others


def draw_labels(
    rng: np.random.Generator, state: int, certain: bool, model: LabelModel | None = None
) -> dict[str, int | None]:
    """One study's 14 labels in ``state``; ``certain`` gives valid.csv's 0/1-only labels.

    Args:
        rng: The study's random stream.
        state: A `chexflow.data.label_fit` state (0-32).
        certain: Consensus labels (valid.csv): ``0.0`` instead of blank or uncertain.
        model: The fitted model; default `label_model()`.

    Returns:
        Observation -> ``1``, ``0``, ``-1`` or ``None`` (blank), in CSV column order.
    """
    model = model or label_model()
    labels = _draw_pathologies(rng, model, state, certain)
    labels.update(_draw_others(rng, state, labels, certain))
    labels[NORMAL_COLUMN] = 1 if state == NORMAL_STATE else (0 if certain else None)
    return {o: labels[o] for o in OBSERVATIONS}


def findings_of(rng: np.random.Generator, labels: Mapping[str, int | None]) -> dict[str, float]:
    """Signature strength of each finding a study's labels report (absent ones left out)."""
    strengths = {o: _strength(rng, labels[o]) for o in OBSERVATIONS}
    findings = {o: s for o, s in strengths.items() if s > 0 and o != NORMAL_COLUMN}
    # An isolated "Lung Opacity" gets its own faint patch; alongside a named opacity
    # the named finding is the opacity.
    if any(labels[o] == 1 for o in _OPACITIES):
        findings.pop("Lung Opacity", None)
    return findings


def draw_study(
    rng: np.random.Generator, state: int, certain: bool, model: LabelModel | None = None
) -> Study:
    """One study in ``state``; ``certain`` gives valid.csv's 0/1-only consensus labels."""
    labels = draw_labels(rng, state, certain, model)
    return Study(labels=labels, findings=findings_of(rng, labels))
