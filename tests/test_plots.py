"""Figures render headless to non-empty PNGs; write_analysis lays out a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chexflow.analysis import plots
from chexflow.analysis.run_analysis import analyse_embeddings, write_analysis
from chexflow.config import AnalysisConfig
from chexflow.data.labels import EVAL_CLASSES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def labelled_points(n_per_class: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(EVAL_CLASSES), 16)) * 4
    features, positives, exclusive = [], [], []
    for c, name in enumerate(EVAL_CLASSES):
        features.append(centres[c] + rng.normal(size=(n_per_class, 16)))
        positives += [(name,)] * n_per_class
        exclusive += [name] * n_per_class
    features.append((centres[0] + centres[3]) / 2 + rng.normal(size=(6, 16)))
    positives += [(EVAL_CLASSES[0], EVAL_CLASSES[3])] * 6
    exclusive += [None] * 6
    features.append(rng.normal(size=(4, 16)))
    positives += [()] * 4
    exclusive += [None] * 4
    return np.vstack(features).astype(np.float32), positives, exclusive


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5_000


def test_palette_is_fixed_and_distinct() -> None:
    assert list(plots.CLASS_COLORS) == list(EVAL_CLASSES)
    assert len(set(plots.CLASS_COLORS.values())) == len(EVAL_CLASSES)


def test_plot_map_and_side_by_side(tmp_path: Path) -> None:
    _, positives, exclusive = labelled_points()
    coords = np.random.default_rng(0).normal(size=(len(exclusive), 2))
    assert_png(plots.plot_map(coords, exclusive, positives, "1% — t-SNE", tmp_path / "map.png"))
    maps = {"1%": coords, "10%": coords * 2, "100%": -coords}
    assert_png(plots.plot_maps_side_by_side(maps, exclusive, positives, tmp_path / "side.png"))


def test_plot_mixing_with_difference_panel(tmp_path: Path) -> None:
    classes = list(EVAL_CLASSES[:3])
    first = np.full((3, 3), 1 / 3).tolist()
    last = np.eye(3).tolist()
    last[2] = [None, None, None]  # a class without queries
    path = plots.plot_mixing({"1%": (classes, first), "10%": (classes, last)}, tmp_path / "m.png")
    assert_png(path)
    assert_png(plots.plot_mixing({"only": (classes, first)}, tmp_path / "single.png"))


def test_plot_silhouette_bars_with_missing_intervals(tmp_path: Path) -> None:
    per_label = {
        "1%": {"Edema": {"value": 0.1, "ci_low": 0.05, "ci_high": 0.15}},
        "10%": {
            "Edema": {"value": 0.3, "ci_low": None, "ci_high": None},
            "Normal": {"value": -0.1, "ci_low": -0.2, "ci_high": 0.0},
        },
    }
    assert_png(plots.plot_silhouette_bars(per_label, tmp_path / "bars.png"))


@pytest.mark.filterwarnings("ignore:perplexity")
def test_write_analysis_lays_out_the_run_folder(tmp_path: Path) -> None:
    features, positives, exclusive = labelled_points()
    cfg = AnalysisConfig(tsne_seeds=[0, 1], bootstrap=20, kmeans_seeds=1)
    result = analyse_embeddings(features, positives, exclusive, cfg)
    written = write_analysis(result, tmp_path, "1% seed 0")
    metrics = json.loads((tmp_path / "metrics" / "cluster_metrics.json").read_text())
    assert metrics == result.metrics and metrics["primary_map"] == "tsne_s0_p30"
    for key in ("tsne_s0_p30", "tsne_s1_p30", "tsne", "pca"):
        coords = np.load(tmp_path / "maps" / f"{key}.npy", allow_pickle=False)
        assert coords.shape == (len(features), 2) and coords.dtype == np.float32
    for name in ("tsne", "pca", "silhouette_by_class", "mixing", "tsne_maps"):
        assert_png(written[f"plot:{name}"])
    assert metrics["map_stability"]["n_maps"] == 2
    assert metrics["n_no_class"] == 4 and metrics["n_multilabel"] == 6


def test_reference_map_sets_the_orientation(tmp_path: Path) -> None:
    features, positives, exclusive = labelled_points()
    cfg = AnalysisConfig(bootstrap=0, kmeans_seeds=1)
    first = analyse_embeddings(features, positives, exclusive, cfg)
    flipped = first.maps["tsne"] * np.array([-1.0, 1.0], dtype=np.float32)
    second = analyse_embeddings(features, positives, exclusive, cfg, reference_map=flipped)
    np.testing.assert_allclose(second.maps["tsne"], flipped, atol=1e-3)
    assert second.metrics["alignment"]["to"] == "reference"
    assert second.metrics["silhouette"]["ci_low"] is None  # bootstrap=0: no interval
