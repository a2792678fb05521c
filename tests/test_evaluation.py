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


# ---------------------------------------------------------------- certain labels, patients


def test_an_uncertain_label_never_enters_an_auroc() -> None:
    """−1 is left out of its class whatever the training policy; blank is a negative."""
    from chexflow.evaluation import certain_labels

    values = np.array([[1.0], [1.0], [-1.0], [-1.0], [0.0], [np.nan], [0.0]])
    # The uncertain images score highest: counted as positives (U-Ones) they would raise
    # the AUROC, as negatives (U-Zeros) lower it; left out, it is exactly 5/6.
    probs = np.array([[0.6], [0.3], [0.9], [0.95], [0.5], [0.2], [0.1]], dtype=np.float32)
    targets, mask, uncertain = certain_labels(values)
    table = auroc_table(probs, targets, mask, ("A",), n_bootstrap=0)
    row = table["classes"]["A"]
    assert (row["n_pos"], row["n_neg"], row["n_uncertain_excluded"]) == (2, 3, 2)
    assert row["auroc"] == pytest.approx(5 / 6)
    assert uncertain[:, 0].tolist() == [False, False, True, True, False, False, False]


def test_certain_membership_leaves_images_with_an_uncertain_class_out_of_single_label() -> None:
    from chexflow.data.labels import EVAL_CLASSES
    from chexflow.evaluation import certain_membership

    values = np.full((3, len(EVAL_CLASSES)), np.nan)
    values[:, 0] = 1.0  # Atelectasis positive in all three
    values[1, 3] = -1.0  # the second is uncertain for Edema
    values[2, 2] = 1.0  # the third is also Consolidation
    positives, exclusive = certain_membership(values)
    assert exclusive == ["Atelectasis", None, None]
    assert positives[2] == ("Atelectasis", "Consolidation")


def test_patients_with_correlated_images_give_wider_intervals() -> None:
    """Each patient's 5 images share one score: 60 patients, not 300 independent images."""
    rng = np.random.default_rng(0)
    n_patients, per = 60, 5
    label = rng.random(n_patients) < 0.4
    score = rng.normal(size=n_patients) + label
    probs = np.repeat(score, per)[:, None].astype(np.float32)
    targets = np.repeat(label, per)[:, None].astype(np.float32)
    mask = np.ones_like(targets)
    patients = np.repeat(np.arange(n_patients), per)
    by_image = auroc_table(probs, targets, mask, ("A",), 400, seed=1)
    by_patient = auroc_table(probs, targets, mask, ("A",), 400, seed=1, patients=patients)
    width = {
        name: t["classes"]["A"]["ci_high"] - t["classes"]["A"]["ci_low"]
        for name, t in (("image", by_image), ("patient", by_patient))
    }
    assert by_patient["bootstrap"]["unit"] == "patient" and by_image["bootstrap"]["unit"] == "image"
    assert by_patient["classes"]["A"]["auroc"] == by_image["classes"]["A"]["auroc"]
    assert width["patient"] > 1.6 * width["image"]  # ≈ √5 for perfectly correlated images
    low, high = by_patient["classes"]["A"]["ci_low"], by_patient["classes"]["A"]["ci_high"]
    assert low <= by_patient["classes"]["A"]["auroc"] <= high
