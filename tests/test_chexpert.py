"""Reading CheXpert CSVs: the real format, label policies, views and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexflow.data.chexpert import (
    FRAME_COLUMNS,
    check_images,
    exclusive_labels,
    filter_views,
    find_dataset_root,
    label_targets,
    positive_sets,
    read_split,
)
from chexflow.data.labels import CHEXPERT_COLUMNS, DEFAULT_POLICY, EVAL_CLASSES, OBSERVATIONS
from chexflow.errors import ConfigError, DataError

HEADER = ",".join(CHEXPERT_COLUMNS)
P = "CheXpert-v1.0-small"
# Verbatim shape of the released CSVs: blank cells, -1.0, Unknown sex, laterals without AP/PA.
TRAIN_CSV = """\
CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0
CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,
CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,
CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,
CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,AP,,,,,,1.0,,,,0.0,,,,
CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg,Unknown,20,Frontal,PA,1.0,0.0,,,,,,,,,0.0,,,
CheXpert-v1.0-small/train/patient00004/study1/view2_lateral.jpg,Unknown,20,Lateral,,1.0,0.0,,,,,,,,,0.0,,,
CheXpert-v1.0-small/train/patient00005/study1/view1_frontal.jpg,Male,33,Frontal,PA,,,1.0,,,,,,1.0,,1.0,,,1.0
"""
VALID_CSV = """\
CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0
CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0
CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0
CheXpert-v1.0-small/valid/patient64543/study1/view1_frontal.jpg,Unknown,85,Frontal,AP,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0
"""
TRAIN_ROWS = TRAIN_CSV.splitlines()
VALID_ROWS = VALID_CSV.splitlines()


def write_dataset(parent: Path, train: list[str] | None = None, valid: list[str] | None = None):
    """Write a CheXpert-v1.0-small folder under ``parent``; returns the dataset root."""
    root = parent / P
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train or TRAIN_ROWS), ("valid", valid or VALID_ROWS)):
        (root / f"{name}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return root


def write_images(root: Path, frame) -> None:
    rng = np.random.default_rng(0)
    for path in frame["path"]:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 20), dtype=np.uint8)).save(target)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_dataset(tmp_path)


def test_fixture_rows_have_19_fields() -> None:
    assert all(len(row.split(",")) == 19 for row in TRAIN_ROWS + VALID_ROWS)


def test_find_dataset_root_accepts_root_or_parent(root: Path) -> None:
    assert find_dataset_root(root) == root
    assert find_dataset_root(root.parent) == root


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "expected train.csv and valid.csv"),
        (lambda p: (p / "CheXpert-v1.0").mkdir() or p, "CheXpert-v1.0 has no train.csv"),
        (
            lambda p: [write_dataset(p), (p / "CheXpert-v1.0").mkdir()] and p,
            "several CheXpert folders",
        ),
    ],
)
def test_find_dataset_root_says_what_was_expected(tmp_path: Path, make, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        find_dataset_root(make(tmp_path))


def test_read_split_parses_the_real_format(root: Path) -> None:
    frame = read_split(root, "train")
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert len(frame) == len(TRAIN_ROWS)
    first = frame.iloc[0]
    assert first["path"] == "train/patient00001/study1/view1_frontal.jpg"
    assert first["patient"] == "patient00001"
    assert first["study"] == "patient00001/study1"
    assert first["split"] == "train"
    assert (first["sex"], first["age"], first["view"], first["ap_pa"]) == (
        "Female",
        68,
        "Frontal",
        "AP",
    )
    assert frame["age"].dtype == np.int64
    assert all(frame[c].dtype == np.float32 for c in OBSERVATIONS)
    lateral = frame.iloc[3]
    assert (lateral["view"], lateral["ap_pa"]) == ("Lateral", "")
    assert frame.loc[5, "sex"] == "Unknown"
    second = frame.iloc[1]
    assert second["Cardiomegaly"] == -1.0 and second["Lung Opacity"] == 1.0
    assert np.isnan(second["No Finding"]) and np.isnan(second["Support Devices"])
    assert first["No Finding"] == 1.0 and first["Pneumothorax"] == 0.0
    values = frame[list(OBSERVATIONS)].to_numpy()
    assert set(np.unique(values[~np.isnan(values)])) <= {-1.0, 0.0, 1.0}


def test_read_split_valid(root: Path) -> None:
    frame = read_split(root, "valid")
    assert frame["split"].unique().tolist() == ["valid"]
    assert frame["path"].str.startswith("valid/").all()
    assert frame["patient"].tolist() == [
        "patient64541",
        "patient64542",
        "patient64542",
        "patient64543",
    ]
    assert not np.isnan(frame[list(OBSERVATIONS)].to_numpy()).any()


def test_path_prefix_is_optional_and_full_resolution_prefix_works(tmp_path: Path) -> None:
    rows = [TRAIN_ROWS[0].replace(f"{P}/", ""), TRAIN_ROWS[1].replace(P, "CheXpert-v1.0")]
    frame = read_split(write_dataset(tmp_path, train=rows), "train")
    assert frame["path"].str.startswith("train/patient0000").all()


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path) -> None:
    rows = [TRAIN_ROWS[0], "", TRAIN_ROWS[1], TRAIN_ROWS[2].replace(",83,", ",old,")]
    with pytest.raises(DataError, match=r"train\.csv line 5, column 'Age'"):
        read_split(write_dataset(tmp_path, train=rows), "train")


def _replace(row: int, old: str, new: str) -> list[str]:
    rows = list(TRAIN_ROWS)
    assert old in rows[row]
    rows[row] = rows[row].replace(old, new, 1)
    return rows


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # Label cells: unknown numbers (fast path) and words (slow path), line = row + 2.
        (_replace(4, ",1.0,,,,0.0,", ",2.0,,,,0.0,"), r"line 6, column 'Edema': unknown label 2\b"),
        (
            _replace(2, ",1.0,,,-1.0,", ",yes,,,-1.0,"),
            r"line 4, column 'Lung Opacity': unknown label 'yes'",
        ),
        (_replace(0, ",1.0,,,,", ",nan,,,,"), r"line 2, column 'No Finding': unknown label 'nan'"),
        (
            _replace(7, "1.0,,,1.0", "0.5,,,1.0"),
            r"line 9, column 'Pleural Effusion': unknown label 0.5",
        ),
        # Paths: escaping the root, wrong shape, wrong split, duplicates.
        (
            _replace(1, f"{P}/train", f"{P}/../../etc"),
            r"line 3, column 'Path'.*outside the dataset root",
        ),
        (
            _replace(1, f"{P}/train/patient00002/study2/view1_frontal.jpg", "/etc/passwd"),
            "line 3.*outside",
        ),
        (
            _replace(3, "view2_lateral.jpg", "view2_lateral.png"),
            r"line 5, column 'Path'.*not a CheXpert image path",
        ),
        (_replace(0, "patient00001", "p1"), r"line 2, column 'Path'.*patientN/studyN"),
        (_replace(0, ",Female,68", ",Female,68"), None),  # unchanged row: control
        (_replace(5, f"{P}/train", f"{P}/valid"), r"line 7, column 'Path'.*not a train/ image"),
        ([*TRAIN_ROWS, TRAIN_ROWS[2]], r"line 10, column 'Path'.*repeats line 4"),
        # Other columns.
        (_replace(4, ",41,", ",,"), r"line 6, column 'Age': an empty cell is not an age"),
        (_replace(4, ",41,", ",41.5,"), r"line 6, column 'Age': '41.5'"),
        (_replace(3, ",Lateral,", ",Oblique,"), r"line 5, column 'Frontal/Lateral': 'Oblique'"),
        (_replace(0, ",0.0,,,,1.0", ",0.0,,,,1.0,,"), r"line 2: more fields than the 19"),
        (_replace(2, ",1.0,", ",1.0,,"), r"malformed CSV \(.*line 4, saw 20"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path: Path, rows: list[str], expected) -> None:
    root = write_dataset(tmp_path, train=rows)
    if expected is None:
        assert len(read_split(root, "train")) == len(rows)
        return
    with pytest.raises(DataError, match=expected) as error:
        read_split(root, "train")
    message = str(error.value)
    assert str(root / "train.csv") in message
    assert "\n" not in message


def test_several_bad_rows_are_counted(tmp_path: Path) -> None:
    rows = [r.replace(",Frontal,", ",frontal,") for r in TRAIN_ROWS]
    with pytest.raises(DataError, match=r"line 2, .*\(5 more rows like this\)"):
        read_split(write_dataset(tmp_path, train=rows), "train")


def test_missing_or_renamed_columns_are_named(root: Path) -> None:
    csv = root / "train.csv"
    csv.write_text(csv.read_text().replace(",Edema,", ",Oedema,", 1).replace("Sex,", "", 1))
    with pytest.raises(
        DataError, match=r"missing column\(s\) 'Sex', 'Edema' \(found instead: 'Oedema'\)"
    ):
        read_split(root, "train")


def test_extra_columns_are_ignored(root: Path) -> None:
    csv = root / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(line + ",extra" for line in lines) + "\n")
    assert len(read_split(root, "train")) == len(TRAIN_ROWS)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, r"valid\.csv not found"), ("", "is empty"), (HEADER + "\n", "has no image rows")],
)
def test_missing_empty_or_header_only_csv(root: Path, content: str | None, expected: str) -> None:
    csv = root / "valid.csv"
    if content is None:
        csv.unlink()
    else:
        csv.write_text(content)
    with pytest.raises(DataError, match=expected):
        read_split(root, "valid")


def test_filter_views(root: Path) -> None:
    frame = read_split(root, "train")
    assert set(filter_views(frame, True, "any")["view"]) == {"Frontal"}
    assert len(filter_views(frame, False, "any")) == len(frame)
    pa = filter_views(frame, True, "PA")
    assert pa["ap_pa"].tolist() == ["PA", "PA"]
    # Laterals have no AP/PA: an AP/PA filter keeps them unless frontal_only.
    ap_any = filter_views(frame, False, "AP")
    assert set(ap_any["ap_pa"]) == {"AP", ""}
    assert filter_views(frame, True, "AP").index.tolist() == list(range(4))


def test_label_targets_policies(root: Path) -> None:
    frame = read_split(root, "train").iloc[[1, 0, 6]]  # uncertain row, No Finding row, lateral
    classes = ["Atelectasis", "Cardiomegaly", "Edema", "Normal"]
    policy = {"Atelectasis": "ones", "Cardiomegaly": "zeros", "Edema": "ignore", "Normal": "zeros"}
    targets, mask = label_targets(frame, classes, policy)
    assert targets.dtype == np.float32 and mask.dtype == np.float32
    np.testing.assert_array_equal(targets, [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(mask, [[1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_label_targets_rejects_a_missing_or_unknown_policy(root: Path) -> None:
    frame = read_split(root, "train")
    with pytest.raises(ConfigError, match="Edema"):
        label_targets(frame, ["Edema"], {})
    with pytest.raises(ConfigError, match="ones, zeros or ignore"):
        label_targets(frame, ["Edema"], {"Edema": "maybe"})  # type: ignore[dict-item]
    targets, _ = label_targets(frame, EVAL_CLASSES, DEFAULT_POLICY)
    assert targets.shape == (len(frame), len(EVAL_CLASSES))


def test_positive_sets_and_exclusive_labels(root: Path) -> None:
    frame = read_split(root, "train")
    assert positive_sets(frame) == [
        ("Normal",),
        (),
        (),
        (),
        ("Edema",),
        ("Normal",),
        ("Normal",),
        ("Atelectasis", "Cardiomegaly", "Pleural Effusion"),
    ]
    assert exclusive_labels(frame) == [
        "Normal",
        None,
        None,
        None,
        "Edema",
        "Normal",
        "Normal",
        None,
    ]


def test_check_images(root: Path) -> None:
    frame = read_split(root, "train")
    write_images(root, frame)
    check_images(root, frame)
    (root / frame["path"][2]).unlink()
    (root / frame["path"][5]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(
        DataError,
        match=r"2 of 8 images .*patient00002/study1/view1_frontal\.jpg \(file not found\)",
    ):
        check_images(root, frame)


def test_read_split_is_fast_enough_for_the_real_train_csv(tmp_path: Path) -> None:
    """223k rows must parse in ~1-2 s; 40k rows here keep the test quick (bound is loose)."""
    import time

    rows = []
    for i in range(20_000):
        rows.append(
            f"{P}/train/patient{i:05d}/study1/view1_frontal.jpg,Male,50,Frontal,AP,,1.0,-1.0,,,0.0,,,1.0,,,,,"
        )
        rows.append(
            f"{P}/train/patient{i:05d}/study1/view2_lateral.jpg,Male,50,Lateral,,,1.0,-1.0,,,0.0,,,1.0,,,,,"
        )
    root = write_dataset(tmp_path, train=rows)
    start = time.perf_counter()
    frame = read_split(root, "train")
    assert len(frame) == 40_000
    assert time.perf_counter() - start < 5.0  # ~0.3 s measured
