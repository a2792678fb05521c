"""The synthetic CheXpert generator: format exactness, determinism, visual signatures."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexflow.data import radiograph, synthetic
from chexflow.data.labels import CHEXPERT_COLUMNS, OBSERVATIONS, PATHOLOGIES
from chexflow.data.radiograph import (
    Anatomy,
    View,
    render_radiograph,
    sample_anatomy,
    vary_anatomy,
)
from chexflow.data.synthetic import SYNTH_PREFIX, write_synthetic
from chexflow.errors import DataError

PATIENTS = 30
SIZE = 32
SEED = 3
PATH_RE = re.compile(
    rf"^{re.escape(SYNTH_PREFIX)}/(train|valid)/patient(\d{{5}})/study(\d+)/view(\d+)_(frontal|lateral)\.jpg$"
)
LABEL_VALUES = {"1.0", "0.0", "-1.0", ""}


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "CheXpert-v1.0-small"
    return write_synthetic(out, patients=PATIENTS, image_size=SIZE, seed=SEED, progress=False)


@pytest.fixture(scope="module")
def train(root: Path) -> list[dict[str, str]]:
    return read_rows(root / "train.csv")[1]


@pytest.fixture(scope="module")
def valid(root: Path) -> list[dict[str, str]]:
    return read_rows(root / "valid.csv")[1]


def test_header_is_chexperts(root: Path) -> None:
    for split in ("train", "valid"):
        header, _ = read_rows(root / f"{split}.csv")
        assert tuple(header) == CHEXPERT_COLUMNS
        assert (root / f"{split}.csv").read_text().splitlines()[0] == ",".join(CHEXPERT_COLUMNS)


def test_paths_match_the_tree(
    root: Path, train: list[dict[str, str]], valid: list[dict[str, str]]
) -> None:
    listed = set()
    for split, rows in (("train", train), ("valid", valid)):
        for row in rows:
            match = PATH_RE.match(row["Path"])
            assert match, row["Path"]
            assert match.group(1) == split
            assert match.group(5) == row["Frontal/Lateral"].lower()
            listed.add(row["Path"].removeprefix(f"{SYNTH_PREFIX}/"))
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.jpg")}
    assert listed == on_disk
    assert {p.name for p in root.iterdir()} == {"train", "valid", "train.csv", "valid.csv"}


def test_images_are_grayscale_jpegs(root: Path, train: list[dict[str, str]]) -> None:
    for row in train[:10]:
        with Image.open(root / row["Path"].removeprefix(f"{SYNTH_PREFIX}/")) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (SIZE, SIZE))
            assert np.asarray(image).std() > 20  # not blank


def test_value_vocabulary(train: list[dict[str, str]], valid: list[dict[str, str]]) -> None:
    for row in train + valid:
        assert row["Sex"] in {"Male", "Female", "Unknown"}
        assert row["Age"].isdigit() and 0 <= int(row["Age"]) <= 90
        assert row["Frontal/Lateral"] in {"Frontal", "Lateral"}
        expected = {"AP", "PA", "LL"} if row["Frontal/Lateral"] == "Frontal" else {""}
        assert row["AP/PA"] in expected
        assert {row[o] for o in OBSERVATIONS} <= LABEL_VALUES
    train_values = {row[o] for row in train for o in OBSERVATIONS}
    assert train_values == LABEL_VALUES
    assert {row[o] for row in valid for o in OBSERVATIONS} == {"1.0", "0.0"}


def test_no_finding_rule(train: list[dict[str, str]], valid: list[dict[str, str]]) -> None:
    findings = [o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices")]
    for rows, otherwise in ((train, ""), (valid, "0.0")):
        for row in rows:
            mentioned = any(row[o] in ("1.0", "-1.0") for o in findings)
            assert row["No Finding"] == (otherwise if mentioned else "1.0")
    assert any(row["No Finding"] == "1.0" for row in train)


def test_studies_views_and_patients(
    train: list[dict[str, str]], valid: list[dict[str, str]]
) -> None:
    def parts(row: dict[str, str]) -> tuple[int, int, int]:
        match = PATH_RE.match(row["Path"])
        assert match
        return int(match.group(2)), int(match.group(3)), int(match.group(4))

    train_ids = [parts(row) for row in train]
    studies = {(p, s) for p, s, _ in train_ids}
    assert {p for p, _ in studies} == set(range(1, PATIENTS + 1))
    assert max(sum(1 for q, _ in studies if q == p) for p in range(1, PATIENTS + 1)) >= 2
    assert any(row["Frontal/Lateral"] == "Lateral" for row in train)
    valid_ids = [parts(row) for row in valid]
    assert min(p for p, _, _ in valid_ids) == PATIENTS + 1  # numbered after train
    assert all(s == 1 for _, s, _ in valid_ids)  # one study each, like the real valid set
    # Rows are per image; a study's rows agree on its labels.
    by_study: dict[tuple[int, int], set[tuple[str, ...]]] = {}
    for row, (p, s, _) in zip(train, train_ids, strict=True):
        by_study.setdefault((p, s), set()).add(tuple(row[o] for o in OBSERVATIONS))
    assert all(len(labels) == 1 for labels in by_study.values())


def test_same_seed_same_bytes(root: Path, tmp_path: Path) -> None:
    again = write_synthetic(tmp_path / "again", PATIENTS, SIZE, SEED, progress=False)
    assert tree_digest(again) == tree_digest(root)


def test_other_seed_differs(root: Path, tmp_path: Path) -> None:
    other = write_synthetic(tmp_path / "other", PATIENTS, SIZE, SEED + 1, progress=False)
    assert (other / "train.csv").read_bytes() != (root / "train.csv").read_bytes()


def test_patients_do_not_depend_on_how_many(train: list[dict[str, str]]) -> None:
    plan = synthetic._plan(SEED, 5, 1)["train"]
    assert [spec.row() for spec in plan] == [
        [row[c] for c in CHEXPERT_COLUMNS] for row in train[: len(plan)]
    ]


def test_refuses_non_empty_target(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        write_synthetic(out, patients=2, image_size=SIZE, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fills_an_empty_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert write_synthetic(out, patients=2, image_size=SIZE, progress=True) == out
    assert (out / "train.csv").is_file()
    # stderr is not a terminal here: no bar (a redirected demo's log held 72 bar updates)
    assert capsys.readouterr().err == ""


def test_draws_its_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    write_synthetic(tmp_path / "data", patients=2, image_size=SIZE, progress=True)
    assert "synthetic images" in terminal.getvalue()


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> np.ndarray:
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_render", broken)
    with pytest.raises(RuntimeError):
        write_synthetic(tmp_path / "data", patients=2, image_size=SIZE, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("patients", "image_size", "valid_patients", "seed"),
    [(0, SIZE, None, 0), (2, 8, None, 0), (2, SIZE, 0, 0), (2, SIZE, None, -1)],
)
def test_rejects_bad_arguments(
    tmp_path: Path, patients: int, image_size: int, valid_patients: int | None, seed: int
) -> None:
    with pytest.raises(DataError):
        write_synthetic(
            tmp_path / "data", patients, image_size, seed, valid_patients=valid_patients
        )
    assert list(tmp_path.iterdir()) == []


def test_the_releases_one_offs_are_planted(train: list[dict[str, str]]) -> None:
    """Sex Unknown, Age 0 and a frontal view marked LL, each in one of the first patients."""
    assert {row["Path"].split("/")[2] for row in train if row["Sex"] == "Unknown"} == {
        "patient00001"
    }
    assert {row["Path"].split("/")[2] for row in train if row["Age"] == "0"} == {"patient00002"}
    marked = [row["Path"] for row in train if row["AP/PA"] == "LL"]
    assert marked == [f"{SYNTH_PREFIX}/train/patient00003/study1/view1_frontal.jpg"]
    assert all(18 <= int(row["Age"]) <= 90 for row in train if row["Age"] != "0")


# The label model's calibration against the real release: tests/test_synthetic_calibration.py.


def test_uncertain_signatures_are_weaker() -> None:
    specs = synthetic._plan(1, 400, 1)["train"]
    for name in PATHOLOGIES:
        certain = [s.findings.get(name, 0.0) for s in specs if s.labels[name] == 1]
        unsure = [s.findings.get(name, 0.0) for s in specs if s.labels[name] == -1]
        assert np.mean(unsure) < 0.5 * np.mean(certain), name


# Visual signatures, measured on the renderer. The same generator seed with and without a
# finding draws the same layout and noise, so differences come from the finding alone.


def render(
    findings: Mapping[str, float],
    seed: int = 0,
    anatomy: Anatomy | None = None,
    view: View = "PA",
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render_radiograph(rng, anatomy or Anatomy(), findings, 64, view=view)


def region(image: np.ndarray, u: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    """Pixels of the default anatomy's (u, v) box; u, v in [-1, 1]."""
    n = image.shape[0]
    cols = slice(int((u[0] + 1) / 2 * n), int((u[1] + 1) / 2 * n))
    rows = slice(int((v[0] + 1) / 2 * n), int((v[1] + 1) / 2 * n))
    return image[rows, cols]


def test_render_is_deterministic_and_bounded() -> None:
    a = render({"Edema": 0.7}, seed=5)
    assert a.dtype == np.float32 and a.shape == (64, 64)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.array_equal(a, render({"Edema": 0.7}, seed=5))
    with pytest.raises(ValueError, match="unknown findings"):
        render({"Pneumonitis": 1.0})


def test_a_patients_studies_share_anatomy() -> None:
    same, other = [], []
    for k in range(6):
        patient = sample_anatomy(np.random.default_rng(k))
        stranger = sample_anatomy(np.random.default_rng(100 + k))
        follow_up = vary_anatomy(np.random.default_rng(200 + k), patient)
        first = render({}, k, patient)
        same.append(np.abs(render({}, 50 + k, follow_up) - first).mean())
        other.append(np.abs(render({}, 50 + k, stranger) - first).mean())
    assert np.mean(same) < 0.7 * np.mean(other)


def test_lungs_dark_mediastinum_bright() -> None:
    image = render({})
    lungs = region(image, (-0.6, -0.3), (-0.4, 0.1)).mean()
    assert region(image, (-0.05, 0.05), (-0.6, -0.2)).mean() > lungs + 0.15
    assert region(image, (-0.5, 0.5), (0.7, 0.9)).mean() > lungs + 0.15  # abdomen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_effusion_fills_the_lung_bases(seed: int) -> None:
    anatomy = sample_anatomy(np.random.default_rng(seed))
    before, after = render({}, seed, anatomy), render({"Pleural Effusion": 1.0}, seed, anatomy)
    diff = after - before
    bases = (
        region(diff, (-0.7, -0.3), (0.1, 0.5)).mean(),
        region(diff, (0.3, 0.7), (0.1, 0.5)).mean(),
    )
    assert max(bases) > 0.05
    assert np.abs(diff[:32]).max() < 1e-6  # upper half untouched


def test_cardiomegaly_widens_the_heart() -> None:
    def heart_width(image: np.ndarray) -> int:
        """The bright run through the image centre at v = 0.2 (heart level, above the domes)."""
        bright = image[38] > 0.33
        left = right = 32
        while bright[left - 1]:
            left -= 1
        while bright[right + 1]:
            right += 1
        return right - left

    normal, big = render({}), render({"Cardiomegaly": 1.0})
    assert 12 <= heart_width(normal) <= 24
    assert heart_width(big) >= heart_width(normal) + 6
    assert np.abs(big - normal)[:20].max() < 1e-6  # nothing changes at the apices


def test_edema_is_bilateral_and_consolidation_focal() -> None:
    edema = render({"Edema": 1.0}) - render({})
    right, left = region(edema, (-0.5, -0.15), (-0.3, 0.2)), region(edema, (0.15, 0.5), (-0.3, 0.2))
    assert right.mean() > 0.03 and left.mean() > 0.03
    for seed in range(6):
        focus = render({"Consolidation": 1.0}, seed) - render({}, seed)
        assert (focus > 0.05).mean() < (edema > 0.05).mean()  # focal, not diffuse
        assert focus.max() > edema.max()  # and denser
        if len(radiograph._draw_layout(np.random.default_rng(seed), 64).foci) == 1:
            sides = sorted(
                [region(focus, (-1, 0), (-1, 1)).sum(), region(focus, (0, 1), (-1, 1)).sum()]
            )
            assert sides[1] > 5 * max(sides[0], 0.0)  # one lung


def test_atelectasis_lifts_a_hemidiaphragm() -> None:
    for seed in range(4):
        rng = np.random.default_rng(seed)
        side = radiograph._draw_layout(rng, 64).atelectasis_side
        diff = render({"Atelectasis": 1.0}, seed) - render({}, seed)
        near, far = (0.2, 0.7), (-0.7, -0.2)
        if side < 0:
            near, far = far, near
        assert region(diff, near, (0.1, 0.5)).mean() > 0.02
        assert region(diff, near, (0.1, 0.5)).mean() > 3 * abs(region(diff, far, (0.1, 0.5)).mean())


def test_lateral_is_another_picture_with_weaker_signs() -> None:
    frontal, lateral = render({}), render({}, view="lateral")
    assert np.abs(frontal - lateral).mean() > 0.05
    assert np.abs(lateral - lateral[:, ::-1]).mean() > 0.05  # no left-right symmetry
    sign_frontal = np.abs(render({"Pleural Effusion": 1.0}) - frontal).sum()
    sign_lateral = np.abs(render({"Pleural Effusion": 1.0}, view="lateral") - lateral).sum()
    assert 0 < sign_lateral < sign_frontal


def test_ap_magnifies_the_heart() -> None:
    pa, ap = render({}), render({}, view="AP")
    assert region(ap, (0.3, 0.5), (0.15, 0.35)).mean() > region(pa, (0.3, 0.5), (0.15, 0.35)).mean()


def test_worker_processes_write_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rendering in parallel (3000 patients at 64 px: 35.3 s -> 16.2 s on 2 cores) must not
    # change a byte: each image has its own random stream.
    monkeypatch.setattr(synthetic, "PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setattr(synthetic, "RENDER_CHUNK", 7)
    serial = write_synthetic(tmp_path / "serial", 12, SIZE, 3, progress=False, workers=1)
    parallel = write_synthetic(tmp_path / "parallel", 12, SIZE, 3, progress=False, workers=2)
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert len(files) > 20
    assert files == sorted(p.relative_to(parallel) for p in parallel.rglob("*") if p.is_file())
    for name in files:
        assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name
