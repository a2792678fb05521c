"""The rules that turn numbers into words: thresholds, verdicts and hedges.

Every constant here is written into ``comparison.json`` (``settings``) and stated in
the report, so a reader can check each verdict against its numbers.
"""

from __future__ import annotations

from typing import Any

from chexflow.report.stats import SIGNIFICANT, SUGGESTIVE, TOO_FEW, UNTESTED, WITHIN_NOISE

# Per-class silhouette (cosine, embedding space). Kaufman & Rousseeuw read ≥ 0.25 as
# (weak) cluster structure; a negative mean means the class's images are, on average,
# closer to another class than to their own.
SILHOUETTE_COMPACT = 0.25
SILHOUETTE_DIFFUSE = 0.0
# Mixing relative to chance: the share of a class's k nearest neighbours from other
# classes (1 − kNN purity) over what random neighbours give (1 − chance purity, from the
# class sizes). 1 = as mixed as chance, 0 = pure: a large class is not "low mixing" by size.
MIXING_LOW = 0.15
MIXING_HIGH = 0.75
PARTNER_SHARE = 0.10  # another class is named as a partner from this share of neighbours
MAX_PARTNERS = 2
TOP_PAIRS = 3  # overlapping pairs listed per fraction
RANK_SHIFT = 3  # a pair "moves" when its centroid-distance rank changes by this much
MAX_RANK_SHIFTS = 5
MULTILABEL_PAIRS = 4  # most frequent multi-label class pairs described
MAJORITY = 0.5  # multi-label images "mostly" somewhere from this share
# Pairs that look alike on a radiograph, so their overlap is expected whatever the labels.
SIMILAR_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("Consolidation", "Edema", "airspace opacities of similar density and texture"),
    ("Atelectasis", "Consolidation", "both focal parenchymal opacities, often basal"),
)

# Which direction is better, per quantity family (+1 higher, -1 lower, 0 neither).
POLARITY = {
    "auroc": 1,
    "silhouette": 1,
    "separation": 1,
    "purity": 1,
    "knn_accuracy": 1,
    "cohesion": -1,
    "mix": -1,
    "overlap": -1,
    "centroid": 0,
    "overall/davies_bouldin": -1,
    "overall": 1,
    "map": 1,
}


def settings() -> dict[str, Any]:
    """The thresholds and lists as they go into ``comparison.json``."""
    return {
        "silhouette_compact": SILHOUETTE_COMPACT,
        "silhouette_diffuse": SILHOUETTE_DIFFUSE,
        "mixing_low": MIXING_LOW,
        "mixing_high": MIXING_HIGH,
        "partner_share": PARTNER_SHARE,
        "max_partners": MAX_PARTNERS,
        "top_pairs": TOP_PAIRS,
        "rank_shift": RANK_SHIFT,
        "max_rank_shifts": MAX_RANK_SHIFTS,
        "multilabel_pairs": MULTILABEL_PAIRS,
        "majority": MAJORITY,
        "similar_pairs": [{"a": a, "b": b, "reason": why} for a, b, why in SIMILAR_PAIRS],
    }


def is_similar(a: str, b: str) -> bool:
    return any({a, b} == {x, y} for x, y, _ in SIMILAR_PAIRS)


def polarity(key: str) -> int:
    """+1 when higher is better for ``key``, -1 when lower is, 0 when neither."""
    for prefix in sorted(POLARITY, key=len, reverse=True):
        if key.startswith(prefix):
            return POLARITY[prefix]
    return 0


def compactness(silhouette: float | None) -> str:
    if silhouette is None:
        return "unmeasured"
    if silhouette >= SILHOUETTE_COMPACT:
        return "compact"
    if silhouette < SILHOUETTE_DIFFUSE:
        return "diffuse"
    return "loose"


def mixing_level(mixing: float | None) -> str:
    if mixing is None:
        return "unmeasured"
    if mixing < MIXING_LOW:
        return "low"
    if mixing >= MIXING_HIGH:
        return "high"
    return "moderate"


def class_verdict(
    silhouette: float | None,
    mixing: float | None,
    partners: list[dict[str, Any]],
    too_few: str | None = None,
) -> dict[str, Any]:
    """``compact, 8% mixing`` / ``diffuse, mixed with Edema 31% and Atelectasis 24%``.

    ``partners`` are ``{"class", "share"}`` of the classes whose share of the neighbours
    is above its chance level (lift's 95% CI above 1), by lift; those at or above
    ``PARTNER_SHARE`` (at most ``MAX_PARTNERS``) are named unless mixing is low.
    ``too_few`` (``"too few patients (n = 8)"``) replaces every verdict word.
    """
    if too_few is not None:
        return {"compactness": None, "mixing_level": None, "partners": [], "too_few": too_few}
    named = [p for p in partners if p["share"] >= PARTNER_SHARE][:MAX_PARTNERS]
    level = mixing_level(mixing)
    return {
        "compactness": compactness(silhouette),
        "mixing_level": level,
        "partners": [p["class"] for p in named] if level != "low" else [],
        "too_few": None,
    }


def change_call(diff: dict[str, Any], key: str) -> str:
    """``better`` / ``worse`` (significant), ``suggests better`` / ``suggests worse``,
    ``no detectable change`` or ``untested``, by the polarity of ``key``."""
    if diff["call"] == UNTESTED:
        return "untested"
    if diff["call"] == TOO_FEW:
        return TOO_FEW
    if diff["call"] == WITHIN_NOISE:
        return "no detectable change"
    sign = polarity(key) * (1 if diff["delta"] > 0 else -1)
    word = "better" if sign > 0 else "worse" if sign < 0 else "changed"
    return word if diff["call"] == SIGNIFICANT else f"suggests {word}"


def multilabel_position(between: float, inside_one: float, nearest_other: float) -> str:
    """Where most images of a multi-label pair sit (first share ≥ ``MAJORITY`` wins)."""
    if between >= MAJORITY:
        return "mostly between their two centroids"
    if inside_one >= MAJORITY:
        return "mostly inside one of the two clusters"
    if nearest_other >= MAJORITY:
        return "mostly nearer another class's centroid"
    return "spread, no majority position"


# Sentence templates per call: the report's hedge words come from here, never free text.
CHANGE_TEMPLATES = {
    SIGNIFICANT: "{subject} {verb} from {a} at {f0} to {b} at {f1} ({delta}, significant)",
    SUGGESTIVE: (
        "{subject} suggests a {noun}, from {a} at {f0} to {b} at {f1} "
        "({delta}; the 95% CI includes zero)"
    ),
    WITHIN_NOISE: (
        "{subject} shows no detectable change: {a} at {f0}, {b} at {f1} ({delta}, within noise)"
    ),
    UNTESTED: "{subject} goes from {a} at {f0} to {b} at {f1} ({delta}; untested, no interval)",
    TOO_FEW: "{subject} goes from {a} at {f0} to {b} at {f1} ({delta}; {reason}, no call)",
}
