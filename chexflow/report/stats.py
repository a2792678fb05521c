"""Intervals for groups of runs and for differences between groups.

An *interval* is ``{"value", "ci_low", "ci_high", "method", "se"}`` for one run
(``se``: the bootstrap standard deviation where the report resampled, else None). An
*estimate* is the same for one fraction (all its seeds), plus ``n_seeds``, ``sd`` and
``per_seed``. A *difference* compares two estimates and carries the call the report's
wording follows (``CALLS``). Everything is plain JSON-ready data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from chexflow.analysis.bootstrap import percentile_interval

CI_LEVEL = 0.95
Z_CI = float(scipy_stats.norm.ppf(0.5 + CI_LEVEL / 2))  # 1.96
# The four calls a difference can get, from its 95% CI and its standard error.
SIGNIFICANT = "significant"  # the 95% CI of the difference excludes 0
SUGGESTIVE = "suggestive"  # it includes 0, but |difference| ≥ 1 standard error
WITHIN_NOISE = "within noise"  # |difference| < 1 standard error
UNTESTED = "untested"  # no interval on at least one side
TOO_FEW = "too few patients"  # a class below the minimum number of patients: no call
CALLS = (SIGNIFICANT, SUGGESTIVE, WITHIN_NOISE, UNTESTED, TOO_FEW)
MIN_SEEDS_FOR_T = 2


def interval(
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    method: str = "bootstrap",
    se: float | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """One run's value and 95% interval; ``method`` is ``none`` without an interval.

    ``unit`` is what was resampled (``patient``, ``image``, ``seed``). The interval is
    widened to contain ``value`` if it does not: no printed interval excludes its point.
    """
    value = _finite(value)
    low, high, se = _finite(low), _finite(high), _finite(se)
    if value is None or low is None or high is None:
        low = high = se = unit = None
        method = "none"
    else:
        low, high = min(low, value), max(high, value)
    return {
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "method": method,
        "unit": unit,
        "se": se,
    }


def wilson(share: float | None, n: int | None) -> dict[str, Any]:
    """A proportion of ``n`` independent images with its Wilson score interval."""
    if share is None or not n:
        return interval(share)
    z2 = Z_CI**2
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_CI * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return interval(share, max(0.0, centre - half), min(1.0, centre + half), "wilson", unit="image")


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def t_half_width(sd: float, n: int) -> float:
    """Half-width of the two-sided t-interval of a mean of ``n`` values."""
    return float(scipy_stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1)) * sd / math.sqrt(n)


def aggregate(
    intervals: Sequence[dict[str, Any] | None],
    seeds: Sequence[int],
    bounds: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """The estimate of one fraction from its runs (one per seed).

    One seed: that run's value and its own interval (bootstrap, Wilson or none).
    Several: the mean across seeds with a t-interval (``method: "t"``), which measures
    training randomness (subset draw, initialisation), clipped to the quantity's natural
    range ``bounds``; ``se`` keeps the unclipped spread for differences. The per-run
    intervals stay in ``per_seed``.
    """
    runs = [
        {"seed": int(s), **{k: iv[k] for k in ("value", "ci_low", "ci_high")}}
        for s, iv in zip(seeds, intervals, strict=True)
        if iv is not None and iv.get("value") is not None
    ]
    if not runs:
        return {**interval(None), "n_seeds": 0, "sd": None, "per_seed": []}
    if len(runs) == 1:
        iv = next(iv for iv in intervals if iv is not None and iv.get("value") is not None)
        return {**iv, "n_seeds": 1, "sd": None, "per_seed": runs}
    values = np.array([r["value"] for r in runs], dtype=np.float64)
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = t_half_width(sd, len(values))
    low, high = mean - half, mean + half
    if bounds[0] is not None:
        low = max(low, bounds[0])
    if bounds[1] is not None:
        high = min(high, bounds[1])
    return {
        **interval(mean, low, high, "t", sd / math.sqrt(len(values)), unit="seed"),
        "n_seeds": len(runs),
        "sd": sd,
        "per_seed": runs,
    }


def standard_error(estimate: dict[str, Any]) -> float | None:
    """What goes into the quadrature: the bootstrap SD where the report resampled; for a
    t-estimate its (unclipped) t half-width / 1.96, so few seeds keep their wide interval;
    else the 95% half-width / 1.96."""
    if estimate.get("ci_low") is None or estimate.get("ci_high") is None:
        return None
    if estimate.get("method") == "t":
        return t_half_width(estimate["sd"], estimate["n_seeds"]) / Z_CI
    if estimate.get("se") is not None:
        return estimate["se"]
    return (estimate["ci_high"] - estimate["ci_low"]) / 2 / Z_CI


def _welch(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """Standard error and 95% half-width of ``mean(b) - mean(a)`` (Welch)."""
    va, vb = a["sd"] ** 2 / a["n_seeds"], b["sd"] ** 2 / b["n_seeds"]
    se = math.sqrt(va + vb)
    if se == 0.0:
        return 0.0, 0.0
    df = (va + vb) ** 2 / (va**2 / (a["n_seeds"] - 1) + vb**2 / (b["n_seeds"] - 1))
    return se, float(scipy_stats.t.ppf(0.5 + CI_LEVEL / 2, df)) * se


def difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b - a`` with its 95% CI, the method, the call and whether the CIs overlap.

    Both fractions with ≥ 2 seeds: Welch's t-interval on the seed values. Otherwise the
    two standard errors in quadrature, ``1.96·sqrt(se_a² + se_b²)`` — for intervals
    without a bootstrap SD, ``se = half-width / 1.96``, so this is the two 95% half-widths
    in quadrature. The runs are treated as independent; both fractions are scored on the
    same images, so this is conservative.
    """
    if a.get("value") is None or b.get("value") is None:
        return _untested(None)
    delta = b["value"] - a["value"]
    if a["n_seeds"] >= MIN_SEEDS_FOR_T and b["n_seeds"] >= MIN_SEEDS_FOR_T:
        se, half = _welch(a, b)
        method = "welch"
    else:
        sa, sb = standard_error(a), standard_error(b)
        if sa is None or sb is None:
            return _untested(delta)
        se, method = math.hypot(sa, sb), "quadrature"
        half = Z_CI * se
    return {
        "delta": delta,
        "ci_low": delta - half,
        "ci_high": delta + half,
        "method": method,
        "unit": "seed" if method == "welch" else "run",
        "se": se,
        "p": _p_normal(delta, se),
        "call": call(delta, half, se),
        "intervals_overlap": _overlap(a, b),
    }


def _p_normal(delta: float, se: float) -> float:
    """Two-sided p-value of ``delta`` under a normal null with standard error ``se``."""
    if se <= 0:
        return 0.0 if delta != 0 else 1.0
    return float(2 * scipy_stats.norm.sf(abs(delta) / se))


def paired_difference(
    a: dict[str, Any],
    b: dict[str, Any],
    samples_a: np.ndarray,
    samples_b: np.ndarray,
    shift: bool = False,
) -> dict[str, Any]:
    """``b − a`` from the two estimates' samples on the *same* patient resamples.

    Resample r of both sides holds the same patients, so ``samples_b[r] − samples_a[r]``
    is a paired bootstrap of the difference (seeds, where drawn, are drawn independently
    per side). 95% percentile interval (shifted by the resampling bias for geometry),
    widened to contain the difference; ``p`` from the bootstrap standard error.
    """
    if a.get("value") is None or b.get("value") is None:
        return _untested(None)
    delta = b["value"] - a["value"]
    diffs = np.asarray(samples_b, dtype=np.float64) - np.asarray(samples_a, dtype=np.float64)
    finite = diffs[np.isfinite(diffs)]
    if finite.size < 2:
        return _untested(delta)
    low, high = percentile_interval(delta, finite, CI_LEVEL, shift=shift)
    se = float(finite.std(ddof=1))
    return {
        "delta": delta,
        "ci_low": low,
        "ci_high": high,
        "method": "paired bootstrap"
        + (" (seeds, then patients)" if max(a["n_seeds"], b["n_seeds"]) > 1 else ""),
        "unit": "patient",
        "se": se,
        "p": _p_normal(delta, se),
        "call": SIGNIFICANT
        if low > 0 or high < 0
        else (SUGGESTIVE if se > 0 and abs(delta) >= se else WITHIN_NOISE),
        "intervals_overlap": _overlap(a, b),
    }


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input order.

    Benjamini & Hochberg (1995): sort ascending, ``q_(i) = min_{j ≥ i} p_(j) · m / j``,
    capped at 1. A call at false discovery rate α keeps the p-values with q ≤ α.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def _untested(delta: float | None) -> dict[str, Any]:
    return {
        "delta": delta,
        "ci_low": None,
        "ci_high": None,
        "method": "none",
        "unit": None,
        "se": None,
        "p": None,
        "call": UNTESTED,
        "intervals_overlap": None,
    }


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    if None in (a.get("ci_low"), a.get("ci_high"), b.get("ci_low"), b.get("ci_high")):
        return None
    return bool(a["ci_high"] >= b["ci_low"] and b["ci_high"] >= a["ci_low"])


def call(delta: float, half_width: float, se: float) -> str:
    """The rule behind every hedge word: 95% CI excludes 0, ≥ 1 SE, or less."""
    if abs(delta) > half_width:
        return SIGNIFICANT
    if se > 0 and abs(delta) >= se:
        return SUGGESTIVE
    return WITHIN_NOISE


def bootstrap_interval(
    point: float, samples: np.ndarray, scale: float = 1.0, shift: bool = False
) -> tuple[float | None, float | None, float | None]:
    """95% interval and standard error of ``point`` from bootstrap ``samples`` of it.

    Percentile interval by default. ``shift`` moves it by the resampling bias
    (``point − mean(samples)``): distances between resampled centroids are biased up and
    resampled cohesion down, as duplicated images pull a centroid towards themselves.
    ``samples`` from a subsample of the data have their deviations from the sample mean
    scaled by ``scale`` (√(subsample / full size)) and put around ``point``.
    """
    finite = samples[np.isfinite(samples)]
    if finite.size < 2:
        return None, None, None
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    se = float(finite.std(ddof=1)) * scale
    if not shift and scale == 1.0:
        return float(low), float(high), se
    centre = float(finite.mean())
    return point + (low - centre) * scale, point + (high - centre) * scale, se


def seed_draws(n_seeds: int, n_resamples: int, seed: int) -> np.ndarray:
    """Which seeds each two-level resample uses ``[B, n_seeds]`` (drawn with replacement)."""
    if n_seeds <= 1:
        return np.zeros((n_resamples, max(n_seeds, 1)), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n_seeds, size=(n_resamples, n_seeds))


def two_level_samples(stack: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Two-level bootstrap samples ``[B]`` of a mean over seeds.

    ``stack[s, r]`` is seed s's value on patient resample r; resample r averages the
    seeds ``draws[r]`` (drawn with replacement), each on the same patient resample r:
    seeds first, then patients (Davison & Hinkley 1997, §3.8), so the spread holds both
    training randomness and evaluation sampling.
    """
    columns = np.arange(stack.shape[1])[:, None]
    with np.errstate(invalid="ignore"):
        return np.nanmean(stack[draws, columns], axis=1)


def sampled_estimate(
    points: Sequence[float],
    stack: np.ndarray,
    draws: np.ndarray,
    seeds: Sequence[int],
    per_seed: Sequence[dict[str, Any]],
    shift: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """One fraction's estimate from its seeds' values and shared-resample samples.

    Value: the mean over seeds; interval: 95% percentile of the two-level samples
    (``two_level_samples``; one seed: its patient bootstrap), shifted by the resampling
    bias where ``shift``, and containing the value. Returns the estimate and its samples.
    """
    values = np.asarray(points, dtype=np.float64)
    mean = float(values.mean())
    samples = two_level_samples(stack, draws)
    low, high = percentile_interval(mean, samples, CI_LEVEL, shift=shift)
    finite = samples[np.isfinite(samples)]
    se = float(finite.std(ddof=1)) if finite.size >= 2 else None
    n = len(values)
    method = "two-level bootstrap (seeds, then patients)" if n > 1 else "bootstrap"
    if shift:
        method = "bias-shifted " + method
    estimate = {
        **interval(mean, low, high, method, se, unit="patient" if n == 1 else "seed, patient"),
        "n_seeds": n,
        "sd": float(values.std(ddof=1)) if n > 1 else None,
        "per_seed": [
            {"seed": int(s), **{k: iv[k] for k in ("value", "ci_low", "ci_high")}}
            for s, iv in zip(seeds, per_seed, strict=True)
        ],
    }
    return estimate, samples
