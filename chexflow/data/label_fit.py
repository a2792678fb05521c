"""Fit the synthetic label model to measured CheXpert statistics (no hand-tuned tables).

Three distributions are fitted to a statistics dict shaped like
`chexflow.data.reference_stats.CHEXPERT_TRAIN_STATS`:

- `fit_combinations`: the distribution over the 33 *states* of a study's six evaluation
  classes (which of the 5 pathologies are positive, or No Finding). The reference gives
  marginals, pairwise co-occurrences, single-label shares and the share with none of the
  six, not the full joint; the fit is the maximum-entropy distribution that meets all of
  them (Jaynes 1957; the log-linear model of Berger et al. 1996, solved by Newton's
  method on its dual). Higher-order co-occurrence is as uninformative as those figures
  allow.
- `fit_persistence`: a reversible Markov chain over the states for a patient's next
  study. Its pair distribution (this study, next study) is the one closest to the
  independent pair, by iterative proportional fitting (Deming & Stephan 1940), whose
  two margins are the state distribution and whose "positive in both" mass per class
  gives the reference's repeat rate; so every study, first or later, has the fitted
  state distribution.
- `fit_studies_per_patient`: a heavy-tailed count distribution on 1..max, smooth in
  log-log, through the reference's share of single-study patients, share with 8 or
  more, mean, 0.99 quantile and maximum.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from chexflow.data.labels import NORMAL_COLUMN, PATHOLOGIES

N_STATES = 2 ** len(PATHOLOGIES) + 1
NORMAL_STATE = N_STATES - 1  # No Finding; state k < 32 has pathology i positive iff bit i
_IPF_SWEEPS = 5000
_IPF_TOLERANCE = 1e-9
# The survival at the 0.99 quantile is set this far under 1%, so that a sample's 0.99
# quantile stays at the reference's rather than one study above.
_INSIDE = 0.95


def state_positives(state: int) -> tuple[str, ...]:
    """The pathologies positive in ``state`` (empty for No Finding and for none of six)."""
    if state == NORMAL_STATE:
        return ()
    return tuple(p for i, p in enumerate(PATHOLOGIES) if state >> i & 1)


def _class_masks() -> dict[str, np.ndarray]:
    """Per class (5 pathologies and No Finding), which states have it positive."""
    bits = np.array([[s >> i & 1 for i in range(len(PATHOLOGIES))] for s in range(N_STATES)])
    bits[NORMAL_STATE] = 0
    masks = {p: bits[:, i].astype(bool) for i, p in enumerate(PATHOLOGIES)}
    masks[NORMAL_COLUMN] = np.arange(N_STATES) == NORMAL_STATE
    return masks


def _max_entropy(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The maximum-entropy distribution with ``E[features] == targets``, by Newton's method.

    Minimises the convex dual ``log sum_x exp(features[x] @ lam) - lam @ targets``
    (Berger et al. 1996); ``features`` is (states, constraints) in {0, 1}.
    """

    def dual(lam: np.ndarray) -> float:
        z = features @ lam
        return float(np.log(np.exp(z - z.max()).sum()) + z.max() - lam @ targets)

    lam = np.zeros(features.shape[1])
    for _ in range(100):
        z = features @ lam
        q = np.exp(z - z.max())
        q /= q.sum()
        mean = features.T @ q
        gradient = mean - targets
        if np.abs(gradient).max() < 1e-12:
            break
        hessian = (features.T * q) @ features - np.outer(mean, mean)
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(lam)), gradient)
        size, before = 1.0, dual(lam)
        while dual(lam - size * step) > before and size > 1e-6:
            size /= 2
        lam = lam - size * step
    z = features @ lam
    q = np.exp(z - z.max())
    return q / q.sum()


def fit_combinations(stats: Mapping[str, Any]) -> np.ndarray:
    """Probability of each state (length `N_STATES`), meeting the reference's figures.

    Constraints: positive share of each of the six classes, the 10 pairwise
    co-occurrences (the mean of ``P(A|B) P(B)`` and ``P(B|A) P(A)``, which agree to the
    reference's rounding), each class's single-label share and the share with none of
    the six. The fit meets them to 1e-12.
    """
    masks = _class_masks()
    per_class, conditional = stats["per_class"], stats["conditional_positive"]
    prevalence = {c: per_class[c]["positive_share"] for c in masks}
    constraints = [(masks[c], prevalence[c]) for c in masks]
    for a, b in itertools.combinations(PATHOLOGIES, 2):
        joint = conditional[f"P({b} | {a})"] * prevalence[a]
        joint += conditional[f"P({a} | {b})"] * prevalence[b]
        constraints.append((masks[a] & masks[b], joint / 2))
    count = sum(masks[p].astype(int) for p in PATHOLOGIES)
    for p in PATHOLOGIES:
        constraints.append((masks[p] & (count == 1), stats["single_label_share"][p]))
    none = (count == 0) & ~masks[NORMAL_COLUMN]
    constraints.append((none, stats["images_with_none_of_six"]))
    features = np.column_stack([mask for mask, _ in constraints]).astype(float)
    return _max_entropy(features, np.array([target for _, target in constraints]))


def fit_persistence(states: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """Transition matrix ``T[x, y]`` = P(next study in state y | this one in state x).

    ``states`` is `fit_combinations`' result; it is the chain's stationary distribution.
    Classes without a repeat rate in ``stats["positive_again_in_next_study"]`` (the
    reference has none for Cardiomegaly) are left as their co-occurrences carry them.
    """
    masks = _class_masks()
    both = {
        name: (np.outer(masks[name], masks[name]), rate * float(states[masks[name]].sum()))
        for name, rate in stats["positive_again_in_next_study"].items()
    }
    pair = np.outer(states, states)
    for _ in range(_IPF_SWEEPS):
        pair *= (states / pair.sum(axis=1))[:, None]  # this study's margin
        pair *= (states / pair.sum(axis=0))[None, :]  # the next study's margin
        for mask, target in both.values():
            inside = pair[mask].sum()
            pair[mask] *= target / inside
            pair[~mask] *= (1 - target) / (1 - inside)
        pair = (pair + pair.T) / 2  # the I-projection of a symmetric start is symmetric
        worst = max(abs(pair[m].sum() - t) for m, t in both.values())
        if max(worst, float(np.abs(pair.sum(axis=1) - states).max())) < _IPF_TOLERANCE:
            break
    return pair / pair.sum(axis=1, keepdims=True)


def _survival(counts: np.ndarray, start: float, coefficients: np.ndarray) -> np.ndarray:
    """``S(n) = P(N > n)`` with ``log S = log start - sum_k c_k (log n)^k``, 0 at the end."""
    log_n = np.log(counts)
    exponent = sum(c * log_n ** (k + 1) for k, c in enumerate(coefficients))
    survival = start * np.exp(-exponent)
    survival[-1] = 0.0
    return survival


def fit_studies_per_patient(stats: Mapping[str, Any]) -> np.ndarray:
    """P(N = n) for n = 1..max studies (index n - 1), with the reference's shape.

    The survival ``S(n) = P(N > n)`` is smooth in log-log: ``log S(n)`` is a quartic in
    ``log n`` whose constant term gives the share of one-study patients and whose four
    coefficients (Newton's method) give the share with 8 or more, the mean, ``S`` just
    under 1% at the 0.99 quantile (20 studies) and one patient of the reference's
    population above ``max - 1``. The median, 0.75 and 0.9 quantiles then come out as
    the reference's (1, 3, 6), and the probabilities decrease with ``n``.
    """
    spp = stats["studies_per_patient"]
    top = int(spp["max"])
    counts = np.arange(1, top + 1)
    start = 1 - spp["share_1"]
    q99 = int(spp["quantiles"]["0.99"])

    def residuals(coefficients: np.ndarray) -> np.ndarray:
        survival = _survival(counts, start, coefficients)
        return np.array(
            [
                np.log(survival[7 - 1] / spp["share_ge_8"]),
                1 + survival.sum() - spp["mean"],
                np.log(survival[q99 - 1] / (0.01 * _INSIDE)),
                np.log(survival[top - 2] * stats["patients"]),
            ]
        )

    coefficients = np.array([0.5, 0.2, 0.0, 0.0])
    for _ in range(100):
        r = residuals(coefficients)
        if np.abs(r).max() < 1e-12:
            break
        jacobian = np.column_stack(
            [(residuals(coefficients + 1e-7 * e) - r) / 1e-7 for e in np.eye(4)]
        )
        coefficients = coefficients - np.linalg.solve(jacobian, r)
    survival = _survival(counts, start, coefficients)
    return np.concatenate([[1.0], survival[:-1]]) - survival
