"""Real label rows, synthetic pixels: render an image for every row of a CheXpert CSV.

`write_synthetic_from_labels` takes a CheXpert-format CSV (the release's ``train.csv``,
or the copy torchxrayvision's wheel ships as ``torchxrayvision/data/chexpert_train.csv.gz``)
and writes a dataset root whose ``train.csv`` holds the input rows, value for value
(all 19 columns as written: blanks, ``0.0``, ``1.0``, ``-1.0``, sexes such as ``Unknown``,
ages such as 0, AP/PA such as ``LL``), and whose images are rendered by
`chexflow.data.radiograph` from each row's labels: the patient's anatomy is shared by
its studies, positive findings show clearly and uncertain ones faintly, as in
`chexflow.data.synthetic`. Frontal rows whose AP/PA is neither AP nor PA (``LL``,
``RL``, blank) are drawn as PA films. ``valid.csv`` is the generator's: consensus
(0/1) labels for ``min(200, patients // 10)`` (at least 1) patients numbered after the
input's highest patient number.

So the whole pipeline runs on the real label structure (its uncertainty, blanks,
co-occurrence and studies per patient) without the release's images.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from chexflow.data.chexpert import read_split
from chexflow.data.labels import CHEXPERT_COLUMNS, OBSERVATIONS
from chexflow.data.radiograph import Anatomy, View, sample_anatomy, vary_anatomy
from chexflow.data.synthetic import (
    ImageSpec,
    check_image_size,
    patient_images,
    write_dataset,
)
from chexflow.data.synthetic_labels import findings_of
from chexflow.errors import DataError
from chexflow.files import missing_file

_OPENERS: dict[str, Callable[..., IO[bytes]]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
_NUMBERS = re.compile(r"patient(\d+)/study(\d+)/view(\d+)_(frontal|lateral)\.jpg$")
_RELABEL_STREAM = 2  # SeedSequence key space apart from the generator's train (0) and valid (1)


def write_synthetic_from_labels(
    csv_path: Path,
    out: Path,
    patients: int | None = None,
    seed: int = 0,
    image_size: int = 128,
    *,
    progress: bool = True,
) -> Path:
    """Write a dataset root with ``csv_path``'s rows and synthetic images; return ``out``.

    Args:
        csv_path: A CheXpert-format CSV of ``train/`` images (plain, or ``.gz``, ``.bz2``
            or ``.xz`` compressed).
        out: The dataset root to create; it must not exist or be empty. Nothing is
            written before the input is validated, and a failure leaves nothing.
        patients: Keep a random sample of this many patients (all their rows, in input
            order); default all.
        seed: Seeds the patient sample, the images and valid.csv.
        image_size: Square image side in pixels (16-1024).
        progress: Show a progress bar over images.

    Raises:
        DataError: (one line) the CSV is missing or not CheXpert-format (the message
            names its file, line and column), it asks for more patients than the CSV
            holds, an argument is out of range, or ``out`` is not empty.
    """
    csv_path, out = Path(csv_path), Path(out)
    check_image_size(image_size)
    if seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed}")
    if patients is not None and patients < 1:
        raise DataError(f"patients must be at least 1, got {patients}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not empty; choose a new directory")
    frame, rows = read_label_rows(csv_path)
    keep = _sample_patients(csv_path, frame, patients, seed)
    frame = frame[keep].reset_index(drop=True)
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    images = _image_specs(frame, seed)
    highest = max(int(m.group(1)) for m in map(_NUMBERS.search, frame["path"]) if m)
    n_valid = min(200, max(1, frame["patient"].nunique() // 10))
    valid = [im for j in range(n_valid) for im in patient_images(seed, "valid", j, highest + j + 1)]
    tables = {"train": rows, "valid": [im.row() for im in valid]}
    return write_dataset(out, tables, [*images, *valid], seed, image_size, progress=progress)


def read_label_rows(csv_path: Path) -> tuple[pd.DataFrame, list[list[str]]]:
    """The validated canonical frame of a CheXpert CSV and its rows as written (19 columns).

    Validation is `chexflow.data.chexpert.read_split`'s; errors name ``csv_path``.

    Raises:
        DataError: the file is missing or not a CheXpert-format CSV of ``train/`` images.
    """
    csv_path = Path(csv_path)
    if (problem := missing_file(csv_path)) is not None:
        raise DataError(f"{csv_path} {problem}; pass a CheXpert-format CSV such as train.csv")
    with tempfile.TemporaryDirectory(prefix="chexflow-labels-") as tmp:
        plain = Path(tmp) / "train.csv"
        opener = _OPENERS.get(csv_path.suffix.lower())
        try:
            if opener is None:
                plain.symlink_to(csv_path.resolve())
            else:
                with opener(csv_path, "rb") as source, plain.open("wb") as target:
                    shutil.copyfileobj(source, target)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise DataError(f"{csv_path}: cannot decompress ({exc})") from exc
        try:
            frame = read_split(Path(tmp), "train")
        except DataError as exc:
            raise DataError(str(exc).replace(str(plain), str(csv_path))) from None
        rows = _text_rows(plain)
    if len(rows) != len(frame):  # pragma: no cover - both readers skip the same blank lines
        raise RuntimeError(f"{csv_path}: {len(rows)} text rows but {len(frame)} parsed rows")
    return frame, rows


def _text_rows(path: Path) -> list[list[str]]:
    """The 19 CheXpert columns of every non-blank row, as written."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        index = [header.index(name) for name in CHEXPERT_COLUMNS]
        return [[row[i] for i in index] for row in reader if any(cell != "" for cell in row)]


def count_patients(csv_path: Path) -> int:
    """Distinct patients named by the ``Path`` column of a CheXpert CSV (0 if none parse).

    A cheap pre-count (no validation: `write_synthetic_from_labels` validates), so a caller
    can ask for ``min(wanted, count_patients(csv))`` patients.

    Raises:
        DataError: the file cannot be read or decompressed.
    """
    csv_path = Path(csv_path)
    opener = _OPENERS.get(csv_path.suffix.lower(), open)
    patients: set[str] = set()
    try:
        with opener(csv_path, "rt", newline="", encoding="utf-8-sig") as handle:
            for row in csv.reader(handle):
                match = _NUMBERS.search(row[0]) if row else None
                if match:
                    patients.add(match.group(1))
    except (OSError, EOFError, UnicodeDecodeError, lzma.LZMAError) as exc:
        raise DataError(f"{csv_path}: cannot read ({exc})") from exc
    return len(patients)


def _sample_patients(
    csv_path: Path, frame: pd.DataFrame, patients: int | None, seed: int
) -> np.ndarray:
    """Which rows belong to a random sample of ``patients`` patients (all when None)."""
    everyone = np.unique(frame["patient"].to_numpy())
    if patients is None:
        return np.ones(len(frame), dtype=bool)
    if patients > len(everyone):
        raise DataError(
            f"{csv_path} has {len(everyone)} patients; ask for at most {len(everyone)} "
            f"(got --patients {patients})"
        )
    chosen = np.random.default_rng(seed).choice(everyone, size=patients, replace=False)
    return frame["patient"].isin(chosen).to_numpy()


def _image_specs(frame: pd.DataFrame, seed: int) -> list[ImageSpec]:
    """One render spec per row: anatomy per patient, varied per study, findings per study."""
    specs: list[ImageSpec] = []
    anatomies: dict[int, Anatomy] = {}
    studies: dict[tuple[int, int], Anatomy] = {}
    for row in frame.to_dict("records"):
        match = _NUMBERS.search(row["path"])
        assert match, row["path"]  # read_split validated the path
        patient, study, view_number = (int(g) for g in match.groups()[:3])
        lateral = match.group(4) == "lateral"
        if patient not in anatomies:
            anatomies[patient] = sample_anatomy(_stream(seed, patient, 0, 0), row["sex"])
        if (patient, study) not in studies:
            varied = vary_anatomy(_stream(seed, patient, study, 0), anatomies[patient])
            studies[patient, study] = varied
        labels = {o: None if np.isnan(row[o]) else int(row[o]) for o in OBSERVATIONS}
        view: View = "lateral" if lateral else ("AP" if row["ap_pa"] == "AP" else "PA")
        specs.append(
            ImageSpec(
                path=row["path"],
                sex=row["sex"],
                age=int(row["age"]),
                view=view,
                ap_pa=row["ap_pa"],
                labels=labels,
                # Rows of a study with the same labels draw the same finding strengths.
                findings=findings_of(_stream(seed, patient, study, 1), labels),
                anatomy=studies[patient, study],
                key=(_RELABEL_STREAM, patient, study, view_number, int(lateral)),
            )
        )
    return specs


def _stream(seed: int, patient: int, study: int, part: int) -> np.random.Generator:
    key = (_RELABEL_STREAM, patient, study, part)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
