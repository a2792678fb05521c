"""Guards against degenerate numbers before they become confident-looking metrics.

A collapsed embedding space (every image mapped to one point, or NaN from a diverged
model) has no cluster structure, yet scikit-learn's Davies–Bouldin index of it is 0.0 —
the *best* score — and scipy's distance code raises on it further on. The cluster
metrics call ``check_not_collapsed`` first and end in one line instead.
"""

from __future__ import annotations

import numpy as np

from chexflow.errors import DataError

# Spread below this share of the embeddings' scale is float32 rounding, not structure.
RELATIVE_SPREAD_FLOOR = 1e-6


def collapse_problem(features: np.ndarray) -> str | None:
    """Why ``features`` ``[n, d]`` cannot be measured as a space, or None when it can.

    Collapsed means: a value is NaN or infinite, or the root-mean-square distance of the
    rows to their centroid is at most ``RELATIVE_SPREAD_FLOOR`` times the root-mean-square
    norm of the rows (all rows equal, up to rounding; all-zero rows included).
    Arrays that are not 2-D with at least 2 rows are left to the caller's shape checks.
    """
    x = np.asarray(features)
    if x.ndim != 2 or len(x) < 2 or x.shape[1] == 0:
        return None
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        return (
            f"{bad} of {len(x)} rows hold NaN or infinite values (first at row "
            f"{int(np.flatnonzero(~finite)[0])}); the model diverged or its weights are damaged"
        )
    x = x.astype(np.float64)
    spread = float(np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()))
    scale = float(np.sqrt((x**2).sum(axis=1).mean()))
    if spread <= RELATIVE_SPREAD_FLOOR * scale or spread == 0.0:
        return (
            f"all {len(x)} rows are the same point (spread {spread:.3g} at scale "
            f"{scale:.3g}); the model maps every image alike, so no cluster metric is defined"
        )
    return None


def check_not_collapsed(features: np.ndarray) -> None:
    """Raise when ``features`` are collapsed (``collapse_problem``).

    Raises:
        DataError: ``embeddings collapsed: <why>`` in one line.
    """
    problem = collapse_problem(features)
    if problem is not None:
        raise DataError(f"embeddings collapsed: {problem}")
