"""A synthetic dataset in the exact CheXpert-v1.0-small format.

`write_synthetic` writes a dataset root that a loader cannot tell from the real release:
``train.csv`` and ``valid.csv`` with CheXpert's 19 columns and value vocabulary, and
``{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`` grayscale JPEGs that
look like chest radiographs: dark lung fields, a bright mediastinum and spine, the heart
shadow, diaphragm domes, ribs, clavicles, soft tissue and noise, with per-patient anatomy
(size, position, rotation, heart size, exposure) that a patient's studies share.

Each pathology leaves a visual signature whose strength varies from study to study:

- Cardiomegaly: a wider (and slightly taller) heart shadow.
- Pleural Effusion: a basal, meniscus-shaped opacity that blunts the costophrenic angle
  and, when large, hides the hemidiaphragm (one side or both).
- Edema: a diffuse bilateral perihilar haze with a reticular texture.
- Consolidation: a dense focal (lobar) opacity in one lung, sometimes bounded by a fissure.
  It shares Edema's texture and brightness and often lies perihilar; some edema is
  asymmetric and some consolidation multifocal, so the pair is intrinsically hard.
- Atelectasis: a plate-like linear band in a lower zone with volume loss (an elevated
  hemidiaphragm and a mediastinal shift towards that side).

Uncertain labels (``-1.0``) come with weak signatures (or none: the report hedged on
nothing visible). Lateral views are a different picture (side profile, single lung
field, retrosternal heart) with weaker signatures. Support devices (tubes, lines,
pacemakers), lung nodules, pneumothoraces, a widened mediastinum and faint isolated
opacities add realistic nuisance.

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
CheXpert's rates. A follow-up study often repeats the previous study's profile.

Difficulty, as calibrated: a timm ``resnet10t`` trained from scratch (64 px, 12
epochs, AdamW 1e-3, BCE on the 5 pathologies) on 3,000 synthetic patients reaches a
mean AUROC of ~0.56 on held-out patients with 1% of the patients and ~0.86 with 10%;
Edema and Pleural Effusion are the easiest, Atelectasis and Consolidation the hardest.

Everything is deterministic for a seed: each patient draws from its own
`numpy.random.SeedSequence` child (keyed by split and patient index), so a patient's
studies and images do not depend on how many patients are written or in what order.
Files are byte-identical for the same seed and arguments given the same numpy and
Pillow (libjpeg) builds.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from chexflow.data.labels import CHEXPERT_COLUMNS, NORMAL_COLUMN, OBSERVATIONS, PATHOLOGIES
from chexflow.errors import DataError

SYNTH_PREFIX = "CheXpert-v1.0-small"
JPEG_QUALITY = 90

View = Literal["PA", "AP", "lateral"]
_T = TypeVar("_T")

ATELECTASIS, CARDIOMEGALY, CONSOLIDATION, EDEMA, EFFUSION = PATHOLOGIES
_OTHERS: tuple[str, ...] = tuple(
    o for o in OBSERVATIONS if o not in PATHOLOGIES and o != NORMAL_COLUMN
)
SUPPORT_DEVICES = "Support Devices"

# Label model

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
_PROFILES: tuple[tuple[Profile, float], ...] = (
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

_STUDIES_PER_PATIENT = (0.42, 0.25, 0.15, 0.09, 0.05, 0.04)  # 1..6 studies
_REPEAT_PROFILE = 0.4  # a follow-up study often shows the same findings again
_LATERAL_RATE = 0.18
_LATERAL_ONLY_RATE = 0.02
_AP_RATE = 0.82
_SEX = (("Male", 0.59), ("Female", 0.405), ("Unknown", 0.005))

_CELL = {1: "1.0", 0: "0.0", -1: "-1.0", None: ""}


@dataclass(frozen=True)
class _Study:
    labels: dict[str, int | None]  # observation -> 1, 0, -1 or None (blank)
    findings: dict[str, float]  # observation -> signature strength in [0, 1]


def _choice(rng: np.random.Generator, table: Sequence[tuple[_T, float]]) -> _T:
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
    forced = _choice(rng, _OTHER_FORCED)
    if profile == _OTHER_PROFILE and not any(
        others[o] in (1, -1) for o in _OTHERS if o != SUPPORT_DEVICES
    ):
        others[forced] = 1
    return others


def _draw_study(rng: np.random.Generator, profile: Profile, certain: bool) -> _Study:
    labels = _draw_labels(rng, profile, certain)
    strengths = {o: _strength(rng, labels[o]) for o in OBSERVATIONS}
    findings = {o: s for o, s in strengths.items() if s > 0 and o != NORMAL_COLUMN}
    # An isolated "Lung Opacity" gets its own faint patch; alongside a named opacity
    # the named finding is the opacity.
    if any(labels[o] == 1 for o in _OPACITIES):
        findings.pop("Lung Opacity", None)
    return _Study(labels=labels, findings=findings)


# Anatomy


@dataclass(frozen=True, eq=False)
class Anatomy:
    """A patient's chest geometry and imaging conditions (normalised image units).

    The image spans [-1, 1] in both directions; ``v`` grows downwards and negative ``u``
    is the image's left (the patient's right).
    """

    scale: float = 1.0
    shift_u: float = 0.0
    shift_v: float = 0.0
    rotation: float = 0.0  # radians
    thorax_width: float = 1.0  # lateral stretch of the lungs
    lung_height: float = 0.68
    heart_width: float = 0.31  # half-width
    heart_height: float = 0.25
    heart_shift: float = 0.1  # towards the patient's left
    dome_right: float = 0.42  # level of the right hemidiaphragm's lateral end
    dome_left: float = 0.47
    dome_height: float = 0.12
    mediastinum: float = 0.1  # half-width
    body_width: float = 0.9
    rib_spacing: float = 0.14
    rib_phase: float = 0.0
    exposure: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.02
    texture: np.ndarray = field(default_factory=lambda: np.zeros((12, 12), np.float32))


def sample_anatomy(rng: np.random.Generator, sex: str = "Male") -> Anatomy:
    """A patient's anatomy; women are slightly smaller on average."""
    build = 0.96 if sex == "Female" else 1.0
    n = rng.standard_normal(20)
    return Anatomy(
        scale=float(np.clip(build * (1.0 + 0.05 * n[0]), 0.85, 1.12)),
        shift_u=float(0.03 * n[1]),
        shift_v=float(0.03 * n[2]),
        rotation=float(np.deg2rad(2.5) * n[3]),
        thorax_width=float(np.clip(1.0 + 0.05 * n[4], 0.88, 1.12)),
        lung_height=float(np.clip(0.68 + 0.03 * n[5], 0.6, 0.76)),
        heart_width=float(np.clip(0.31 + 0.018 * n[6], 0.27, 0.35)),
        heart_height=float(np.clip(0.25 + 0.015 * n[7], 0.21, 0.29)),
        heart_shift=float(0.1 + 0.02 * n[8]),
        dome_right=float(0.42 + 0.03 * n[9]),
        dome_left=float(0.47 + 0.03 * n[10]),
        dome_height=float(np.clip(0.12 + 0.02 * n[11], 0.07, 0.17)),
        mediastinum=float(np.clip(0.1 + 0.01 * n[12], 0.08, 0.12)),
        body_width=float(np.clip(0.9 + 0.04 * n[13], 0.8, 0.98)),
        rib_spacing=float(np.clip(0.14 + 0.008 * n[14], 0.12, 0.16)),
        rib_phase=float(rng.uniform(0, 1)),
        exposure=float(np.clip(1.0 + 0.12 * n[15], 0.75, 1.3)),
        brightness=float(0.04 * n[16]),
        gamma=float(np.clip(1.0 + 0.12 * n[17], 0.75, 1.3)),
        noise=float(np.clip(0.02 + 0.005 * n[18], 0.01, 0.035)),
        texture=rng.standard_normal((12, 12)).astype(np.float32),
    )


def vary_anatomy(rng: np.random.Generator, anatomy: Anatomy) -> Anatomy:
    """The same patient on another day: positioning, inspiration and exposure change."""
    n = rng.standard_normal(6)
    breath = 0.025 * n[3]
    return replace(
        anatomy,
        shift_u=anatomy.shift_u + 0.015 * float(n[0]),
        shift_v=anatomy.shift_v + 0.015 * float(n[1]),
        rotation=anatomy.rotation + float(np.deg2rad(1.2) * n[2]),
        dome_right=anatomy.dome_right + breath,
        dome_left=anatomy.dome_left + breath,
        exposure=float(np.clip(anatomy.exposure * (1.0 + 0.05 * n[4]), 0.7, 1.35)),
        brightness=anatomy.brightness + 0.015 * float(n[5]),
    )


# Rendering. Coordinates: the image spans [-1, 1]; ``u`` across (negative = the image's
# left = the patient's right), ``v`` down. Intensities: 0 black (air), 1 white (bone).


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x across, y down) in [-1, 1]."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear interpolation from ``n_in`` cell centres onto ``n_out`` pixel centres."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    m.setflags(write=False)
    return m


def _upsample(cells: np.ndarray, size: int) -> np.ndarray:
    m = _interp_matrix(cells.shape[0], size)
    return m @ cells @ m.T


def _ramp(z: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 below ``-width/2``, 1 above ``width/2``, linear between."""
    return np.clip(z * (1.0 / width) + 0.5, 0.0, 1.0)


def _gauss(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float):
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def _side(x: float) -> float:
    return -1.0 if x < 0.5 else 1.0


@dataclass(frozen=True, eq=False)
class _Layout:
    """Where a study's findings sit. Always drawn in full, whatever the findings, so
    that one generator state gives the same noise with and without a finding."""

    effusion_sides: tuple[float, ...]
    effusion_balance: float  # strength of the second side of a bilateral effusion
    edema_weak_side: float
    edema_asymmetry: float
    foci: tuple[tuple[float, float, float, float], ...]  # consolidation (u, v, ru, rv)
    fissure: float | None  # a fissure bounding the main focus from above
    atelectasis_side: float
    plate: tuple[float, float, float]  # (|u|, v, angle)
    plates: int
    patch: tuple[float, float]  # isolated opacity
    nodule: tuple[float, float]
    pneumothorax_side: float
    device: int
    device_side: float
    mottle: np.ndarray  # [0, 1] texture shared by edema, consolidation and patches
    noise: np.ndarray


def _draw_layout(rng: np.random.Generator, size: int) -> _Layout:
    r = rng.random(24).tolist()  # plain floats keep the arrays float32
    perihilar = r[4] < 0.4  # consolidation often sits where edema does
    cu = 0.22 + 0.08 * r[5] if perihilar else 0.2 + 0.35 * r[5]
    cv = -0.05 + 0.1 * r[6] if perihilar else -0.4 + 0.7 * r[6]
    side = _side(r[3])
    foci = [(side * cu, cv, 0.11 + 0.06 * r[7], 0.12 + 0.08 * r[8])]
    if r[9] < 0.25:  # multifocal: a second, smaller focus, sometimes in the other lung
        other = side if r[10] < 0.5 else -side
        foci.append((other * (0.25 + 0.25 * r[11]), -0.2 + 0.5 * r[12], 0.08, 0.09))
    mottle = _upsample(rng.standard_normal((22, 22)).astype(np.float32), size)
    return _Layout(
        effusion_sides=(-1.0, 1.0) if r[0] < 0.5 else ((-1.0,) if r[0] < 0.75 else (1.0,)),
        effusion_balance=0.5 + 0.5 * r[1],
        edema_weak_side=_side(r[2]),
        edema_asymmetry=0.6 * r[13] if r[14] < 0.3 else 0.0,
        foci=tuple(foci),
        fissure=-0.05 + 0.15 * r[15] if r[16] < 0.5 else None,
        atelectasis_side=_side(r[17]),
        plate=(0.28 + 0.22 * r[18], 0.12 + 0.2 * r[19], 0.35 * (r[20] - 0.5)),
        plates=1 + int(r[21] < 0.35),
        patch=(_side(r[22]) * (0.3 + 0.2 * r[23]), -0.2 + 0.4 * r[1]),
        nodule=(_side(r[2]) * (0.25 + 0.3 * r[13]), -0.45 + 0.7 * r[19]),
        pneumothorax_side=_side(r[21]),
        device=int(3 * r[15]),
        device_side=_side(r[9]),
        mottle=np.clip(0.5 + 0.45 * mottle, 0.0, 1.0),
        noise=rng.standard_normal((size, size)).astype(np.float32),
    )


def _coordinates(anatomy: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates (u, v) of every pixel, after position, rotation and scale."""
    x, y = _grid(size)
    c, s = float(np.cos(anatomy.rotation)), float(np.sin(anatomy.rotation))
    dx, dy = x - anatomy.shift_u, y - anatomy.shift_v
    k = 1.0 / anatomy.scale
    return (c * dx + s * dy) * k, (c * dy - s * dx) * k


def _combine(layers: Sequence[np.ndarray], like: np.ndarray) -> np.ndarray:
    """Union of opacities in [0, 1]: each replaces a share of the air that is left."""
    clear = np.ones_like(like)
    for layer in layers:
        clear *= 1 - np.clip(layer, 0.0, 0.95)
    return 1 - clear


@dataclass(frozen=True, eq=False)
class _Chest:
    """A frontal view's geometry after volume loss: coordinates, domes, lungs."""

    u: np.ndarray
    v: np.ndarray
    shift: float  # mediastinal shift
    domes: dict[float, float]  # lateral level of each hemidiaphragm
    lungs: dict[float, np.ndarray]  # lung mask per side
    shapes: dict[float, np.ndarray]  # < 1 inside each lung's outline


def _chest(anatomy: Anatomy, findings: Mapping[str, float], layout: _Layout, size: int) -> _Chest:
    u, v = _coordinates(anatomy, size)
    atel, side = findings.get(ATELECTASIS, 0.0), layout.atelectasis_side
    shift = 0.04 * atel * side  # volume loss pulls the mediastinum towards the collapse
    domes = {-1.0: anatomy.dome_right, 1.0: anatomy.dome_left}
    if atel:
        domes[side] -= 0.04 + 0.1 * atel  # and lifts the hemidiaphragm
    lungs, shapes = {}, {}
    width = 0.3 * anatomy.thorax_width * (0.8 + 0.2 * np.clip(v + 0.6, 0, 1))
    for sigma in (-1.0, 1.0):
        du = u - (sigma * 0.4 * anatomy.thorax_width + shift)
        shape = (np.abs(du) / width) ** 2.4 + ((v + 0.1) / anatomy.lung_height) ** 2
        # Each dome is highest mid-lung and lowest at the costophrenic angle.
        dome = domes[sigma] - anatomy.dome_height * np.clip(1 - (du / (1.1 * width)) ** 2, 0, 1)
        medial = sigma * (u - shift) - anatomy.mediastinum - 0.03 * np.clip(v + 0.8, 0, 2)
        lungs[sigma] = _ramp(1 - shape, 0.12) * _ramp(dome - v, 0.02) * _ramp(medial, 0.03)
        shapes[sigma] = shape
    return _Chest(u=u, v=v, shift=shift, domes=domes, lungs=lungs, shapes=shapes)


def _heart(chest: _Chest, anatomy: Anatomy, cardiomegaly: float, ap: bool) -> np.ndarray:
    """The heart shadow; AP (portable, supine) films magnify it."""
    mag = 1.1 if ap else 1.0
    hw = anatomy.heart_width * mag * (1 + 0.45 * cardiomegaly)
    hh = anatomy.heart_height * mag * (1 + 0.12 * cardiomegaly)
    hu = anatomy.heart_shift + 0.03 * cardiomegaly + chest.shift
    hv = chest.domes[1.0] - anatomy.dome_height - 0.4 * hh
    return _ramp(1 - ((chest.u - hu) / hw) ** 2 - ((chest.v - hv) / hh) ** 2, 0.15)


def _effusion(chest: _Chest, strength: float, layout: _Layout) -> np.ndarray:
    """Basal fluid under a meniscus that rises laterally, blunting the costophrenic angle."""
    u, v = chest.u, chest.v
    fluid = np.zeros_like(u)
    for i, sigma in enumerate(layout.effusion_sides):
        s = strength * (layout.effusion_balance if i else 1.0)
        t = np.clip((sigma * u - 0.1) / 0.62, 0, 1)  # 0 medial .. 1 lateral
        top = chest.domes[sigma] - (0.05 + 0.4 * s) * (0.45 + 0.55 * t**2)
        fluid = np.maximum(fluid, 0.95 * _ramp(v - top, 0.05) * _ramp(sigma * u, 0.05))
    return fluid


def _edema(
    u: np.ndarray,
    v: np.ndarray,
    strength: float,
    layout: _Layout,
    hila: Sequence[float] = (-0.24, 0.24),
) -> np.ndarray:
    """Bilateral perihilar (bat-wing) haze with a reticular texture."""
    haze = np.zeros_like(u)
    for hilum in hila:
        weak = (hilum > 0) == (layout.edema_weak_side > 0)
        weight = 1 - layout.edema_asymmetry * weak
        haze += weight * _gauss(u, v, hilum, -0.02, 0.2, 0.26)
    return (0.15 + 0.4 * strength) * haze * (0.55 + 0.7 * layout.mottle)


def _consolidation(u: np.ndarray, v: np.ndarray, strength: float, layout: _Layout) -> np.ndarray:
    """Dense focal opacity with Edema's texture, sometimes bounded by a fissure."""
    dense = np.zeros_like(u)
    for i, (cu, cv, ru, rv) in enumerate(layout.foci):
        grow = (1 + 0.5 * strength) * (0.7 if i else 1.0)
        d = ((u - cu) / (ru * grow)) ** 2 + ((v - cv) / (rv * grow)) ** 2
        blob = _ramp(1 - d + 0.5 * (layout.mottle - 0.5), 0.5)
        if i == 0 and layout.fissure is not None and cv > layout.fissure:
            blob *= _ramp(v - layout.fissure - 0.1 * cu, 0.03)
        dense = np.maximum(dense, blob)
    return (0.45 + 0.45 * strength) * dense * (0.55 + 0.7 * layout.mottle)


def _atelectasis(chest: _Chest, strength: float, layout: _Layout) -> np.ndarray:
    """Plate-like bands in a lower zone; a retrocardiac wedge when the lobe collapses."""
    u, v, sigma = chest.u, chest.v, layout.atelectasis_side
    bu, bv, angle = layout.plate
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    bands = np.zeros_like(u)
    for k in range(layout.plates):
        du, dv = u - sigma * bu, v - bv - 0.09 * k
        along, across = ca * du + sa * dv, ca * dv - sa * du
        band = _ramp(0.012 + 0.022 * strength - np.abs(across), 0.012)
        bands = np.maximum(bands, band * _ramp(0.14 + 0.14 * strength - np.abs(along), 0.04))
    wedge = _ramp(sigma * u - 0.12, 0.05) * _ramp(0.34 - sigma * u + 0.5 * (v - 0.1), 0.05)
    wedge *= _ramp(v - 0.05, 0.1) * np.clip(strength - 0.5, 0, 0.5)
    return np.maximum(0.9 * bands, wedge)


def _pneumothorax(chest: _Chest, strength: float, layout: _Layout) -> np.ndarray:
    """An apical rim of air without lung markings."""
    side = layout.pneumothorax_side
    rim = _ramp(chest.shapes[side] - (0.8 - 0.4 * strength), 0.04) * _ramp(0.1 - chest.v, 0.3)
    return rim * chest.lungs[side]


def _device(u: np.ndarray, v: np.ndarray, layout: _Layout) -> np.ndarray:
    """A tube, a line, or a pacemaker with its lead: thin bright shapes."""
    s = layout.device_side
    if layout.device == 0:  # endotracheal tube, tip above the carina
        tube = (np.abs(u - 0.01 - 0.02 * v) < 0.012) & (v < -0.3)
        return 0.3 * tube.astype(np.float32)
    if layout.device == 1:  # central venous line from the subclavian vein
        line = np.abs(v + 0.6 - 0.9 * ((s * u - 0.05) / 0.5) ** 2) < 0.012
        return 0.28 * (line & (s * u > 0.03) & (s * u < 0.55)).astype(np.float32)
    box = (np.abs(u - 0.5 * s) < 0.07) & (np.abs(v + 0.6) < 0.05)
    lead = (np.abs(u - s * (0.5 - 0.45 * (v + 0.6) / 0.85)) < 0.01) & (v > -0.6) & (v < 0.25)
    return 0.45 * box.astype(np.float32) + 0.25 * lead.astype(np.float32)


def _bones(chest: _Chest, anatomy: Anatomy, air: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Spine through the mediastinum, posterior ribs over the lungs, clavicles."""
    u, v = chest.u, chest.v
    au = np.abs(u)
    spine = _ramp(0.065 - np.abs(u - 0.5 * chest.shift), 0.02) * (0.85 + 0.15 * np.cos(v * 57.0))
    phase = (v - 0.25 * au + 0.45 * u**2) / anatomy.rib_spacing - anatomy.rib_phase
    ribs = _ramp(np.cos(2 * np.pi * phase) - 0.35, 0.5)
    thorax = _ramp(0.8 * anatomy.thorax_width - au, 0.05) * _ramp(0.35 - v, 0.1)
    clavicles = _ramp(0.03 - np.abs(v + 0.72 - 0.22 * au), 0.02) * _ramp(0.55 - au, 0.1)
    return (
        0.07 * spine * body
        + (0.03 + 0.05 * air) * ribs * thorax * _ramp(au - 0.05, 0.05)
        + 0.12 * clavicles * _ramp(au - 0.04, 0.04)
    )


def _frontal_opacity(chest: _Chest, findings: Mapping[str, float], layout: _Layout) -> np.ndarray:
    """Everything that replaces air in the lungs, combined."""
    u, v = chest.u, chest.v
    layers: list[np.ndarray] = []
    if strength := findings.get(EFFUSION, 0.0):
        layers.append(_effusion(chest, strength, layout))
    if strength := findings.get(EDEMA, 0.0):
        layers.append(_edema(u, v, strength, layout))
    if strength := findings.get(CONSOLIDATION, 0.0):
        layers.append(_consolidation(u, v, strength, layout))
    if strength := findings.get(ATELECTASIS, 0.0):
        layers.append(_atelectasis(chest, strength, layout))
    if strength := findings.get("Lung Opacity", 0.0):
        pu, pv = layout.patch
        patch = _gauss(u, v, pu, pv, 0.16, 0.18) * (0.55 + 0.7 * layout.mottle)
        layers.append(0.35 * strength * patch)
    if strength := findings.get("Lung Lesion", 0.0):
        nu, nv = layout.nodule
        r2 = ((u - nu) ** 2 + (v - nv) ** 2) / (0.03 + 0.04 * strength) ** 2
        layers.append(0.9 * _ramp(1 - r2, 0.6))
    return _combine(layers, u)


def _frontal(
    anatomy: Anatomy, findings: Mapping[str, float], layout: _Layout, size: int, ap: bool
) -> np.ndarray:
    f = findings.get
    chest = _chest(anatomy, findings, layout, size)
    u, v = chest.u, chest.v
    heart = _heart(chest, anatomy, f(CARDIOMEGALY, 0.0), ap)
    widen = 0.07 * f("Enlarged Cardiomediastinum", 0.0)
    upper_mediastinum = _ramp(0.12 + widen - np.abs(u - chest.shift), 0.03) * _ramp(-v - 0.1, 0.2)
    opacity = _frontal_opacity(chest, findings, layout)
    air = (chest.lungs[-1.0] + chest.lungs[1.0]) * (1 - 0.9 * heart) * (1 - upper_mediastinum)
    air *= 1 - opacity
    au = np.abs(u)
    body = _ramp(1 - (au / anatomy.body_width) ** 2.2 - np.abs((v - 0.05) / 1.15) ** 2.2, 0.08)
    image = body * (0.46 + 0.1 * _ramp(0.5 - au, 1.0)) - 0.4 * air  # thicker = brighter
    image += _bones(chest, anatomy, air, body)
    # Lung markings: vessels fanning out from the hila, absent in a pneumothorax.
    ptx = _pneumothorax(chest, f("Pneumothorax", 0.0), layout) if f("Pneumothorax") else 0.0
    hila = _gauss(au, v, 0.2, -0.05, 0.17, 0.17)
    markings = (0.05 * hila + 0.025) * _upsample(anatomy.texture, size) + 0.06 * hila
    image += markings * air * (1 - np.clip(3 * ptx, 0, 1)) - 0.08 * ptx
    if f(SUPPORT_DEVICES):
        image += _device(u, v, layout)
    return _finalise(image, anatomy, layout, 0.006 if ap else 0.0)


def _lateral(
    anatomy: Anatomy, findings: Mapping[str, float], layout: _Layout, size: int
) -> np.ndarray:
    """A side view: anterior on the image's left, the spine on the right. Overlapping
    structures dilute every signature."""
    u, v = _coordinates(anatomy, size)
    f = {name: 0.6 * s for name, s in findings.items()}.get
    level = 0.5 * (anatomy.dome_left + anatomy.dome_right) + 0.04
    body = _ramp(1 - (np.abs(u - 0.05) / 0.85) ** 2.4 - np.abs((v - 0.05) / 1.15) ** 2.4, 0.08)
    shape = ((u - 0.02) / 0.55) ** 2 + ((v + 0.08) / (anatomy.lung_height + 0.02)) ** 2
    dome = level - 0.18 * np.clip(1 - ((u - 0.05) / 0.6) ** 2, 0, 1) - 0.06 * _ramp(-u, 0.02)
    lung = _ramp(1 - shape, 0.1) * _ramp(dome - v, 0.02)
    hw = anatomy.heart_width * (1.05 + 0.45 * f(CARDIOMEGALY, 0.0))
    heart = _ramp(1 - ((u + 0.25 - 0.5 * (hw - 0.3)) / hw) ** 2 - ((v - 0.2) / 0.26) ** 2, 0.15)
    layers: list[np.ndarray] = []
    if strength := f(EFFUSION, 0.0):  # the posterior costophrenic sulcus fills first
        rise = 0.4 + 0.6 * np.clip((u - 0.05) / 0.55, 0, 1) ** 2
        top = level - (0.04 + 0.3 * strength) * rise
        layers.append(0.95 * _ramp(v - top, 0.05) * _ramp(u + 0.1, 0.1))
    if strength := f(EDEMA, 0.0):
        layers.append(_edema(u, v, strength, layout, hila=(0.1,)))
    if strength := f(CONSOLIDATION, 0.0):
        cu, cv, ru, rv = layout.foci[0]
        layers.append(
            _consolidation(u, v, strength, replace(layout, foci=((0.5 * cu + 0.05, cv, ru, rv),)))
        )
    opacity = _combine(layers, u)
    air = lung * (1 - 0.85 * heart) * (1 - opacity)
    if atel := f(ATELECTASIS, 0.0):
        _, bv, angle = layout.plate
        across = v - bv - float(np.tan(angle + 0.3)) * (u - 0.1)
        band = _ramp(0.012 + 0.02 * atel - np.abs(across), 0.012)
        air *= 1 - 0.9 * band * _ramp(0.3 - np.abs(u - 0.1), 0.05)
    image = 0.5 * body - 0.36 * air
    vertebrae = _ramp(0.09 - np.abs(u - 0.66), 0.02) * _ramp(np.cos(v * 40.0) + 0.6, 0.4)
    sternum = _ramp(0.015 - np.abs(u + 0.6 + 0.08 * v), 0.01) * _ramp(0.3 - v, 0.2)
    image += 0.14 * vertebrae * body + 0.1 * sternum
    image += 0.03 * _upsample(anatomy.texture, size) * air
    return _finalise(image, anatomy, layout, 0.004)


def _finalise(
    image: np.ndarray, anatomy: Anatomy, layout: _Layout, extra_noise: float
) -> np.ndarray:
    """Exposure, contrast curve and quantum noise."""
    image = (image - 0.35) * anatomy.exposure + 0.35 + anatomy.brightness
    image = np.clip(image, 0.0, 1.0) ** anatomy.gamma
    image = image + (anatomy.noise + extra_noise) * layout.noise
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def render_radiograph(
    rng: np.random.Generator,
    anatomy: Anatomy,
    findings: Mapping[str, float],
    size: int,
    *,
    view: View = "PA",
) -> np.ndarray:
    """Draw one radiograph as float32 ``[size, size]`` intensities in [0, 1].

    Args:
        rng: Source of the study's randomness (where findings sit, mottle, noise). The
            draws do not depend on ``findings``: the same generator state with and
            without a finding gives images that differ only where the finding shows.
        anatomy: The patient (see `sample_anatomy` and `vary_anatomy`).
        findings: Observation name -> signature strength in [0, 1]; missing means 0.
        size: Output height and width in pixels.
        view: ``PA`` or ``AP`` (magnified heart, noisier) frontal, or ``lateral``.
    """
    unknown = set(findings) - set(OBSERVATIONS)
    if unknown:
        raise ValueError(f"unknown findings {sorted(unknown)}; expected CheXpert observations")
    layout = _draw_layout(rng, size)
    if view == "lateral":
        return _lateral(anatomy, findings, layout, size)
    return _frontal(anatomy, findings, layout, size, ap=view == "AP")


# Patients, studies and the dataset on disk


@dataclass(frozen=True, eq=False)
class _ImageSpec:
    path: str  # relative to the dataset root, e.g. train/patient00001/study1/view1_frontal.jpg
    sex: str
    age: int
    view: View
    labels: Mapping[str, int | None]
    findings: Mapping[str, float]
    anatomy: Anatomy
    key: tuple[int, ...]  # SeedSequence spawn key of the image's render stream

    def row(self) -> list[str]:
        lateral = self.view == "lateral"
        return [
            f"{SYNTH_PREFIX}/{self.path}",
            self.sex,
            str(self.age),
            "Lateral" if lateral else "Frontal",
            "" if lateral else self.view,
            *(_CELL[self.labels[o]] for o in OBSERVATIONS),
        ]


_SPLITS = {"train": 0, "valid": 1}


def _patient_images(seed: int, split: str, index: int, number: int) -> list[_ImageSpec]:
    """All images of one patient, from the patient's own random stream."""
    code = _SPLITS[split]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(code, index, 0)))
    certain = split == "valid"
    sex = _choice(rng, _SEX)
    age = int(np.clip(round(rng.normal(61, 17)), 18, 90))
    anatomy = sample_anatomy(rng, sex)
    n_studies = (
        1 if certain else 1 + int(rng.choice(len(_STUDIES_PER_PATIENT), p=_STUDIES_PER_PATIENT))
    )
    images: list[_ImageSpec] = []
    profile = _choice(rng, _PROFILES)
    for study in range(1, n_studies + 1):
        if study > 1:
            age += int(rng.random() < 0.4)
            if rng.random() >= _REPEAT_PROFILE:
                profile = _choice(rng, _PROFILES)
        drawn = _draw_study(rng, profile, certain)
        study_anatomy = vary_anatomy(rng, anatomy)
        r = rng.random(3)
        views: list[View] = ["AP" if r[0] < _AP_RATE else "PA"]
        if r[1] < _LATERAL_ONLY_RATE and not certain:
            views = ["lateral"]
        elif r[2] < (0.15 if certain else _LATERAL_RATE):
            views.append("lateral")
        for n_view, view in enumerate(views, start=1):
            kind = "lateral" if view == "lateral" else "frontal"
            images.append(
                _ImageSpec(
                    path=f"{split}/patient{number:05d}/study{study}/view{n_view}_{kind}.jpg",
                    sex=sex,
                    age=age,
                    view=view,
                    labels=drawn.labels,
                    findings=drawn.findings,
                    anatomy=study_anatomy,
                    key=(code, index, 1, study, n_view),
                )
            )
    return images


def _plan(seed: int, patients: int, valid_patients: int) -> dict[str, list[_ImageSpec]]:
    train = [im for i in range(patients) for im in _patient_images(seed, "train", i, i + 1)]
    valid = [
        im
        for j in range(valid_patients)
        for im in _patient_images(seed, "valid", j, patients + j + 1)
    ]
    return {"train": train, "valid": valid}


def _render(spec: _ImageSpec, seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spec.key))
    image = render_radiograph(rng, spec.anatomy, spec.findings, size, view=spec.view)
    return (image * 255.0 + 0.5).astype(np.uint8)


def _write_csv(path: Path, images: Sequence[_ImageSpec]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CHEXPERT_COLUMNS)
        writer.writerows(im.row() for im in images)


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not empty; choose a new directory")


def write_synthetic(
    out: Path,
    patients: int = 2000,
    image_size: int = 128,
    seed: int = 0,
    *,
    valid_patients: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic CheXpert-v1.0-small dataset root and return it (``out``).

    Args:
        out: The dataset root to create; it must not exist or be empty. Files are written
            to a temporary sibling and renamed at the end, so a failure leaves nothing.
        patients: Patients in ``train.csv`` (1-6 studies each, ~2.2 on average; ~1.2
            images per study).
        image_size: Square image side in pixels.
        seed: Same seed and arguments give byte-identical files.
        valid_patients: Patients in ``valid.csv`` (one study each, labels 0/1 only,
            numbered after the train patients); default ``patients // 10`` within
            [1, 200].
        progress: Show a progress bar over images.
    """
    out = Path(out)
    if patients < 1:
        raise DataError(f"patients must be at least 1, got {patients}")
    if not 16 <= image_size <= 1024:
        raise DataError(f"image size must be between 16 and 1024 pixels, got {image_size}")
    if valid_patients is None:
        valid_patients = min(200, max(1, patients // 10))
    if valid_patients < 1:
        raise DataError(f"valid patients must be at least 1, got {valid_patients}")
    if seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed}")
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        plan = _plan(seed, patients, valid_patients)
        for split, images in plan.items():
            _write_csv(tmp / f"{split}.csv", images)
        all_images = [im for images in plan.values() for im in images]
        for spec in tqdm(all_images, desc="synthetic images", unit="img", disable=not progress):
            target = tmp / spec.path
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_render(spec, seed, image_size)).save(
                target, format="JPEG", quality=JPEG_QUALITY
            )
        _check_target(out)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
