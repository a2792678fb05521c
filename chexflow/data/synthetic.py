"""A synthetic dataset in the exact CheXpert-v1.0-small format.

`write_synthetic` writes a dataset root that a loader cannot tell from the real release:
``train.csv`` and ``valid.csv`` with CheXpert's 19 columns and value vocabulary, and
``{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`` grayscale JPEGs that
look like chest radiographs (`chexflow.data.radiograph`), with per-patient anatomy
(size, position, rotation, heart size, exposure) that a patient's studies share. Each
study's labels and the strength of its findings' signatures come from the label model
in `chexflow.data.synthetic_labels`, fitted to the real train set's statistics
(`chexflow.data.reference_stats`): prevalence, uncertainty, blanks, co-occurrence and
repeat rates between a patient's consecutive studies. The rest of the layout follows the
same reference: studies per patient (heavy-tailed: 1 for half the patients, 2.9 on
average, ~50 at most among 3,000 patients and 91 among the release's 64,540), images
per study (1-3), AP share of frontal views, sex; ages are 18-90 (90 is CheXpert's cap),
and the first patients carry the release's one-offs (Sex Unknown, Age 0, a frontal view
marked LL).
`chexflow.data.label_stats` measures a written ``train.csv`` with the reference's
definitions.

Everything is deterministic for a seed: each patient draws from its own
`numpy.random.SeedSequence` child (keyed by split and patient index), so a patient's
studies and images do not depend on how many patients are written or in what order.
Files are byte-identical for the same seed and arguments given the same numpy and
Pillow (libjpeg) builds.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from chexflow.data.labels import CHEXPERT_COLUMNS, OBSERVATIONS
from chexflow.data.radiograph import Anatomy, View, render_radiograph, sample_anatomy, vary_anatomy
from chexflow.data.reference_stats import CHEXPERT_TRAIN_STATS
from chexflow.data.synthetic_labels import choice, draw_study, label_model
from chexflow.errors import DataError

SYNTH_PREFIX = "CheXpert-v1.0-small"
JPEG_QUALITY = 90
# Rendering is pure numpy/PIL per image (~3.4 ms at 64 px on this project's 2-core machine):
# from this many images on, worker processes render in parallel (spawned: ~1 s to start).
PARALLEL_MIN_IMAGES = 1000
RENDER_CHUNK = 64  # images per task sent to a worker

# Patients, studies and views, from the reference's counts. Studies hold 1-3 images:
# a frontal view, a frontal and a lateral, two frontals, or two frontals and a lateral
# (the release has no more laterals than the 2- and 3-image studies account for, so
# no lateral-only studies are drawn).
_REF = CHEXPERT_TRAIN_STATS
_PER_STUDY = {int(k): v / _REF["studies"] for k, v in _REF["images_per_study"].items()}
_TWO_FRONTALS = (_REF["studies_with_2plus_frontal"] - _REF["images_per_study"]["3"]) / _REF[
    "images_per_study"
]["2"]
_VIEW_SETS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("frontal",), _PER_STUDY[1]),
    (("frontal", "lateral"), _PER_STUDY[2] * (1 - _TWO_FRONTALS)),
    (("frontal", "frontal"), _PER_STUDY[2] * _TWO_FRONTALS),
    (("frontal", "frontal", "lateral"), _PER_STUDY[3]),
)
_AP_RATE = _REF["ap_share_of_frontal"]
_MALE = _REF["sex"]["Male"] / (_REF["sex"]["Male"] + _REF["sex"]["Female"])
_AGE_MEAN, _AGE_SD, _AGE_MIN, _AGE_CAP = 61, 17, 18, int(_REF["age"]["max"])
_AGE_STEP = 0.3  # chance that a patient is a year older at the next study
# One-offs of the release planted in the first train patients, so every dataset (and
# the loader, the splits and the fractions) meets them: Sex "Unknown", Age 0, and a
# frontal view whose AP/PA is "LL".
_UNKNOWN_SEX_PATIENT, _AGE_ZERO_PATIENT, _LL_PATIENT = 0, 1, 2

_CELL = {1: "1.0", 0: "0.0", -1: "-1.0", None: ""}


@dataclass(frozen=True, eq=False)
class ImageSpec:
    """One image to render, and its CSV row."""

    path: str  # relative to the dataset root, e.g. train/patient00001/study1/view1_frontal.jpg
    sex: str
    age: int
    view: View
    ap_pa: str  # as written in the CSV: AP, PA, LL, ... ("" for lateral views)
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
            self.ap_pa,
            *(_CELL[self.labels[o]] for o in OBSERVATIONS),
        ]


_SPLITS = {"train": 0, "valid": 1}


def patient_images(seed: int, split: str, index: int, number: int) -> list[ImageSpec]:
    """All images of one patient, from the patient's own random stream."""
    code = _SPLITS[split]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(code, index, 0)))
    certain = split == "valid"
    train = split == "train"
    model = label_model()
    sex = "Male" if rng.random() < _MALE else "Female"
    if train and index == _UNKNOWN_SEX_PATIENT:
        sex = "Unknown"
    age = int(np.clip(round(rng.normal(_AGE_MEAN, _AGE_SD)), _AGE_MIN, _AGE_CAP))
    anatomy = sample_anatomy(rng, sex)
    n_studies = 1 if certain else model.n_studies(rng)
    images: list[ImageSpec] = []
    state = model.first_state(rng)
    for study in range(1, n_studies + 1):
        if study > 1:
            age = min(_AGE_CAP, age + int(rng.random() < _AGE_STEP))
            state = model.next_state(rng, state)
        drawn = draw_study(rng, state, certain, model)
        study_anatomy = vary_anatomy(rng, anatomy)
        kinds = choice(rng, _VIEW_SETS)
        ap = rng.random(len(kinds)) < _AP_RATE
        for n_view, (kind, is_ap) in enumerate(zip(kinds, ap, strict=True), start=1):
            view: View = "lateral" if kind == "lateral" else ("AP" if is_ap else "PA")
            ap_pa = "" if kind == "lateral" else view
            if train and index == _LL_PATIENT and study == 1 and n_view == 1:
                ap_pa = "LL"
            images.append(
                ImageSpec(
                    path=f"{split}/patient{number:05d}/study{study}/view{n_view}_{kind}.jpg",
                    sex=sex,
                    age=0 if train and index == _AGE_ZERO_PATIENT else age,
                    view=view,
                    ap_pa=ap_pa,
                    labels=drawn.labels,
                    findings=drawn.findings,
                    anatomy=study_anatomy,
                    key=(code, index, 1, study, n_view),
                )
            )
    return images


def _plan(seed: int, patients: int, valid_patients: int) -> dict[str, list[ImageSpec]]:
    train = [im for i in range(patients) for im in patient_images(seed, "train", i, i + 1)]
    valid = [
        im
        for j in range(valid_patients)
        for im in patient_images(seed, "valid", j, patients + j + 1)
    ]
    return {"train": train, "valid": valid}


def _render(spec: ImageSpec, seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spec.key))
    image = render_radiograph(rng, spec.anatomy, spec.findings, size, view=spec.view)
    return (image * 255.0 + 0.5).astype(np.uint8)


def _write_rows(path: Path, rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CHEXPERT_COLUMNS)
        writer.writerows(rows)


def write_synthetic_csv(path: Path, patients: int, seed: int = 0) -> Path:
    """Write only the ``train.csv`` that `write_synthetic` would write, without images.

    Labels, studies and views are drawn without rendering (3,000 patients: ~4 s of CPU),
    for measuring the label model (`chexflow.data.label_stats`).

    Raises:
        DataError: ``patients`` < 1 or ``seed`` < 0.
    """
    _check_counts(patients, seed)
    path = Path(path)
    _write_rows(path, [im.row() for im in _plan(seed, patients, 0)["train"]])
    return path


def _check_counts(patients: int, seed: int) -> None:
    if patients < 1:
        raise DataError(f"patients must be at least 1, got {patients}")
    if seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed}")


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
    workers: int | None = None,
) -> Path:
    """Write a synthetic CheXpert-v1.0-small dataset root and return it (``out``).

    Args:
        out: The dataset root to create; it must not exist or be empty. Files are written
            to a temporary sibling and renamed at the end, so a failure leaves nothing.
        patients: Patients in ``train.csv`` (1-91 studies each, 2.9 on average; ~1.2
            images per study).
        image_size: Square image side in pixels.
        seed: Same seed and arguments give byte-identical files.
        valid_patients: Patients in ``valid.csv`` (one study each, labels 0/1 only,
            numbered after the train patients); default ``patients // 10`` within
            [1, 200].
        progress: Show a progress bar over images (on a terminal only).
        workers: Processes that render (`write_dataset`); default the usable cores.
    """
    out = Path(out)
    _check_counts(patients, seed)
    if valid_patients is None:
        valid_patients = min(200, max(1, patients // 10))
    if valid_patients < 1:
        raise DataError(f"valid patients must be at least 1, got {valid_patients}")
    check_image_size(image_size)
    plan = _plan(seed, patients, valid_patients)
    tables = {split: [im.row() for im in images] for split, images in plan.items()}
    images = [im for split_images in plan.values() for im in split_images]
    return write_dataset(out, tables, images, seed, image_size, progress=progress, workers=workers)


def check_image_size(image_size: int) -> None:
    """Refuse an image side the renderer cannot draw well (`DataError`)."""
    if not 16 <= image_size <= 1024:
        raise DataError(f"image size must be between 16 and 1024 pixels, got {image_size}")


def write_dataset(
    out: Path,
    tables: Mapping[str, Sequence[Sequence[str]]],
    images: Sequence[ImageSpec],
    seed: int,
    image_size: int,
    *,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write ``{split}.csv`` for each of ``tables`` (rows under CheXpert's header) and render
    ``images``, into a temporary sibling of ``out`` renamed to ``out`` at the end.

    Each image is drawn from its own random stream (``ImageSpec.key``), so the files are
    the same whichever process renders them: ``workers`` processes (default: the usable
    cores, at most 8) share the work from ``PARALLEL_MIN_IMAGES`` images on; ``workers=1``
    renders in this process.

    Raises:
        DataError: ``out`` exists and is not an empty folder (checked before writing).
    """
    out = Path(out)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for split, rows in tables.items():
            _write_rows(tmp / f"{split}.csv", rows)
        with tqdm(
            total=len(images), desc="synthetic images", unit="img", disable=_bar_off(progress)
        ) as bar:
            for done in _render_all(tmp, images, seed, image_size, workers):
                bar.update(done)
        _check_target(out)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _bar_off(progress: bool) -> bool | None:
    """tqdm's ``disable``: off when not asked for; when asked, on only if stderr is a terminal
    (``None`` is tqdm's own TTY check), so logs and redirected output stay clean."""
    return None if progress else True


def _render_chunk(root: Path, specs: Sequence[ImageSpec], seed: int, size: int) -> int:
    """Render and save ``specs`` under ``root``; the number written."""
    for spec in specs:
        target = root / spec.path
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_render(spec, seed, size)).save(target, format="JPEG", quality=JPEG_QUALITY)
    return len(specs)


def _render_all(
    root: Path, images: Sequence[ImageSpec], seed: int, size: int, workers: int | None
) -> Iterator[int]:
    """Render ``images`` under ``root``, yielding how many each finished chunk wrote."""
    if workers is None:
        workers = min(8, len(os.sched_getaffinity(0)))
    chunks = [images[i : i + RENDER_CHUNK] for i in range(0, len(images), RENDER_CHUNK)]
    if workers <= 1 or len(images) < PARALLEL_MIN_IMAGES:
        for chunk in chunks:
            yield _render_chunk(root, chunk, seed, size)
        return
    # spawn, not fork: the caller may hold torch's or a logging thread's locks
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_render_chunk, root, chunk, seed, size) for chunk in chunks]
        try:
            for future in futures:
                yield future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
