"""The differential report: every number traceable to comparison.json, verdicts that follow
their stated thresholds, wording that follows the interval rules, a self-contained page."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import chromium, chromium_command

from chexflow.analysis.run_analysis import analyse_embeddings
from chexflow.comparison import RunRecord
from chexflow.config import AnalysisConfig
from chexflow.data.labels import EVAL_CLASSES
from chexflow.report import build_comparison, render_markdown, verdicts, write_report
from chexflow.report.stats import aggregate, difference, interval, wilson

AUROC_CLASSES = EVAL_CLASSES[:5]
CFG = AnalysisConfig(perplexities=[10.0], bootstrap=40, kmeans_seeds=1, max_faithfulness_points=100)
PER_CLASS = 12


# ---------------------------------------------------------------- a small run factory


def _labels() -> tuple[list[tuple[str, ...]], list[str | None]]:
    """The fixed evaluation set: 12 images per class, 8 Consolidation + Edema, 4 with none."""
    positives: list[tuple[str, ...]] = [(c,) for c in EVAL_CLASSES for _ in range(PER_CLASS)]
    positives += [("Consolidation", "Edema")] * 8 + [()] * 4
    exclusive = [p[0] if len(p) == 1 else None for p in positives]
    return positives, exclusive


def _features(fraction: float, seed: int, separation: float) -> np.ndarray:
    """Class clusters that separate more with the fraction; Consolidation and Edema close."""
    positives, _ = _labels()
    centres = np.random.default_rng(123).normal(size=(len(EVAL_CLASSES), 16))
    centres[3] = centres[2] + 0.3 * np.random.default_rng(7).normal(size=16)
    rng = np.random.default_rng(1000 * seed + int(fraction * 1000))
    spread = separation * (1.0 + 2.0 * fraction)
    rows = []
    for p in positives:
        if p:
            mean = np.mean([centres[EVAL_CLASSES.index(c)] for c in p], axis=0) * spread
        else:
            mean = np.zeros(16)
        rows.append(mean + rng.normal(size=16))
    return np.asarray(rows, dtype=np.float32)


def _auroc(fraction: float, seed: int, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    classes = {}
    for c in AUROC_CLASSES:
        value = 0.6 + 0.25 * fraction + rng.normal(scale=0.01)
        classes[c] = {
            "auroc": value,
            "ci_low": value - 0.05,
            "ci_high": value + 0.05,
            "n_pos": PER_CLASS,
            "n_neg": n - PER_CLASS,
            "defined": True,
            "reason": None,
        }
    mean = float(np.mean([c["auroc"] for c in classes.values()]))
    return {
        "classes": classes,
        "mean": mean,
        "mean_ci_low": mean - 0.03,
        "mean_ci_high": mean + 0.03,
        "n": n,
    }


_ANALYSED: dict[tuple[float, int, float], Any] = {}


def make_run(
    fraction: float,
    seed: int = 0,
    *,
    separation: float = 1.0,
    kind: str = "finetune",
    features: bool = True,
) -> RunRecord:
    """A run as the comparison sees it, its metrics measured on tiny synthetic embeddings."""
    key = (fraction, seed, separation)
    x = _features(fraction, seed, separation)
    positives, exclusive = _labels()
    if key not in _ANALYSED:
        _ANALYSED[key] = analyse_embeddings(x, positives, exclusive, CFG, seed=seed)
    result = _ANALYSED[key]
    table = pd.DataFrame(
        {
            "path": [f"img{i}.jpg" for i in range(len(x))],
            "patient": [f"p{i}" for i in range(len(x))],
            "view": "Frontal",
            "positives": ["|".join(p) for p in positives],
            "exclusive": [e or "" for e in exclusive],
        }
    )
    run_id = f"s{seed}f{int(fraction * 1000):04d}abcdef"
    return RunRecord(
        run_id=run_id,
        fraction=fraction,
        seed=seed,
        model="resnet18",
        directory=Path("/nonexistent") / run_id,
        eval_digest="feedbeef",
        auroc=_auroc(fraction, seed, len(x)),
        metrics=copy.deepcopy(result.metrics),
        table=table,
        maps=dict(result.maps),
        kind=kind,
        feature_array=x if features else None,
    )


# ---------------------------------------------------------------- numbers in the text


NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+(?:\.\d+)?)(%| pp)?(?![\w])")


def _leaves(node: Any) -> list[float]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _leaves(v)]
    if isinstance(node, list):
        return [x for v in node for x in _leaves(v)]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return []
    return [float(node)]


def _written_forms(values: list[float]) -> set[str]:
    """Each JSON number as the report may write it (docs/REPORT.md, "Number formats")."""
    forms: set[str] = set()
    for v in values:
        a = abs(v)
        forms |= {
            f"{a:.3f}",
            f"{a * 100:.0f}%",
            f"{a * 100:g}%",
            f"{a:.1f}",
            f"{a:g}",
            f"{a * 100:.0f} pp",
        }
        if v.is_integer():
            forms.add(str(int(a)))
    return forms


def numbers_in(markdown: str) -> list[str]:
    """Numbers of the prose and tables: code spans and figure paths left out."""
    text = re.sub(r"`[^`]*`", " ", markdown)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return [m.group(1) + (m.group(2) or "") for m in NUMBER.finditer(text)]


def assert_numbers_traceable(comparison: dict[str, Any], markdown: str) -> None:
    forms = _written_forms(_leaves(comparison))
    tokens = numbers_in(markdown)
    assert len(tokens) > 100
    missing = sorted({t for t in tokens if t not in forms})
    assert missing == [], f"numbers in the text but not in comparison.json: {missing[:20]}"


@pytest.fixture(scope="module")
def two_runs_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str, Path]:
    out = tmp_path_factory.mktemp("report2")
    paths = write_report([make_run(0.1), make_run(0.01)], out, explorer="explorer.html")
    comparison = json.loads(paths["json"].read_text())
    return comparison, paths["markdown"].read_text(), paths["html"].read_text(), out


def test_the_page_links_the_interactive_explorer_beside_it(two_runs_report) -> None:
    # Before: report.html never mentioned explorer.html, written into the same folder.
    _comparison, _markdown, html, _out = two_runs_report
    nav = html[html.index("<nav>") : html.index("</nav>")]
    assert nav.startswith('<nav><a href="explorer.html"><b>Interactive maps</b></a>')


def test_every_number_in_the_text_is_in_comparison_json(two_runs_report) -> None:
    comparison, markdown, _html, _out = two_runs_report
    assert_numbers_traceable(comparison, markdown)


def test_the_check_catches_a_number_that_is_not_in_the_json(two_runs_report) -> None:
    comparison, markdown, _html, _out = two_runs_report
    for invented in ("0.1234", "98765", "33.33%"):
        with pytest.raises(AssertionError, match=re.escape(invented)):
            assert_numbers_traceable(comparison, markdown + f"\nAn invented value: {invented}.\n")


def test_comparison_json_is_strict_and_complete(two_runs_report) -> None:
    comparison, _markdown, _html, out = two_runs_report

    def refuse(name: str) -> None:
        raise ValueError(f"non-strict JSON constant {name}")

    json.loads((out / "comparison.json").read_text(), parse_constant=refuse)
    assert comparison["schema"] == "chexflow.comparison/2"
    for section in (
        "settings",
        "design",
        "runs",
        "classwise",
        "structure",
        "overlap",
        "downstream",
        "limitations",
        "conclusion",
        "figures",
    ):
        assert section in comparison, section
    assert set(comparison["classwise"]) == set(EVAL_CLASSES)
    assert comparison["settings"]["silhouette_compact"] == verdicts.SILHOUETTE_COMPACT
    assert [r["fraction"] for r in comparison["runs"]] == [0.01, 0.1]  # lowest first
    for name in comparison["figures"].values():
        assert (out / name).stat().st_size > 5_000


def test_one_table_row_per_run_and_single_seed_is_said(two_runs_report) -> None:
    comparison, markdown, _html, _out = two_runs_report
    assert markdown.count("| `") == 2
    assert comparison["design"]["single_seed"] is True
    assert "**One seed per fraction.**" in markdown


def test_report_covers_the_five_parts(two_runs_report) -> None:
    _comparison, markdown, _html, _out = two_runs_report
    for heading in (
        "## Conclusion",
        "## Downstream effect: AUROC by fraction",
        "## Class-wise cluster quality and separability",
        "## Effects of the label fraction on the representation",
        "## Class overlap and mixed regions",
        "### Multi-label images",
        "## Limitations, quantified",
        "## Method",
    ):
        assert heading in markdown, heading
    for limitation in (
        "t-SNE distortion",
        "Seed and perplexity",
        "Class imbalance",
        "Alternative views",
        "Multi-label handling",
        "Model and data",
    ):
        assert f"**{limitation}" in markdown, limitation
    assert "Consolidation ↔ Edema (airspace opacities" in markdown  # the similar-pairs list


def test_html_is_self_contained(two_runs_report) -> None:
    _comparison, _markdown, html, _out = two_runs_report
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    sources = re.findall(r"""src="([^"]*)\"""", html)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert html.count("<table>") >= 8
    assert "@import" not in html and "url(" not in html


# ---------------------------------------------------------------- seeds and fractions


def test_two_fractions_two_seeds_use_t_intervals_and_welch() -> None:
    runs = [make_run(f, s) for f in (0.01, 0.1) for s in (0, 1)]
    comparison = build_comparison(runs)
    markdown = render_markdown(comparison)
    assert_numbers_traceable(comparison, markdown)
    mean = comparison["downstream"]["mean"]
    assert all(e["method"] == "t" and e["n_seeds"] == 2 for e in mean["by_fraction"])
    assert [p["seed"] for p in mean["by_fraction"][0]["per_seed"]] == [0, 1]
    assert mean["changes"][0]["method"] == "welch"
    assert comparison["design"]["single_seed"] is False
    assert "One seed per fraction" not in markdown
    assert "Seeds per fraction: 1%: seeds 0, 1; 10%: seeds 0, 1." in markdown
    assert comparison["structure"]["global"]["agreement"]["within"]  # seed-to-seed baseline
    assert markdown.count("| `") == 4


def test_three_fractions_give_trends_and_all_contrasts() -> None:
    comparison = build_comparison([make_run(f) for f in (0.01, 0.1, 1.0)])
    markdown = render_markdown(comparison)
    assert_numbers_traceable(comparison, markdown)
    changes = comparison["structure"]["overall"]["silhouette"]["changes"]
    assert [(c["from"], c["to"], c["primary"]) for c in changes] == [
        (0.01, 0.1, False),
        (0.1, 1.0, False),
        (0.01, 1.0, True),
    ]
    trend = comparison["downstream"]["mean"]["trend"]
    assert trend["direction"] == "rising" and trend["n_steps"] == 2
    assert "trend over fractions" in markdown
    assert "change 1% → 100% [95% CI]" in markdown


def test_the_initial_backbone_is_a_baseline_left_out_of_auroc() -> None:
    runs = [make_run(0.0, kind="reference"), make_run(0.05), make_run(0.5)]
    comparison = build_comparison(runs)
    markdown = render_markdown(comparison)
    assert_numbers_traceable(comparison, markdown)
    assert comparison["downstream"]["fractions"] == [0.05, 0.5]
    assert comparison["downstream"]["excluded_fractions"] == [0.0]
    assert comparison["conclusion"]["contrast"] == {"from": 0.05, "to": 0.5}
    assert "0% (initial)" in markdown and "left out of the AUROC comparison" in markdown
    assert "**From the initial backbone**: the silhouette" in markdown
    assert "(untrained head)" in markdown


def test_without_embeddings_the_geometry_is_untested_but_reported() -> None:
    comparison = build_comparison([make_run(0.01, features=False), make_run(0.1, features=False)])
    markdown = render_markdown(comparison)
    assert comparison["design"]["embeddings_available"] is False
    cohesion = comparison["classwise"]["Edema"]["cohesion"]
    assert cohesion["by_fraction"][0]["method"] == "none"
    assert cohesion["changes"][0]["call"] == "untested"
    assert "Embeddings were missing" in markdown
    assert_numbers_traceable(comparison, markdown)


def test_resampled_geometry_agrees_with_the_run_metrics() -> None:
    comparison = build_comparison([make_run(0.01), make_run(0.1)])
    run = make_run(0.1)
    edema = comparison["classwise"]["Edema"]
    at_10 = edema["cohesion"]["by_fraction"][1]
    relative = run.metrics["relative_geometry"]
    assert at_10["value"] == pytest.approx(relative["cohesion"]["Edema"])
    assert at_10["ci_low"] <= at_10["value"] <= at_10["ci_high"]
    assert at_10["unit"] == "patient"
    pair = comparison["structure"]["centroids"]["pairs"]
    consolidation_edema = next(p for p in pair if {p["a"], p["b"]} == {"Consolidation", "Edema"})
    matrix = relative["centroid_distances"]["matrix"]
    i, j = run.metrics["classes"].index("Consolidation"), run.metrics["classes"].index("Edema")
    assert consolidation_edema["distance"]["by_fraction"][1]["value"] == pytest.approx(matrix[i][j])
    silhouette = comparison["structure"]["overall"]["silhouette"]["by_fraction"][1]
    assert silhouette["value"] == pytest.approx(run.metrics["silhouette"]["value"])
    purity = edema["purity"]["by_fraction"][1]
    index = run.metrics["classes"].index("Edema")
    assert purity["value"] == pytest.approx(run.metrics["knn"]["mixing"]["matrix"][index][index])
    assert purity["ci_low"] <= purity["value"] <= purity["ci_high"]


# ---------------------------------------------------------------- verdicts and calls


@pytest.mark.parametrize(
    ("silhouette", "expected"),
    [
        (verdicts.SILHOUETTE_COMPACT + 1e-6, "compact"),
        (verdicts.SILHOUETTE_COMPACT - 1e-6, "loose"),
        (verdicts.SILHOUETTE_DIFFUSE, "loose"),
        (verdicts.SILHOUETTE_DIFFUSE - 1e-6, "diffuse"),
    ],
)
def test_compactness_flips_at_its_thresholds(silhouette: float, expected: str) -> None:
    assert verdicts.class_verdict(silhouette, 0.05, [])["compactness"] == expected


def test_mixing_and_partners_flip_at_their_thresholds() -> None:
    partners = [{"class": "Edema", "share": 0.31}, {"class": "Atelectasis", "share": 0.09}]
    below = verdicts.class_verdict(0.3, verdicts.MIXING_LOW - 1e-6, partners)
    assert below["mixing_level"] == "low" and below["partners"] == []
    above = verdicts.class_verdict(0.3, verdicts.MIXING_LOW, partners)
    assert above["mixing_level"] == "moderate" and above["partners"] == ["Edema"]
    partners[1]["share"] = verdicts.PARTNER_SHARE
    assert verdicts.class_verdict(0.3, verdicts.MIXING_HIGH, partners) == {
        "compactness": "compact",
        "mixing_level": "high",
        "partners": ["Edema", "Atelectasis"],
        "too_few": None,
    }


def _move_class(run: RunRecord, name: str, like: str | None, seed: int) -> RunRecord:
    """Redraw a class's single-label embeddings: inside class ``like``'s cloud, or (None)
    as a tight, far-away cluster of its own."""
    _positives, exclusive = _labels()
    x = run.feature_array.copy()
    rows = [i for i, e in enumerate(exclusive) if e == name]
    rng = np.random.default_rng(seed)
    if like is None:
        x[rows] = 40.0 + 0.1 * rng.normal(size=(len(rows), x.shape[1]))
    else:
        centre = x[[i for i, e in enumerate(exclusive) if e == like]].mean(axis=0)
        x[rows] = centre + rng.normal(size=(len(rows), x.shape[1]))
    run.feature_array = x.astype(np.float32)
    return run


def test_class_verdict_in_the_report_flips_when_the_numbers_cross() -> None:
    """Consolidation drawn inside Edema's cloud at 1% and on its own at 10%."""
    low = _move_class(make_run(0.01), "Consolidation", "Edema", seed=5)
    high = _move_class(make_run(0.1), "Consolidation", None, seed=5)
    comparison = build_comparison([low, high])
    rows = comparison["classwise"]["Consolidation"]["by_fraction"]
    assert rows[0]["verdict"]["mixing_level"] == "moderate"  # half its neighbours: Edema
    assert rows[0]["verdict"]["partners"] == ["Edema"]
    assert rows[0]["partners"][0]["lift"]["ci_low"] > 1
    assert rows[1]["verdict"]["compactness"] == "compact"
    assert rows[1]["verdict"]["partners"] == []
    markdown = render_markdown(comparison)
    line = next(x for x in markdown.splitlines() if x.startswith("- **Consolidation**"))
    assert "mixed with Edema 49% at 1% → compact" in line


def test_calls_follow_the_interval_rules() -> None:
    def one(value: float, half: float) -> dict[str, Any]:
        return aggregate([interval(value, value - half, value + half)], [0])

    assert difference(one(0.5, 0.03), one(0.6, 0.03))["call"] == "significant"  # 0.1 > 0.042
    assert difference(one(0.5, 0.03), one(0.53, 0.03))["call"] == "suggestive"  # ≥ 1 SE 0.022
    assert difference(one(0.5, 0.03), one(0.51, 0.03))["call"] == "within noise"
    assert difference(one(0.5, 0.03), aggregate([interval(0.7)], [0]))["call"] == "untested"
    quad = difference(one(0.5, 0.03), one(0.6, 0.04))
    assert quad["method"] == "quadrature"
    assert quad["ci_high"] - quad["delta"] == pytest.approx(0.05)  # √(0.03² + 0.04²)
    assert quad["intervals_overlap"] is False


def test_seed_estimates_use_t_and_welch() -> None:
    a = aggregate([interval(v) for v in (0.50, 0.52, 0.54)], [0, 1, 2])
    b = aggregate([interval(v) for v in (0.60, 0.61, 0.62)], [0, 1, 2])
    assert a["method"] == "t" and a["value"] == pytest.approx(0.52)
    assert a["ci_high"] - a["value"] == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)
    change = difference(a, b)
    assert change["method"] == "welch" and change["call"] == "significant"


def test_wilson_interval() -> None:
    block = wilson(0.5, 100)
    assert block["ci_low"] == pytest.approx(0.4038, abs=1e-4)
    assert block["ci_high"] == pytest.approx(0.5962, abs=1e-4)
    assert wilson(0.0, 10)["ci_low"] == 0.0 and wilson(0.0, 10)["ci_high"] > 0.2


def test_hedge_words_are_chosen_by_the_call(two_runs_report) -> None:
    comparison, markdown, _html, _out = two_runs_report
    for entry in comparison["classwise"].values():
        change = entry["silhouette"]["changes"][0]
        expected = {
            "significant": "significant)",
            "suggestive": "the 95% CI includes zero",
            "within noise": "within noise",
            "untested": "untested",
        }[change["call"]]
        assert expected in markdown


# ---------------------------------------------------------------- the page in a browser


@pytest.mark.skipif(
    chromium() is None,
    reason="chromium is not installed (apt-get install chromium enables this check)",
)
def test_html_renders_offline_in_headless_chromium(two_runs_report, tmp_path: Path) -> None:
    _comparison, _markdown, _html, out = two_runs_report
    png = tmp_path / "page.png"
    page = (out / "report.html").resolve().as_uri()
    args = (f"--screenshot={png}", "--window-size=1280,2000", page)
    command = chromium_command(str(chromium()), tmp_path / "profile", *args)
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_one_run_is_described_without_contrasts() -> None:
    comparison = build_comparison([make_run(0.1)])
    markdown = render_markdown(comparison)
    assert_numbers_traceable(comparison, markdown)
    assert comparison["conclusion"]["downstream"] is None
    assert comparison["classwise"]["Edema"]["silhouette"]["changes"] == []
    assert "One fraction only" in markdown


def test_a_one_seed_fraction_against_a_seeded_one_keeps_the_t_width() -> None:
    seeded = aggregate([interval(v) for v in (0.60, 0.62)], [0, 1])
    single = aggregate([interval(0.50, 0.49, 0.51)], [0])
    change = difference(single, seeded)
    t_half = seeded["ci_high"] - seeded["value"]  # 12.7 · sd / √2: two seeds, one df
    assert change["method"] == "quadrature"
    assert change["ci_high"] - change["delta"] == pytest.approx(math.hypot(t_half, 0.01))
