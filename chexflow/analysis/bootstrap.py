"""The cluster (patient) bootstrap every interval of chexflow is drawn from.

Images of one patient are not independent (real CheXpert patients have up to 91
studies), so the resampling unit is the patient: a resample draws patients with
replacement and every image of a drawn patient comes along, as often as its patient was
drawn (Davison & Hinkley 1997, §3.8, "resampling clusters"; Field & Welsh 2007). A
resample is held as count weights per image, so statistics are weighted sums and nothing
is refitted. Two runs that embed the same images and use the same seed get the *same*
resamples: their difference is a paired bootstrap over patients.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

UNIT_PATIENT = "patient"
UNIT_IMAGE = "image"
# Cells of [resamples, images] weights held at once (float32: 4 bytes each).
MAX_CELLS = 1 << 23


def patient_codes(patients: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray:
    """Integer patient code per image ``[n]`` (0..P-1, in order of first appearance).

    ``None`` makes every image its own patient (an image-level bootstrap).

    Raises:
        ValueError: ``patients`` does not have ``n`` entries.
    """
    if patients is None:
        return np.arange(n, dtype=np.int64)
    values = np.asarray([str(p) for p in patients], dtype=object)
    if len(values) != n:
        raise ValueError(f"{len(values)} patient ids for {n} images")
    _, first, codes = np.unique(values, return_index=True, return_inverse=True)
    # Renumber by first appearance so codes do not depend on how ids sort.
    order = np.argsort(np.argsort(first))
    return order[codes.reshape(-1)].astype(np.int64)


def unit_of(codes: np.ndarray) -> str:
    """``patient`` when some patient has several images, else ``image``."""
    return UNIT_PATIENT if len(np.unique(codes)) < len(codes) else UNIT_IMAGE


def cluster_weights(
    codes: np.ndarray, n_resamples: int, seed: int, max_rows: int | None = None
) -> Iterator[np.ndarray]:
    """Yield patient-bootstrap resamples as image count weights, ``[rows, n]`` float32 chunks.

    Row r holds, for each image, how often its patient was drawn in resample r (P
    patients drawn with replacement out of P). The draws depend only on ``seed``, the
    number of patients and ``n_resamples``, so equal inputs give equal resamples.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n_patients = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    rows = max(1, MAX_CELLS // max(1, len(codes), n_patients))
    if max_rows is not None:
        rows = min(rows, max_rows)
    done = 0
    while done < n_resamples:
        m = min(rows, n_resamples - done)
        draws = rng.integers(0, max(n_patients, 1), size=(m, n_patients))
        offsets = (np.arange(m) * n_patients)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=m * n_patients)
        yield counts.reshape(m, n_patients)[:, codes].astype(np.float32)
        done += m


def all_weights(codes: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """All resamples of ``cluster_weights`` at once ``[n_resamples, n]``."""
    if n_resamples <= 0:
        return np.empty((0, len(codes)), dtype=np.float32)
    return np.concatenate(list(cluster_weights(codes, n_resamples, seed)))


def contain(value: float, low: float, high: float) -> tuple[float, float]:
    """Widen ``[low, high]`` to contain ``value``: no printed interval excludes its estimate."""
    return min(low, value), max(high, value)


def percentile_interval(
    value: float, samples: np.ndarray, level: float = 0.95, shift: bool = False
) -> tuple[float | None, float | None]:
    """Percentile interval of ``value`` from bootstrap ``samples`` that always contains it.

    ``shift`` moves the percentiles by the resampling bias ``value − mean(samples)``
    (a resampled centroid is pulled towards duplicated images, so resampled scatter is
    too small and resampled distances too large). Either way the interval is widened
    to contain ``value`` if it does not (``contain``).
    """
    finite = samples[np.isfinite(samples)]
    if finite.size < 2 or value is None or not np.isfinite(value):
        return None, None
    tail = 100 * (1 - level) / 2
    low, high = (float(q) for q in np.percentile(finite, [tail, 100 - tail]))
    if shift:
        bias = value - float(finite.mean())
        low, high = low + bias, high + bias
    return contain(float(value), low, high)
