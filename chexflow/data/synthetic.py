"""A synthetic dataset in the exact CheXpert-v1.0-small format.

`write_synthetic` writes a dataset root that a loader cannot tell from the real release:
``train.csv`` and ``valid.csv`` with CheXpert's 19 columns and value vocabulary, and
``{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`` grayscale JPEGs that
look like chest radiographs (`chexflow.data.radiograph`), with per-patient anatomy
(size, position, rotation, heart size, exposure) that a patient's studies share. Each
study's labels and the strength of its findings' signatures come from the label model
in `chexflow.data.synthetic_labels`; a follow-up study often repeats the previous
study's profile.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from chexflow.data.labels import CHEXPERT_COLUMNS, OBSERVATIONS
from chexflow.data.radiograph import Anatomy, View, render_radiograph, sample_anatomy, vary_anatomy
from chexflow.data.synthetic_labels import PROFILES, choice, draw_study
from chexflow.errors import DataError

SYNTH_PREFIX = "CheXpert-v1.0-small"
JPEG_QUALITY = 90

# Patients, studies and views
_STUDIES_PER_PATIENT = (0.42, 0.25, 0.15, 0.09, 0.05, 0.04)  # 1..6 studies
_REPEAT_PROFILE = 0.4  # a follow-up study often shows the same findings again
_LATERAL_RATE = 0.18
_LATERAL_ONLY_RATE = 0.02
_AP_RATE = 0.82
_SEX = (("Male", 0.59), ("Female", 0.405), ("Unknown", 0.005))

_CELL = {1: "1.0", 0: "0.0", -1: "-1.0", None: ""}


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
    sex = choice(rng, _SEX)
    age = int(np.clip(round(rng.normal(61, 17)), 18, 90))
    anatomy = sample_anatomy(rng, sex)
    n_studies = (
        1 if certain else 1 + int(rng.choice(len(_STUDIES_PER_PATIENT), p=_STUDIES_PER_PATIENT))
    )
    images: list[_ImageSpec] = []
    profile = choice(rng, PROFILES)
    for study in range(1, n_studies + 1):
        if study > 1:
            age += int(rng.random() < 0.4)
            if rng.random() >= _REPEAT_PROFILE:
                profile = choice(rng, PROFILES)
        drawn = draw_study(rng, profile, certain)
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
