"""Real label rows, synthetic pixels: rows out equal rows in, bad input refused up front."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexflow.data.chexpert import read_split
from chexflow.data.labels import CHEXPERT_COLUMNS
from chexflow.data.relabel import write_synthetic_from_labels
from chexflow.errors import DataError

SIZE = 32
PREFIX = "CheXpert-v1.0-small/train"
# The release's oddities: -1.0 and blanks, a lateral-only study (patient 3, study 2),
# Age 0, Sex Unknown, frontal rows whose AP/PA is LL (and RL), a study whose two
# frontal views are numbered past a lateral, and a patient numbered far from the rest.
ROWS = [
    f"{PREFIX}/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    f"{PREFIX}/patient00002/study1/view1_frontal.jpg,Male,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
    f"{PREFIX}/patient00002/study2/view1_frontal.jpg,Male,87,Frontal,AP,,,,1.0,,,-1.0,,,,1.0,,,1.0",
    f"{PREFIX}/patient00002/study2/view2_lateral.jpg,Male,87,Lateral,,,,,1.0,,,-1.0,,,,1.0,,,1.0",
    f"{PREFIX}/patient00003/study1/view1_frontal.jpg,Unknown,0,Frontal,LL,,0.0,1.0,,,1.0,,,,,1.0,,,",
    f"{PREFIX}/patient00003/study2/view1_lateral.jpg,Unknown,0,Lateral,,,,,,,,,,,0.0,-1.0,,,",
    f"{PREFIX}/patient00004/study3/view1_lateral.jpg,Female,90,Lateral,,,,0.0,,,,,,,,,,,",
    f"{PREFIX}/patient00004/study3/view2_frontal.jpg,Female,90,Frontal,PA,,,0.0,,,,,,,,,,,",
    f"{PREFIX}/patient00004/study3/view3_frontal.jpg,Female,90,Frontal,RL,,,0.0,,,,,,,,,,,",
    f"{PREFIX}/patient64540/study1/view1_frontal.jpg,Male,45,Frontal,PA,,,1.0,,,,1.0,1.0,1.0,,1.0,,,",
]


def write_input(
    path: Path, rows: list[str] = ROWS, header: str = ",".join(CHEXPERT_COLUMNS)
) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def read_table(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("labels")
    source = write_input(tmp / "labels.csv")
    out = write_synthetic_from_labels(source, tmp / "data", image_size=SIZE, progress=False)
    return source, out


def test_rows_out_equal_rows_in(relabelled: tuple[Path, Path]) -> None:
    source, out = relabelled
    assert read_table(out / "train.csv") == read_table(source)
    assert (out / "train.csv").read_text() == source.read_text()  # byte for byte here


def test_every_row_gets_its_image(relabelled: tuple[Path, Path]) -> None:
    _, out = relabelled
    frame = read_split(out, "train")
    for path in frame["path"]:
        with Image.open(out / path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (SIZE, SIZE))
            assert np.asarray(image).std() > 10
    on_disk = {str(p.relative_to(out)) for p in (out / "train").rglob("*.jpg")}
    assert on_disk == set(frame["path"])
    # The loader reads the oddities back as written.
    assert frame.loc[4, ["sex", "age", "ap_pa"]].tolist() == ["Unknown", 0, "LL"]
    assert set(frame.loc[frame["view"] == "Lateral", "ap_pa"]) == {""}


def test_laterals_and_frontals_are_drawn_as_such(relabelled: tuple[Path, Path]) -> None:
    _, out = relabelled

    def pixels(rel: str) -> np.ndarray:
        return np.asarray(Image.open(out / "train" / rel), dtype=float)

    frontal = pixels("patient00003/study1/view1_frontal.jpg")
    lateral = pixels("patient00003/study2/view1_lateral.jpg")
    # A frontal film is nearly left-right symmetric; a lateral one is not.
    assert np.abs(frontal - frontal[:, ::-1]).mean() < np.abs(lateral - lateral[:, ::-1]).mean()


def test_valid_is_the_generators_after_the_last_patient(relabelled: tuple[Path, Path]) -> None:
    _, out = relabelled
    valid = read_split(out, "valid")
    assert valid["patient"].unique().tolist() == ["patient64541"]  # 5 patients // 10, at least 1
    assert set(np.unique(valid[list(CHEXPERT_COLUMNS[5:])].to_numpy())) <= {0.0, 1.0}


def test_a_sample_of_patients_keeps_all_their_rows(tmp_path: Path) -> None:
    source = write_input(tmp_path / "labels.csv")
    out = write_synthetic_from_labels(
        source, tmp_path / "data", patients=2, seed=7, image_size=SIZE, progress=False
    )
    header, *rows = read_table(out / "train.csv")
    source_rows = read_table(source)[1:]
    assert header == list(CHEXPERT_COLUMNS)
    patients = {row[0].split("/")[2] for row in rows}
    assert len(patients) == 2
    assert rows == [row for row in source_rows if row[0].split("/")[2] in patients]
    again = write_synthetic_from_labels(
        source, tmp_path / "again", patients=2, seed=7, image_size=SIZE, progress=False
    )
    assert (again / "train.csv").read_bytes() == (out / "train.csv").read_bytes()
    samples = {
        frozenset(
            row[0].split("/")[2]
            for row in read_table(
                write_synthetic_from_labels(
                    source,
                    tmp_path / f"s{seed}",
                    patients=2,
                    seed=seed,
                    image_size=SIZE,
                    progress=False,
                )
                / "train.csv"
            )[1:]
        )
        for seed in range(4)
    }
    assert len(samples) > 1  # the seed draws the sample


def test_reads_a_gzipped_csv(tmp_path: Path) -> None:
    plain = write_input(tmp_path / "labels.csv")
    packed = tmp_path / "chexpert_train.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    out = write_synthetic_from_labels(packed, tmp_path / "data", image_size=SIZE, progress=False)
    assert (out / "train.csv").read_text() == plain.read_text()


@pytest.mark.parametrize(
    ("rows", "header", "patients", "message"),
    [
        (ROWS, ",".join(CHEXPERT_COLUMNS), 6, r"labels\.csv has 5 patients; ask for at most 5"),
        (ROWS, "Path,Sex,Age", None, r"labels\.csv: missing column\(s\) 'Frontal/Lateral'"),
        (
            [ROWS[0].replace(",68,", ",old,")],
            ",".join(CHEXPERT_COLUMNS),
            None,
            r"labels\.csv line 2, column 'Age': 'old' is not an age",
        ),
        (
            [ROWS[0].replace("/train/", "/valid/")],
            ",".join(CHEXPERT_COLUMNS),
            None,
            r"labels\.csv line 2, column 'Path': .* is not a train/ image",
        ),
        (
            [ROWS[0][: -len("1.0")] + "2.0"],
            ",".join(CHEXPERT_COLUMNS),
            None,
            r"labels\.csv line 2, column 'Support Devices': unknown label 2",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, rows: list[str], header: str, patients: int | None, message: str
) -> None:
    source = write_input(tmp_path / "labels.csv", rows, header)
    with pytest.raises(DataError, match=message) as caught:
        write_synthetic_from_labels(source, tmp_path / "data", patients, image_size=SIZE)
    assert "\n" not in str(caught.value)
    assert "chexflow-labels-" not in str(caught.value)  # names the user's file, not a copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    source = write_input(tmp_path / "labels.csv")
    for kwargs, message in (
        ({"csv_path": tmp_path / "nope.csv"}, "nope.csv does not exist"),
        ({"patients": 0}, "patients must be at least 1"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"image_size": 8}, "image size must be between 16 and 1024"),
    ):
        arguments = {"csv_path": source, "out": tmp_path / "data", "image_size": SIZE, **kwargs}
        with pytest.raises(DataError, match=message):
            write_synthetic_from_labels(**arguments)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_synth_command_keeps_the_rows_and_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    source = write_input(tmp_path / "labels.csv")
    out = tmp_path / "data"
    runner = CliRunner()
    ok = runner.invoke(
        app, ["synth", str(out), "--labels-from", str(source), "--image-size", str(SIZE)]
    )
    assert ok.exit_code == 0, ok.output
    assert read_table(out / "train.csv") == read_table(source)
    for args, expected in [
        (["--patients", "99"], "has 5 patients"),  # more than the CSV holds
        (["--labels-from", str(tmp_path / "missing.csv")], "missing.csv does not exist"),
    ]:
        bad = tmp_path / "bad"
        argv = ["synth", str(bad), "--labels-from", str(source), *args]
        result = runner.invoke(app, argv if "--patients" in args else ["synth", str(bad), *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert expected in lines[0]
        assert not bad.exists()  # refused before anything is written


def test_demo_data_from_labels_samples_the_csv_and_is_reused(tmp_path: Path) -> None:
    from dataclasses import replace

    from chexflow.data.relabel import count_patients
    from chexflow.demo import demo_settings, ensure_demo_data

    source = write_input(tmp_path / "labels.csv")
    assert count_patients(source) == 5
    settings = replace(demo_settings(quick=True, labels_from=source), image_size=SIZE)
    root = ensure_demo_data(tmp_path / "work", settings)  # 600 wanted, the CSV has 5: all
    assert read_table(root / "train.csv") == read_table(source)
    stamp = (root / "train.csv").stat().st_mtime_ns
    assert ensure_demo_data(tmp_path / "work", settings) == root  # cached by CSV digest
    assert (root / "train.csv").stat().st_mtime_ns == stamp


def test_a_csv_saved_with_a_byte_order_mark_round_trips(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts the file with U+FEFF: it crashed _text_rows with
    # "'Path' is not in list" (exit 1, a traceback); the BOM is not part of the header.
    source = write_input(tmp_path / "plain.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    from chexflow.data.relabel import count_patients

    assert count_patients(bom) == 5
    out = write_synthetic_from_labels(bom, tmp_path / "data", image_size=SIZE, progress=False)
    assert read_table(out / "train.csv") == read_table(source)


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "labels.csv is empty"), ("Path,Sex\nx,Male\n", "missing column")],
    ids=["empty", "not-chexpert"],
)
def test_demo_refuses_a_bad_labels_csv_at_the_door(
    tmp_path: Path, content: str, expected: str
) -> None:
    # Before: `chexflow demo --labels-from` an empty file was refused after 27.5 s, leaving a
    # workdir with a Prefect and an MLflow database (a new-user trial).
    from typer.testing import CliRunner

    from flows.cli import app

    source = tmp_path / "labels.csv"
    source.write_text(content)
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["demo", "--labels-from", str(source), "--workdir", str(work)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert not work.exists()
