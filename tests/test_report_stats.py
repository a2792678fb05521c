"""The report's statistics on constructed embeddings whose right answer is known: patients
as the resampling unit, paired differences, intervals that contain their estimate, overlap
against chance, scale-free geometry, support before verdicts, FDR, multi-label baselines,
the 0% bar, seeds and sampling together, certain labels, one model at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from test_report import assert_numbers_traceable

from chexflow.analysis.run_analysis import analyse_embeddings
from chexflow.comparison import RunRecord
from chexflow.config import AnalysisConfig
from chexflow.data.labels import EVAL_CLASSES
from chexflow.errors import ChexflowError
from chexflow.report import build_comparison, render_markdown
from chexflow.report.context import build_context
from chexflow.report.stats import benjamini_hochberg

CFG = AnalysisConfig(
    perplexities=[10.0], bootstrap=100, kmeans_seeds=1, max_faithfulness_points=100
)
DIM = 12


def design(
    per_class: dict[str, int], images_per_patient: int = 1, multi: int = 0
) -> tuple[list[tuple[str, ...]], list[str | None], list[str]]:
    """Labels and patient ids: ``per_class`` patients per class, each with
    ``images_per_patient`` images, and ``multi`` Consolidation + Edema patients."""
    positives: list[tuple[str, ...]] = []
    patients: list[str] = []
    for c, n in per_class.items():
        for p in range(n):
            positives += [(c,)] * images_per_patient
            patients += [f"{c[:3]}{p}"] * images_per_patient
    for p in range(multi):
        positives += [("Consolidation", "Edema")] * images_per_patient
        patients += [f"multi{p}"] * images_per_patient
    exclusive = [q[0] if len(q) == 1 else None for q in positives]
    return positives, exclusive, patients


def clouds(
    positives: list[tuple[str, ...]],
    patients: list[str],
    separation: float,
    seed: int,
    *,
    same: tuple[str, ...] = (),
    image_noise: float = 1.0,
    patient_noise: float = 0.0,
) -> np.ndarray:
    """Class clouds ``separation`` apart; classes in ``same`` share one centre; a patient's
    images share a ``patient_noise`` offset (correlated images)."""
    rng = np.random.default_rng(seed)
    centres = {
        c: np.random.default_rng(99 + i).normal(size=DIM) for i, c in enumerate(EVAL_CLASSES)
    }
    for c in same:
        centres[c] = centres[same[0]]
    offsets = {p: rng.normal(size=DIM) * patient_noise for p in dict.fromkeys(patients)}
    rows = []
    for labels, patient in zip(positives, patients, strict=True):
        centre = np.mean([centres[c] for c in labels], axis=0) if labels else np.zeros(DIM)
        rows.append(centre * separation + offsets[patient] + rng.normal(size=DIM) * image_noise)
    return np.asarray(rows, dtype=np.float32)


def run_of(
    x: np.ndarray,
    positives: list[tuple[str, ...]],
    exclusive: list[str | None],
    patients: list[str],
    fraction: float,
    seed: int = 0,
    *,
    kind: str = "finetune",
    model: str = "resnet18",
    extra: dict[str, list[Any]] | None = None,
) -> RunRecord:
    result = analyse_embeddings(x, positives, exclusive, CFG, seed=seed, patients=patients)
    table = pd.DataFrame(
        {
            "path": [f"img{i}.jpg" for i in range(len(x))],
            "patient": patients,
            "view": "Frontal",
            "positives": ["|".join(p) for p in positives],
            "exclusive": [e or "" for e in exclusive],
            **(extra or {}),
        }
    )
    run_id = f"{model[:3]}s{seed}f{int(fraction * 1000):04d}x"
    return RunRecord(
        run_id=run_id,
        fraction=fraction,
        seed=seed,
        model=model,
        directory=Path("/nonexistent") / run_id,
        eval_digest="feedbeef",
        auroc={"classes": {}, "mean": None, "mean_ci_low": None, "mean_ci_high": None, "n": len(x)},
        metrics=result.metrics,
        table=table,
        maps=dict(result.maps),
        kind=kind,
        feature_array=x,
    )


BALANCED = dict.fromkeys(EVAL_CLASSES, 14)


def _pair(separation: tuple[float, float] = (0.8, 1.6), **kwargs: Any) -> list[RunRecord]:
    positives, exclusive, patients = design(BALANCED, multi=6)
    return [
        run_of(clouds(positives, patients, s, seed=i, **kwargs), positives, exclusive, patients, f)
        for i, (s, f) in enumerate(zip(separation, (0.01, 0.1), strict=True))
    ]


def _intervals(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if {"value", "ci_low", "ci_high"} <= node.keys():
            found.append((path, node))
        for key, value in node.items():
            found += _intervals(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _intervals(value, f"{path}[{i}]")
    return found


def _differences(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if {"delta", "ci_low", "ci_high", "call"} <= node.keys():
            found.append(node)
        for value in node.values():
            found += _differences(value)
    elif isinstance(node, list):
        for value in node:
            found += _differences(value)
    return found


# ---------------------------------------------------------------- (1) patients, pairing


def test_correlated_images_of_one_patient_widen_the_report_intervals() -> None:
    positives, exclusive, patients = design(dict.fromkeys(EVAL_CLASSES, 8), images_per_patient=4)
    x = clouds(positives, patients, 0.8, seed=0, image_noise=0.2, patient_noise=1.0)
    by_patient = build_comparison([run_of(x, positives, exclusive, patients, 0.1)])
    one_each = [f"img{i}" for i in range(len(x))]
    by_image = build_comparison([run_of(x, positives, exclusive, one_each, 0.1)])

    def width(c: dict[str, Any]) -> float:
        e = c["structure"]["overall"]["silhouette"]["by_fraction"][0]
        return e["ci_high"] - e["ci_low"]

    assert by_patient["design"]["intervals"]["unit"] == "patient"
    assert by_image["design"]["intervals"]["unit"] == "image"
    assert by_patient["structure"]["overall"]["silhouette"]["by_fraction"][0]["unit"] == "patient"
    assert width(by_patient) > 1.4 * width(by_image)


def test_the_same_embeddings_at_two_fractions_differ_by_exactly_zero_when_paired() -> None:
    positives, exclusive, patients = design(BALANCED, multi=6)
    x = clouds(positives, patients, 1.0, seed=0)
    runs = [run_of(x, positives, exclusive, patients, f) for f in (0.01, 0.1)]
    c = build_comparison(runs)
    change = c["structure"]["overall"]["silhouette"]["changes"][0]
    assert change["method"] == "paired bootstrap" and change["unit"] == "patient"
    assert change["delta"] == 0.0 and change["ci_low"] == 0.0 == change["ci_high"]
    paired = [d for d in _differences(c) if d["method"] == "paired bootstrap"]
    assert len(paired) > 50
    assert all(d["call"] != "significant" for d in paired)


# ---------------------------------------------------------------- (6) intervals contain points


def test_no_interval_in_comparison_json_excludes_its_estimate() -> None:
    positives, exclusive, patients = design(BALANCED, images_per_patient=2, multi=6)
    runs = [
        run_of(
            clouds(positives, patients, s, seed=10 * i + j), positives, exclusive, patients, f, j
        )
        for i, (s, f) in enumerate(((0.6, 0.01), (1.4, 0.1)))
        for j in range(2)
    ]
    c = build_comparison(runs)
    checked = 0
    for path, block in _intervals(c):
        if block["value"] is None or block["ci_low"] is None:
            continue
        assert block["ci_low"] <= block["value"] <= block["ci_high"], path
        if "method" in block:
            assert block["method"] != "none" and block.get("unit"), path
        checked += 1
    assert checked > 300
    for d in _differences(c):
        if d["ci_low"] is not None:
            assert d["ci_low"] <= d["delta"] <= d["ci_high"]
            assert d["method"] and d["unit"]


# ---------------------------------------------------------------- (2) seeds and patients


def test_two_seeds_give_a_two_level_interval_wider_than_either_run() -> None:
    positives, exclusive, patients = design(BALANCED)
    runs = [
        run_of(clouds(positives, patients, s, seed=j), positives, exclusive, patients, 0.1, j)
        for j, s in enumerate((0.7, 1.5))
    ]
    c = build_comparison(runs)
    e = c["structure"]["overall"]["silhouette"]["by_fraction"][0]
    assert e["n_seeds"] == 2 and e["method"] == "two-level bootstrap (seeds, then patients)"
    width = e["ci_high"] - e["ci_low"]
    assert all(width > run["ci_high"] - run["ci_low"] for run in e["per_seed"])
    low, high = sorted(run["value"] for run in e["per_seed"])
    assert e["ci_low"] <= low and e["ci_high"] >= high


# ---------------------------------------------------------------- (3) overlap against chance


def test_classes_of_one_distribution_and_unequal_size_are_never_called_overlapping() -> None:
    sizes = {**dict.fromkeys(EVAL_CLASSES, 12), "Normal": 70}
    positives, exclusive, patients = design(sizes)
    runs = [
        run_of(clouds(positives, patients, 0.0, seed=i), positives, exclusive, patients, f)
        for i, f in enumerate((0.01, 0.1))
    ]
    c = build_comparison(runs)
    # Raw shares make Normal everyone's partner (more than half of every class's neighbours).
    classes = c["overlap"]["mixing_classes"]
    matrix = c["overlap"]["mixing"][0]["matrix"]
    assert matrix[classes.index("Edema")][classes.index("Normal")] > 0.4
    assert all(t["pairs"] == [] for t in c["overlap"]["top_pairs"])
    # Normal's raw mixing (~46%) would read "moderate"; against its chance level it is high.
    normal = c["classwise"]["Normal"]["by_fraction"][0]
    assert normal["mixing"] < 0.5 and normal["verdict"]["mixing_level"] == "high"
    for entry in c["classwise"].values():
        assert all(row["verdict"]["partners"] == [] for row in entry["by_fraction"])
    assert "No pair mixes more than chance at any fraction." in render_markdown(c)


def test_two_classes_sharing_a_cloud_are_the_overlapping_pair() -> None:
    c = build_comparison(_pair(same=("Consolidation", "Edema")))
    for top in c["overlap"]["top_pairs"]:
        assert (top["pairs"][0]["a"], top["pairs"][0]["b"]) == ("Consolidation", "Edema")
        assert top["pairs"][0]["lift"]["ci_low"] > 1.0
    assert c["overlap"]["persistent"][0] == {"a": "Consolidation", "b": "Edema", "similar": True}


# ---------------------------------------------------------------- (4) scale-free geometry


def test_scaling_and_shifting_the_embedding_leaves_the_geometry_verdicts() -> None:
    runs = _pair()
    shift = np.linspace(3.0, 30.0, DIM, dtype=np.float32)
    moved = [
        run_of(
            10 * r.feature_array + shift,
            r.positives(),
            r.exclusive(),
            r.table["patient"].tolist(),
            r.fraction,
        )
        for r in runs
    ]
    a, b = build_comparison(runs), build_comparison(moved)
    for name in EVAL_CLASSES:
        for quantity in ("cohesion", "separation"):
            sa, sb = a["classwise"][name][quantity], b["classwise"][name][quantity]
            for ea, eb in zip(sa["by_fraction"], sb["by_fraction"], strict=True):
                assert eb["value"] == pytest.approx(ea["value"], rel=1e-4)
            assert [ch["call"] for ch in sa["changes"]] == [ch["call"] for ch in sb["changes"]]
    pa, pb = a["structure"]["centroids"]["pairs"], b["structure"]["centroids"]["pairs"]
    assert [p["distance"]["changes"][0]["call"] for p in pa] == [
        p["distance"]["changes"][0]["call"] for p in pb
    ]


# ---------------------------------------------------------------- (7) support before verdicts


def test_a_class_of_eight_patients_gets_numbers_but_no_verdict_and_no_call() -> None:
    sizes = {**dict.fromkeys(EVAL_CLASSES, 14), "Cardiomegaly": 8}
    positives, exclusive, patients = design(sizes, images_per_patient=2)
    runs = [
        run_of(clouds(positives, patients, s, seed=i), positives, exclusive, patients, f)
        for i, (s, f) in enumerate(((0.5, 0.01), (2.0, 0.1)))
    ]
    c = build_comparison(runs)
    entry = c["classwise"]["Cardiomegaly"]
    assert entry["n_patients"] == 8 and entry["too_few_patients"]
    assert entry["silhouette"]["by_fraction"][0]["value"] is not None
    assert all(row["verdict"]["compactness"] is None for row in entry["by_fraction"])
    assert {ch["call"] for ch in entry["silhouette"]["changes"]} == {"too few patients"}
    markdown = render_markdown(c)
    assert_numbers_traceable(c, markdown)
    line = next(x for x in markdown.splitlines() if x.startswith("- **Cardiomegaly**"))
    assert "too few patients (n = 8)" in line
    assert not any(word in line for word in ("compact", "loose", "diffuse", "significant"))
    assert all(
        "Cardiomegaly" not in (p["a"], p["b"])
        for t in c["overlap"]["top_pairs"]
        for p in t["pairs"]
    )


# ---------------------------------------------------------------- (8) many calls


def test_benjamini_hochberg_q_values() -> None:
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])


def test_secondary_calls_are_fdr_controlled_and_the_primary_ones_pre_declared() -> None:
    c = build_comparison(_pair())
    m = c["design"]["multiplicity"]
    assert m["method"] == "Benjamini–Hochberg" and m["n_primary"] == 2  # no AUROC logged
    assert m["n_significant_after"] <= m["n_significant_before"]
    primary = c["structure"]["overall"]["silhouette"]["changes"][0]
    assert primary["pre_declared"] and primary["q"] is None
    secondary = [d for d in _differences(c) if d.get("q") is not None]
    assert len(secondary) >= m["n_secondary"] > 20  # the conclusion repeats some
    for d in secondary:
        if d["call"] == "significant":
            assert d["q"] <= c["design"]["fdr"]
    assert "false discovery rate" in render_markdown(c)


# ---------------------------------------------------------------- (9) multi-label baselines


def test_multi_label_images_placed_like_other_classes_show_no_contrast() -> None:
    positives, exclusive, patients = design(BALANCED, multi=20)
    x = clouds(positives, patients, 1.5, seed=0)
    rng = np.random.default_rng(1)
    multi = [i for i, p in enumerate(positives) if len(p) == 2]
    others = [i for i, e in enumerate(exclusive) if e not in (None, "Consolidation", "Edema")]
    x[multi] = x[rng.choice(others, size=len(multi))] + 0.05 * rng.normal(size=(len(multi), DIM))
    runs = [run_of(x, positives, exclusive, patients, f) for f in (0.01, 0.1)]
    c = build_comparison(runs)
    pair = next(
        p for p in c["overlap"]["multilabel"]["pairs"] if p["classes"] == ["Consolidation", "Edema"]
    )
    contrast = pair["betweenness_contrast"]["by_fraction"][0]
    assert contrast["ci_low"] <= 0.0 <= contrast["ci_high"]
    assert pair["baseline"]["betweenness"] is not None


# ---------------------------------------------------------------- (10) the 0% bar


def test_a_fraction_no_better_than_the_initial_backbone_is_said_so() -> None:
    positives, exclusive, patients = design(BALANCED)
    x = clouds(positives, patients, 1.0, seed=0)
    runs = [
        run_of(x, positives, exclusive, patients, 0.0, kind="reference"),
        run_of(x, positives, exclusive, patients, 0.01),
        run_of(clouds(positives, patients, 3.0, seed=1), positives, exclusive, patients, 0.1),
    ]
    c = build_comparison(runs)
    bar = {(b["key"], b["to"]): b["beats"] for b in c["conclusion"]["reference_bar"]}
    assert bar[("silhouette", 0.01)] is False and bar[("silhouette", 0.1)] is True
    markdown = render_markdown(c)
    assert "not beaten on silhouette at 1%" in markdown
    assert_numbers_traceable(c, markdown)


# ---------------------------------------------------------------- (5) certain labels, policy


def test_an_uncertain_label_never_enters_the_report_auroc() -> None:
    positives, exclusive, patients = design(BALANCED)
    n = len(positives)
    rng = np.random.default_rng(0)
    label = np.where(np.arange(n) % 3 == 0, 1.0, np.where(np.arange(n) % 3 == 1, 0.0, -1.0))
    prob = np.clip(0.3 * (label == 1) + rng.random(n) * 0.7, 0, 1)
    prob[label == -1] = 0.99  # uncertain images scored highest: counted, they would move AUROC
    extra = {"prob/Edema": prob.tolist(), "label/Edema": label.tolist()}
    x = clouds(positives, patients, 1.0, seed=0)
    c = build_comparison([run_of(x, positives, exclusive, patients, 0.1, extra=extra)])
    certain = label != -1
    expected = roc_auc_score(label[certain] == 1, prob[certain])
    assert c["downstream"]["classes"] == {}  # the run logged no AUROC table: re-scored
    ctx = build_context([run_of(x, positives, exclusive, patients, 0.1, extra=extra)])
    assert ctx.groups[0].estimate("auroc/Edema")["value"] == pytest.approx(expected)


def test_runs_of_two_label_policies_are_not_compared() -> None:
    runs = _pair()
    runs[0].label_policy = {"Atelectasis": "ones"}  # type: ignore[attr-defined]
    runs[1].label_policy = {"Atelectasis": "zeros"}  # type: ignore[attr-defined]
    with pytest.raises(ChexflowError, match="label policies"):
        build_comparison(runs)


def test_two_models_are_analysed_apart_and_their_contrasts_set_side_by_side() -> None:
    """Model A separates its classes with more labels, model B loses separation."""
    rising = _pair((0.6, 1.8))
    falling = _pair((1.8, 0.6))
    for run in falling:
        run.model = "densenet121"
        run.run_id = "d" + run.run_id
    c = build_comparison(rising + falling)
    assert c["design"]["models"] == ["resnet18"] and c["design"]["n_runs"] == 2
    by_model = {m["model"]: m for m in c["by_model"]["models"]}
    assert by_model["resnet18"]["changes"]["silhouette"]["delta"] > 0
    assert by_model["densenet121"]["changes"]["silhouette"]["delta"] < 0
    assert c["by_model"]["agreement"]["silhouette"]["same_direction"] is False
    markdown = render_markdown(c)
    assert "Headline contrasts per model" in markdown and "directions disagree" in markdown
    assert_numbers_traceable(c, markdown)
    with pytest.raises(ChexflowError, match="2 models"):
        build_context(rising + falling)  # the grouping itself never pools two models
