"""predict and auroc_table: exact AUROC, bootstrap CIs, undefined classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from chexflow.evaluation import auroc_table, predict

CLASSES = ("A", "B", "C")


def scored(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores rounded to 1 decimal (many ties), correlated with labels; ~20% masked."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, len(CLASSES))) < 0.3).astype(np.float32)
    probs = np.clip(0.35 * targets + rng.random((n, len(CLASSES))) * 0.7, 0, 1).round(1)
    mask = (rng.random((n, len(CLASSES))) > 0.2).astype(np.float32)
    return probs.astype(np.float32), targets, mask


def sklearn_auroc(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray, j: int) -> float:
    keep = mask[:, j] > 0
    return float(roc_auc_score(targets[keep, j], probs[keep, j]))


def test_point_estimate_matches_sklearn_with_ties_and_mask() -> None:
    probs, targets, mask = scored()
    table = auroc_table(probs, targets, mask, CLASSES, n_bootstrap=0)
    for j, name in enumerate(CLASSES):
        row = table["classes"][name]
        assert row["auroc"] == pytest.approx(sklearn_auroc(probs, targets, mask, j), abs=1e-12)
        assert row["n_pos"] + row["n_neg"] == int(mask[:, j].sum())
        assert row["ci_low"] is None and row["ci_high"] is None
    expected = np.mean([table["classes"][c]["auroc"] for c in CLASSES])
    assert table["mean"] == pytest.approx(expected) and table["n"] == 300


def test_bootstrap_resamples_match_sklearn_on_the_same_draws() -> None:
    probs, targets, mask = scored(n=120)
    table = auroc_table(probs, targets, mask, CLASSES, n_bootstrap=150, seed=3)
    draws = np.random.default_rng(3).integers(0, 120, size=(150, 120))
    for j, name in enumerate(CLASSES):
        aurocs = [sklearn_auroc(probs[d], targets[d], mask[d], j) for d in draws]
        low, high = np.percentile(aurocs, [2.5, 97.5])
        row = table["classes"][name]
        assert row["ci_low"] == pytest.approx(low, abs=1e-12)
        assert row["ci_high"] == pytest.approx(high, abs=1e-12)
        assert row["ci_low"] <= row["auroc"] <= row["ci_high"]
    assert table["mean_ci_low"] <= table["mean"] <= table["mean_ci_high"]


def test_bootstrap_is_seeded() -> None:
    probs, targets, mask = scored(n=80)
    first = auroc_table(probs, targets, mask, CLASSES, n_bootstrap=50, seed=1)
    assert first == auroc_table(probs, targets, mask, CLASSES, n_bootstrap=50, seed=1)
    assert first != auroc_table(probs, targets, mask, CLASSES, n_bootstrap=50, seed=2)


def test_undefined_classes_are_reported_not_dropped() -> None:
    probs, targets, mask = scored(n=50)
    targets[:, 1] = 0  # B: no positives
    mask[:, 2] = 0  # C: nothing labelled
    table = auroc_table(probs, targets, mask, CLASSES, n_bootstrap=20)
    b, c = table["classes"]["B"], table["classes"]["C"]
    assert (b["defined"], b["auroc"], b["reason"]) == (False, None, "no positive images")
    assert (c["defined"], c["n_pos"], c["n_neg"]) == (False, 0, 0)
    assert "masked" in c["reason"]
    assert table["mean"] == table["classes"]["A"]["auroc"]
    nothing = auroc_table(probs, targets * 0, mask, CLASSES, n_bootstrap=20)
    assert nothing["mean"] is None and nothing["mean_ci_low"] is None


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_predict_returns_probabilities_and_restores_mode() -> None:
    model = _Linear().train()
    data = TensorDataset(torch.randn(10, 1, 2, 2), torch.ones(10, 3), torch.zeros(10, 3))
    probs, targets, mask = predict(model, DataLoader(data, batch_size=4), torch.device("cpu"))
    assert probs.shape == targets.shape == mask.shape == (10, 3)
    assert probs.dtype == np.float32 and ((probs > 0) & (probs < 1)).all()
    with torch.no_grad():
        expected = torch.sigmoid(model(data.tensors[0])).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    assert model.training
