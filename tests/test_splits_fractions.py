"""The fixed evaluation split, nested label fractions and the dataset summary."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chexflow.config import DataConfig
from chexflow.data.chexpert import FRAME_COLUMNS, filter_views, read_split
from chexflow.data.fractions import fraction_frame, fraction_sizes, sample_patients
from chexflow.data.labels import CHEXPERT_COLUMNS, EVAL_CLASSES, OBSERVATIONS, column_of
from chexflow.data.splits import eval_digest, make_splits
from chexflow.data.summary import SCHEMA, format_summary, summarise
from chexflow.errors import DataError

# Positive rate per evaluation class; Consolidation is rare so coverage matters.
RATES = {"Atelectasis": 0.2, "Cardiomegaly": 0.15, "Consolidation": 0.0, "Edema": 0.2}


def make_frame(
    n_patients: int, seed: int = 0, split: str = "train", first_id: int = 1
) -> pd.DataFrame:
    """A canonical frame: 1-2 studies per patient, a frontal and sometimes a lateral each."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(first_id, first_id + n_patients):
        for s in range(1, int(rng.integers(1, 3)) + 1):
            views = ["frontal"] + (["lateral"] if rng.random() < 0.4 else [])
            labels = {name: np.nan for name in OBSERVATIONS}
            for name, rate in RATES.items():
                draw = rng.random()
                labels[name] = 1.0 if draw < rate else (-1.0 if draw < rate + 0.1 else np.nan)
            labels["Pleural Effusion"] = float(rng.random() < 0.3)
            if not any(labels[c] in (1.0, -1.0) for c in RATES):
                labels["No Finding"] = 1.0
            for v, view in enumerate(views, start=1):
                frontal = view == "frontal"
                rows.append(
                    {
                        "path": f"{split}/patient{p:05d}/study{s}/view{v}_{view}.jpg",
                        "patient": f"patient{p:05d}",
                        "study": f"patient{p:05d}/study{s}",
                        "split": split,
                        "sex": str(rng.choice(["Male", "Female", "Unknown"])),
                        "age": int(rng.integers(18, 90)),
                        "view": "Frontal" if frontal else "Lateral",
                        "ap_pa": str(rng.choice(["AP", "PA"])) if frontal else "",
                        **labels,
                    }
                )
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    return frame.astype({name: np.float32 for name in OBSERVATIONS})


def with_positive(frame: pd.DataFrame, class_name: str, patients: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame["patient"].isin(patients), column_of(class_name)] = 1.0
    return frame


def write_csv(frame: pd.DataFrame, root: Path, split: str) -> None:
    """Write a canonical frame back in the released CSV format."""
    table = pd.DataFrame(
        {
            "Path": "CheXpert-v1.0-small/" + frame["path"],
            "Sex": frame["sex"],
            "Age": frame["age"],
            "Frontal/Lateral": frame["view"],
            "AP/PA": frame["ap_pa"],
            **{name: frame[name] for name in OBSERVATIONS},
        },
        columns=list(CHEXPERT_COLUMNS),
    )
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / f"{split}.csv", index=False, float_format="%.1f")


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    frame = make_frame(200, seed=1)
    return with_positive(frame, "Consolidation", ["patient00007", "patient00123"])


@pytest.fixture(scope="module")
def valid() -> pd.DataFrame:
    return make_frame(20, seed=2, split="valid", first_id=64541)


def patients(frame: pd.DataFrame) -> set[str]:
    return set(frame["patient"])


def test_splits_are_patient_disjoint_and_use_every_train_patient(train: pd.DataFrame) -> None:
    cfg = DataConfig()
    splits = make_splits(train, None, cfg)
    pool, val, held = patients(splits.pool), patients(splits.val), patients(splits.eval)
    assert not (pool & val) and not (pool & held) and not (val & held)
    assert pool | val | held == patients(train)
    assert len(held) == round(0.15 * 200) and len(val) == round(0.05 * 200)
    assert set(splits.eval["view"]) == {"Frontal"}  # frontal_only by default


def test_splits_depend_only_on_split_seed(train: pd.DataFrame) -> None:
    first = make_splits(train, None, DataConfig())
    again = make_splits(train.sample(frac=1.0, random_state=3), None, DataConfig())
    assert eval_digest(first.eval) == eval_digest(again.eval)
    assert patients(first.val) == patients(again.val)
    other = make_splits(train, None, DataConfig(split_seed=1))
    assert patients(other.eval) != patients(first.eval)


def test_eval_source_valid_and_both(train: pd.DataFrame, valid: pd.DataFrame) -> None:
    only_valid = make_splits(train, valid, DataConfig(eval_source="valid"))
    pd.testing.assert_frame_equal(only_valid.eval, filter_views(valid, True, "any"))
    assert patients(only_valid.pool) | patients(only_valid.val) == patients(train)
    holdout = make_splits(train, valid, DataConfig(eval_source="holdout"))
    both = make_splits(train, valid, DataConfig(eval_source="both"))
    assert patients(both.eval) == patients(holdout.eval) | patients(valid)
    assert patients(both.pool) == patients(holdout.pool)


def test_valid_patients_never_leak_into_training(train: pd.DataFrame) -> None:
    valid = make_frame(3, seed=4, split="valid", first_id=5)  # ids that train.csv also has
    splits = make_splits(train, valid, DataConfig(eval_source="valid"))
    assert not (patients(splits.pool) | patients(splits.val)) & patients(valid)


def test_split_errors(train: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"eval_source=valid needs valid\.csv"):
        make_splits(train, None, DataConfig(eval_source="valid"))
    with pytest.raises(DataError, match=r"train\.csv has 2 usable patients"):
        make_splits(make_frame(2), None, DataConfig(holdout_fraction=0.1, val_fraction=0.1))
    lateral_only = make_frame(5, split="valid").query("view == 'Lateral'")
    with pytest.raises(DataError, match=r"valid\.csv has no images left"):
        make_splits(train, lateral_only, DataConfig(eval_source="both"))


def test_eval_digest_identifies_the_set_not_its_order(train: pd.DataFrame) -> None:
    digest = eval_digest(train)
    assert len(digest) == 16 and set(digest) <= set("0123456789abcdef")
    assert eval_digest(train.iloc[::-1]) == digest
    assert eval_digest(train.iloc[1:]) != digest


@pytest.fixture(scope="module")
def pool(train: pd.DataFrame) -> pd.DataFrame:
    return make_splits(train, None, DataConfig()).pool


def test_fractions_are_nested_deterministic_and_seeded(pool: pd.DataFrame) -> None:
    fractions = (0.05, 0.1, 0.25, 0.5, 1.0)
    n = pool["patient"].nunique()
    for seed in (0, 1):
        draws = [sample_patients(pool, f, seed, 1) for f in fractions]
        assert [len(d) for d in draws] == [math.ceil(f * n) for f in fractions]
        assert all(set(a) <= set(b) for a, b in itertools.pairwise(draws))
        assert all(d == sorted(d) for d in draws)
        assert draws[-1] == sorted(patients(pool))
        assert draws == [sample_patients(pool, f, seed, 1) for f in fractions]
    assert sample_patients(pool, 0.1, 0, 1) != sample_patients(pool, 0.1, 1, 1)


def test_fraction_size_rounds_float_noise_down(pool: pd.DataFrame) -> None:
    n = pool["patient"].nunique()  # 0.1 * n may be 16.000000000000004: still 16 patients
    assert len(sample_patients(pool, 0.1, 0, 0)) == math.ceil(round(0.1 * n, 9))


def test_every_class_is_covered_in_a_small_fraction(pool: pd.DataFrame) -> None:
    assert pool.loc[pool["Consolidation"] == 1.0, "patient"].nunique() <= 2
    for seed in range(5):
        chosen = fraction_frame(pool, sample_patients(pool, 0.05, seed, 1))
        for name in EVAL_CLASSES:
            assert (chosen[column_of(name)] == 1.0).sum() >= 1, (seed, name)


def test_coverage_error_names_class_counts_and_the_smallest_fraction(pool: pd.DataFrame) -> None:
    n = pool["patient"].nunique()
    with pytest.raises(DataError) as error:
        sample_patients(pool, 1 / n, seed=0, min_class_count=3)
    message = str(error.value)
    assert f"fraction {1 / n} (1 of {n} patients)" in message
    assert "fewer than min_class_count=3 (the pool has" in message
    smallest = float(message.rsplit(" ", 1)[-1])
    chosen = fraction_frame(pool, sample_patients(pool, smallest, 0, 3))
    for name in EVAL_CLASSES:
        total = int((pool[column_of(name)] == 1.0).sum())
        assert (chosen[column_of(name)] == 1.0).sum() >= min(3, total)


def test_a_class_rarer_than_min_class_count_is_taken_whole(pool: pd.DataFrame) -> None:
    total = int((pool["Consolidation"] == 1.0).sum())
    chosen = fraction_frame(pool, sample_patients(pool, 0.25, 0, min_class_count=total + 5))
    assert (chosen["Consolidation"] == 1.0).sum() == total


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.0, r"outside \(0, 1\]"),
        (1.5, r"outside \(0, 1\]"),
        (float("nan"), r"outside \(0, 1\]"),
        (0.001, "less than one patient; the smallest fraction is"),
    ],
)
def test_bad_fractions(pool: pd.DataFrame, fraction: float, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        sample_patients(pool, fraction, 0, 1)


def test_fraction_frame_and_sizes(pool: pd.DataFrame) -> None:
    chosen = sample_patients(pool, 0.1, 0, 1)
    frame = fraction_frame(pool, chosen)
    assert patients(frame) == set(chosen)
    assert len(frame) == pool["patient"].isin(chosen).sum()
    with pytest.raises(DataError, match="not in the pool"):
        fraction_frame(pool, [*chosen, "patient99999"])
    sizes = fraction_sizes(pool, [0.1, 0.001], 0)
    assert sizes[0]["patients"] == len(chosen) and sizes[0]["images"] == len(frame)
    assert sizes[0]["error"] is None and set(sizes[0]["positives"]) == set(EVAL_CLASSES)
    assert sizes[1]["patients"] is None and "less than one patient" in sizes[1]["error"]
    json.dumps(sizes)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n_patients=st.integers(8, 40),
    data_seed=st.integers(0, 10_000),
    seed=st.integers(0, 2**31),
    fractions=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=4),
    min_count=st.integers(0, 2),
)
def test_property_nested_and_disjoint_from_evaluation(
    n_patients: int, data_seed: int, seed: int, fractions: list[float], min_count: int
) -> None:
    splits = make_splits(make_frame(n_patients, data_seed), None, DataConfig())
    held_out = patients(splits.eval) | patients(splits.val)
    previous: set[str] = set()
    for fraction in sorted(fractions):
        try:
            chosen = set(sample_patients(splits.pool, fraction, seed, min_count))
        except DataError:
            continue  # too small for one patient or for coverage: said so, never wrong
        assert chosen <= patients(splits.pool) and not chosen & held_out
        assert previous <= chosen
        previous = chosen


def test_summary(tmp_path: Path, train: pd.DataFrame, valid: pd.DataFrame) -> None:
    root = tmp_path / "CheXpert-v1.0-small"
    write_csv(train, root, "train")
    write_csv(valid, root, "valid")
    pd.testing.assert_frame_equal(read_split(root, "train"), train)  # the CSV round-trips
    summary = summarise(tmp_path, DataConfig(eval_source="both"), [0.05, 0.5, 0.0001])
    assert json.loads(json.dumps(summary)) == summary
    assert summary["schema"] == SCHEMA
    assert list(summary) == [
        "schema",
        "root",
        "filters",
        "splits",
        "labels",
        "exclusivity",
        "holdout",
        "fractions",
    ]
    counts = summary["splits"]["train"]
    assert counts["images"] == len(train) and counts["patients"] == 200
    assert counts["views"]["Frontal"] + counts["views"]["Lateral"] == len(train)
    frontal = filter_views(train, True, "any")
    assert counts["used_images"] == len(frontal)
    edema = summary["labels"]["train"]["Edema"]
    assert sum(edema.values()) == len(frontal)
    assert edema["positive"] == (frontal["Edema"] == 1.0).sum()
    exclusivity = summary["exclusivity"]["valid"]
    assert (
        exclusivity["exclusive"] + exclusivity["multi_label"] + exclusivity["none"]
        == (summary["splits"]["valid"]["used_images"])
    )
    holdout = summary["holdout"]
    assert holdout["error"] is None
    # The CSVs only: the digest covers the images' bytes, so none can be given.
    assert holdout["eval_digest"] is None
    assert "images are missing or unreadable" in holdout["eval_digest_error"]
    assert holdout["eval"]["patients"] == 30 + 20
    assert [f["patients"] for f in summary["fractions"][:2]] == [
        math.ceil(0.05 * 160),
        math.ceil(0.5 * 160),
    ]
    assert "less than one patient" in summary["fractions"][2]["error"]
    text = format_summary(summary)
    assert "Pleural Effusion" in text and "eval_digest=" in text and "less than one" in text
    assert "no eval_digest: " in text


def test_summary_without_valid_csv_and_an_impossible_split(tmp_path: Path) -> None:
    write_csv(make_frame(2), tmp_path, "train")
    summary = summarise(tmp_path, DataConfig(), [0.5])
    assert summary["splits"]["valid"] is None and summary["labels"]["valid"] is None
    assert "too few" in summary["holdout"]["error"] and summary["fractions"] == []
    assert "not possible" in format_summary(summary)
    with pytest.raises(DataError, match=r"valid\.csv not found"):
        summarise(tmp_path, DataConfig(eval_source="valid"), [0.5])


def test_the_eval_digest_covers_image_bytes_labels_and_policy(tmp_path: Path) -> None:
    # Before: the digest hashed paths only, and compare accepted runs scored on inverted images.
    from PIL import Image

    from chexflow.data.labels import DEFAULT_POLICY

    frame = make_frame(4, 0)
    for i, path in enumerate(frame["path"]):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(tmp_path / path)
    digest = eval_digest(frame, root=tmp_path, policy=DEFAULT_POLICY)
    assert digest == eval_digest(frame.iloc[::-1], root=tmp_path, policy=DEFAULT_POLICY)
    assert digest != eval_digest(frame), "bytes and policy are part of the digest"
    other_policy = {**DEFAULT_POLICY, "Edema": "zeros"}
    assert eval_digest(frame, root=tmp_path, policy=other_policy) != digest
    relabelled = frame.copy()
    relabelled.loc[0, "Edema"] = 1.0 - (relabelled.loc[0, "Edema"] == 1.0)
    assert eval_digest(relabelled, root=tmp_path, policy=DEFAULT_POLICY) != digest
    first = tmp_path / frame["path"].iloc[0]
    Image.fromarray(255 - np.asarray(Image.open(first))).save(first)
    assert eval_digest(frame, root=tmp_path, policy=DEFAULT_POLICY) != digest


def test_frontal_ll_and_rl_rows_follow_one_rule_shown_in_the_summary(tmp_path: Path) -> None:
    # The real train.csv has 17 Frontal rows with AP/PA LL or RL; the text summary showed
    # no AP/PA breakdown at all (only --json had it).
    train = make_frame(40, seed=3)
    frontal = train.index[train["view"] == "Frontal"]
    train.loc[frontal[:2], "ap_pa"] = "LL"
    train.loc[frontal[2], "ap_pa"] = "RL"
    assert len(filter_views(train, True, "any")) == len(frontal)  # kept as frontal views
    for view in ("AP", "PA"):
        kept = filter_views(train, True, view)
        assert set(kept["ap_pa"]) == {view}
    root = tmp_path / "CheXpert-v1.0-small"
    write_csv(train, root, "train")
    summary = summarise(root, DataConfig(), [0.5])
    counts = summary["splits"]["train"]["frontal_ap_pa"]
    n_ap = int((train.loc[frontal, "ap_pa"] == "AP").sum())
    n_pa = int((train.loc[frontal, "ap_pa"] == "PA").sum())
    assert counts == {"AP": n_ap, "PA": n_pa, "LL": 2, "RL": 1}
    text = format_summary(summary)
    assert "frontal images by AP/PA" in text
    assert any(line.split() == ["LL", "2"] for line in text.splitlines())
    assert "neither AP nor PA (train 3): frontal views, kept by view=any" in text
