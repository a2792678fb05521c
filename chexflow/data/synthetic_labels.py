"""The synthetic dataset's label model: which observations a study reports, and how clearly.

`draw_study` gives one study's CheXpert labels (``1``, ``0``, ``-1`` or blank per
observation) and the strength in [0, 1] of each finding's visual signature, which
`chexflow.data.radiograph.render_radiograph` draws. Positive labels come with clear
signatures; uncertain labels (``-1.0``) with weak ones (or none: the report hedged on
nothing visible).

Label model, and where it deviates from CheXpert on purpose: every frontal study draws
a *profile*: Normal (10%, ``No Finding`` = 1.0), other findings only (25%: Lung Opacity,
Pneumothorax, Support Devices, ... or only uncertain pathologies), one of the 5
pathologies alone (31% in all) or a combination of them (33%: Edema with Pleural
Effusion and Cardiomegaly, Atelectasis with Effusion, Consolidation with Edema and
Effusion). Positive prevalence on frontal images then resembles CheXpert's frontal
train set (Pleural Effusion 37%, Edema 27%, Atelectasis 17%, Cardiomegaly 14%,
Consolidation 11%, No Finding 10%), but Consolidation and Cardiomegaly occur *alone*
far more often than in CheXpert (and so a little more often overall): a small demo set
needs enough exclusive single-label images for the representation analysis, and here
each of the 6 evaluation classes has at least ~5% of the frontal images to itself
(Normal 10%, Effusion 9%) while multi-label images stay common (33%). Uncertain
(``-1.0``) cells are 5-15% of each pathology's non-blank cells; ``0.0`` mentions follow
CheXpert's rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from chexflow.data.labels import NORMAL_COLUMN, OBSERVATIONS, PATHOLOGIES

_T = TypeVar("_T")

ATELECTASIS, CARDIOMEGALY, CONSOLIDATION, EDEMA, EFFUSION = PATHOLOGIES
_OTHERS: tuple[str, ...] = tuple(
    o for o in OBSERVATIONS if o not in PATHOLOGIES and o != NORMAL_COLUMN
)
SUPPORT_DEVICES = "Support Devices"

_NORMAL_PROFILE = "normal"
_OTHER_PROFILE = "other"
Profile = str | tuple[str, ...]
# Share of frontal studies per profile: Normal, other findings only, one pathology alone,
# several (the combinations' weights are relative within _MULTI_SHARE).
_SINGLE_SHARE = {
    EFFUSION: 0.09,
    EDEMA: 0.055,
    ATELECTASIS: 0.055,
    CARDIOMEGALY: 0.055,
    CONSOLIDATION: 0.055,
}
_MULTI_SHARE = 0.33
_MULTI: dict[tuple[str, ...], float] = {
    (EDEMA, EFFUSION): 0.25,
    (ATELECTASIS, EFFUSION): 0.16,
    (CARDIOMEGALY, EDEMA, EFFUSION): 0.1,
    (CARDIOMEGALY, EFFUSION): 0.04,
    (ATELECTASIS, EDEMA, EFFUSION): 0.04,
    (CONSOLIDATION, EFFUSION): 0.04,
    (CONSOLIDATION, EDEMA): 0.035,
    (CARDIOMEGALY, EDEMA): 0.035,
    (ATELECTASIS, EDEMA): 0.02,
    (ATELECTASIS, CONSOLIDATION): 0.02,
    (ATELECTASIS, CARDIOMEGALY): 0.005,
    (CONSOLIDATION, EDEMA, EFFUSION): 0.015,
    (ATELECTASIS, CARDIOMEGALY, EFFUSION): 0.01,
    (ATELECTASIS, CARDIOMEGALY, EDEMA, EFFUSION): 0.012,
    (CARDIOMEGALY, CONSOLIDATION): 0.005,
}
PROFILES: tuple[tuple[Profile, float], ...] = (
    (_NORMAL_PROFILE, 0.10),
    (_OTHER_PROFILE, 0.255),
    *(((name,), share) for name, share in _SINGLE_SHARE.items()),
    *((combo, _MULTI_SHARE * w / sum(_MULTI.values())) for combo, w in _MULTI.items()),
)
# Chance that an absent pathology is mentioned as uncertain (abnormal studies only).
_UNCERTAIN_RATE = {
    ATELECTASIS: 0.035,
    CARDIOMEGALY: 0.025,
    CONSOLIDATION: 0.04,
    EDEMA: 0.04,
    EFFUSION: 0.05,
}
# Chance that an absent pathology is mentioned as negative (doubled in normal studies).
_NEGATIVE_RATE = {
    ATELECTASIS: 0.01,
    CARDIOMEGALY: 0.05,
    CONSOLIDATION: 0.12,
    EDEMA: 0.10,
    EFFUSION: 0.15,
}
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


@dataclass(frozen=True)
class Study:
    """One study's labels and how clearly each finding shows in its images."""

    labels: dict[str, int | None]  # observation -> 1, 0, -1 or None (blank)
    findings: dict[str, float]  # observation -> signature strength in [0, 1]


def choice(rng: np.random.Generator, table: Sequence[tuple[_T, float]]) -> _T:
    """An item of ``table``, drawn with probability proportional to its weight."""
    weights = np.array([w for _, w in table])
    return table[int(rng.choice(len(table), p=weights / weights.sum()))][0]


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


def _draw_labels(
    rng: np.random.Generator, profile: Profile, certain: bool
) -> dict[str, int | None]:
    """One study's labels; ``certain`` gives valid.csv's 0/1-only consensus labels."""
    blank = 0 if certain else None
    labels: dict[str, int | None] = {}
    normal = profile == _NORMAL_PROFILE
    positives = set() if isinstance(profile, str) else set(profile)
    draws = rng.random((len(PATHOLOGIES), 2))
    for name, (r_unc, r_neg) in zip(PATHOLOGIES, draws, strict=True):
        if name in positives:
            labels[name] = 1
        elif not normal and not certain and r_unc < _UNCERTAIN_RATE[name]:
            labels[name] = -1
        elif r_neg < _NEGATIVE_RATE[name] * (2 if normal else 1):
            labels[name] = 0
        else:
            labels[name] = blank
    others = _draw_others(rng, profile, positives, certain)
    labels.update(others)
    mentioned = any(labels[o] in (1, -1) for o in (*PATHOLOGIES, *_OTHERS) if o != SUPPORT_DEVICES)
    labels[NORMAL_COLUMN] = (0 if certain else None) if mentioned else 1
    return {o: labels[o] for o in OBSERVATIONS}


def _draw_others(
    rng: np.random.Generator, profile: Profile, positives: set[str], certain: bool
) -> dict[str, int | None]:
    blank = 0 if certain else None
    if profile == _NORMAL_PROFILE:
        r = rng.random(3)
        others: dict[str, int | None] = dict.fromkeys(_OTHERS, blank)
        others["Pneumothorax"] = 0 if r[0] < 0.35 else blank
        others["Enlarged Cardiomediastinum"] = 0 if r[1] < 0.15 else blank
        others[SUPPORT_DEVICES] = 1 if r[2] < 0.35 else (0 if r[2] < 0.38 else blank)
        return others
    others = {name: _draw_other(rng, name, positives, certain) for name in _OTHERS}
    forced = choice(rng, _OTHER_FORCED)
    if profile == _OTHER_PROFILE and not any(
        others[o] in (1, -1) for o in _OTHERS if o != SUPPORT_DEVICES
    ):
        others[forced] = 1
    return others


def draw_study(rng: np.random.Generator, profile: Profile, certain: bool) -> Study:
    """One study of ``profile``; ``certain`` gives valid.csv's 0/1-only consensus labels."""
    labels = _draw_labels(rng, profile, certain)
    strengths = {o: _strength(rng, labels[o]) for o in OBSERVATIONS}
    findings = {o: s for o, s in strengths.items() if s > 0 and o != NORMAL_COLUMN}
    # An isolated "Lung Opacity" gets its own faint patch; alongside a named opacity
    # the named finding is the opacity.
    if any(labels[o] == 1 for o in _OPACITIES):
        findings.pop("Lung Opacity", None)
    return Study(labels=labels, findings=findings)
