"""Class-level sections: cluster quality per class, overlapping pairs, multi-label images."""

from __future__ import annotations

from itertools import combinations
from typing import Any

from scipy.stats import norm

from chexflow.report import verdicts as v
from chexflow.report.context import Context, Group, contrasts
from chexflow.report.stats import benjamini_hochberg


def base_rates(ctx: Context) -> dict[str, float]:
    """Share of each class among the exclusive images (what random neighbours would give)."""
    counts = ctx.groups[0].records[0].metrics["class_counts"]
    total = sum(counts[c] for c in ctx.classes)
    return {c: counts[c] / total for c in ctx.classes}


def pair_key(prefix: str, a: str, b: str, classes: list[str]) -> str:
    """``prefix/a/b`` with the two classes in class order (how pair keys are stored)."""
    first, second = sorted((a, b), key=classes.index)
    return f"{prefix}/{first}/{second}"


def nearest_class(group: Group, name: str, classes: list[str]) -> str | None:
    """The class whose centroid is closest on average over the group's seeds."""
    distances = {
        other: group.estimate(pair_key("centroid", name, other, classes))["value"]
        for other in classes
        if other != name
    }
    known = {k: d for k, d in distances.items() if d is not None}
    return min(known, key=known.__getitem__) if known else None


def chance_calls(ctx: Context) -> dict[tuple[float, str], dict[str, Any]]:
    """Which lifts lie above chance, every pair and directed lift at every fraction at once.

    A lift is above chance when its 95% interval lies above 1 *and* its one-sided p-value
    (``(lift − 1) / se``, normal) survives Benjamini–Hochberg across all the lifts tested
    (``ctx.fdr``): with 21 pairs at several fractions, some would clear 95% by chance.
    """
    if ctx.above_chance:
        return ctx.above_chance
    keys = [f"pairlift/{a}/{b}" for a, b in combinations(ctx.classes, 2)]
    keys += [f"lift/{a}/{b}" for a in ctx.classes for b in ctx.classes if a != b]
    tested = []
    for group in ctx.groups:
        for key in keys:
            e = group.estimate(key)
            if e["value"] is None or e.get("se") in (None, 0.0):
                continue
            p = float(norm.sf((e["value"] - 1.0) / e["se"]))
            tested.append(((group.fraction, key), e, p))
    q_values = benjamini_hochberg([p for *_, p in tested])
    for (where, e, p), q in zip(tested, q_values, strict=True):
        above = e["ci_low"] is not None and e["ci_low"] > 1.0 and q <= ctx.fdr
        ctx.above_chance[where] = {"above": bool(above), "p": p, "q": float(q)}
    return ctx.above_chance


def above_chance(ctx: Context, group: Group, key: str) -> bool:
    """A lift called above chance (``chance_calls``)."""
    return chance_calls(ctx).get((group.fraction, key), {}).get("above", False)


def _partners(group: Group, name: str, ctx: Context, base: dict[str, float]) -> list[dict]:
    """The other classes by chance-corrected mixing (lift), highest first."""
    shares = [
        {
            "class": other,
            "share": group.estimate(f"mix/{name}/{other}"),
            "chance": group.point(f"chance/mix/{name}/{other}"),
            "lift": group.estimate(f"lift/{name}/{other}"),
            "base_rate": base[other],
        }
        for other in ctx.classes
        if other != name
    ]
    shares = [s for s in shares if s["share"]["value"] is not None]
    shares.sort(key=lambda s: -(s["lift"]["value"] or 0.0))
    for s in shares:
        s["above_chance"] = above_chance(ctx, group, f"lift/{name}/{s['class']}")
    return shares[: v.MAX_PARTNERS]


def _class_at(group: Group, name: str, ctx: Context, base: dict[str, float]) -> dict[str, Any]:
    silhouette = group.estimate(f"silhouette/{name}")["value"]
    purity = group.estimate(f"purity/{name}")["value"]
    mixing = None if purity is None else 1.0 - purity
    chance = group.point(f"chance/purity/{name}")
    # Mixing relative to chance: the other-class share of the neighbours over what random
    # neighbours give (1 − chance purity); 1 = no better than chance, 0 = pure.
    relative = (
        mixing / (1.0 - chance)
        if mixing is not None and chance is not None and chance < 1.0
        else None
    )
    partners = _partners(group, name, ctx, base)
    few = ctx.too_few(f"class/{name}")
    verdict = v.class_verdict(
        silhouette,
        relative,
        [
            {"class": p["class"], "share": p["share"]["value"]}
            for p in partners
            if p["above_chance"]
        ],
        too_few=None if few is None else f"too few patients (n = {few})",
    )
    return {
        "fraction": group.fraction,
        "mixing": mixing,
        "mixing_chance": None if chance is None else 1.0 - chance,
        "mixing_vs_chance": relative,
        "partners": partners,
        "nearest": nearest_class(group, name, ctx.classes),
        "verdict": verdict,
    }


def class_calls(ctx: Context, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The call on each change of a class's silhouette, in words (``verdicts.change_call``)."""
    pairs = contrasts(ctx.groups)
    return [
        {
            "from": ctx.groups[i].fraction,
            "to": ctx.groups[j].fraction,
            "call": v.change_call(change, "silhouette"),
        }
        for (i, j), change in zip(pairs, entry["silhouette"]["changes"], strict=True)
    ]


def classwise(ctx: Context) -> dict[str, Any]:
    """Per class: silhouette, cohesion, separation and kNN purity as series, where it sits
    and what it mixes with per fraction, a verdict per fraction, and a call per change."""
    base = base_rates(ctx)
    counts = ctx.groups[0].records[0].metrics["class_counts"]
    out: dict[str, Any] = {}
    for name in ctx.classes:
        entry: dict[str, Any] = {
            "n": counts[name],
            "n_patients": ctx.class_patients.get(name),
            "too_few_patients": ctx.too_few(f"class/{name}") is not None,
            "base_rate": base[name],
            "purity_chance": ctx.groups[0].point(f"chance/purity/{name}"),
        }
        for quantity in (
            "silhouette",
            "cohesion",
            "separation",
            "purity",
            "puritylift",
            "knn_accuracy",
        ):
            entry[quantity] = ctx.series(f"{quantity}/{name}")
        entry["by_fraction"] = [_class_at(g, name, ctx, base) for g in ctx.groups]
        entry["calls"] = class_calls(ctx, entry)
        out[name] = entry
    return out


def mixing_matrix(group: Group, ctx: Context) -> list[list[float | None]]:
    """The group's kNN mixing matrix (mean over seeds): row a = where a's neighbours are."""
    return [
        [group.estimate(f"purity/{a}" if a == b else f"mix/{a}/{b}")["value"] for b in ctx.classes]
        for a in ctx.classes
    ]


def _top_pairs(group: Group, ctx: Context, base: dict[str, float]) -> list[dict[str, Any]]:
    """Pairs that mix more than chance (lift's 95% CI above 1), by lift, at most TOP_PAIRS."""
    ranked = []
    for a, b in combinations(ctx.classes, 2):
        share = group.estimate(f"overlap/{a}/{b}")
        lift = group.estimate(f"pairlift/{a}/{b}")
        key = f"pairlift/{a}/{b}"
        if (
            share["value"] is not None
            and lift["value"] is not None
            and above_chance(ctx, group, key)
        ):
            if ctx.too_few(f"pair/{a}/{b}") is not None:
                continue
            ranked.append(
                {
                    "a": a,
                    "b": b,
                    "share": share,
                    "chance": group.point(f"chance/overlap/{a}/{b}"),
                    "lift": lift,
                    "similar": v.is_similar(a, b),
                }
            )
    ranked.sort(key=lambda p: -p["lift"]["value"])
    return [{"rank": r, **p} for r, p in enumerate(ranked[: v.TOP_PAIRS], start=1)]


def _multilabel_pairs(ctx: Context) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], int] = {}
    for group in ctx.groups:
        for pair in group.records[0].metrics.get("multilabel", {}).get("pairs", []):
            counts.setdefault(tuple(pair["classes"]), pair["count"])
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: v.MULTILABEL_PAIRS]
    out = []
    for (a, b), n in ranked:
        key = f"ml/{a}|{b}"
        contrast = f"mlcontrast/{a}|{b}"
        first = ctx.groups[0]
        entry = {
            "classes": [a, b],
            "count": n,
            "share_between": ctx.series(f"{key}/share_between"),
            "betweenness": ctx.series(f"{key}/betweenness"),
            "share_nearest_own": ctx.series(f"{key}/share_nearest_own"),
            "share_inside_one": ctx.series(f"{key}/share_inside_one"),
            "baseline": {
                "betweenness": first.point(f"{contrast}/betweenness_baseline"),
                "inside_one": first.point(f"{contrast}/inside_one_baseline"),
            },
            "betweenness_contrast": ctx.series(f"{contrast}/betweenness"),
            "inside_one_contrast": ctx.series(f"{contrast}/inside_one"),
        }
        entry["position"] = [_position(entry, i, g.fraction) for i, g in enumerate(ctx.groups)]
        out.append(entry)
    return out


def _position(entry: dict[str, Any], i: int, fraction: float) -> dict[str, Any]:
    between = entry["share_between"]["by_fraction"][i]["value"]
    inside = entry["share_inside_one"]["by_fraction"][i]["value"]
    own = entry["share_nearest_own"]["by_fraction"][i]["value"]
    if None in (between, inside, own):
        return {"fraction": fraction, "nearest_other": None, "text": "not measured"}
    text = v.multilabel_position(between, inside, 1.0 - own)
    return {"fraction": fraction, "nearest_other": 1.0 - own, "text": text}


def overlap(ctx: Context) -> dict[str, Any]:
    """Pairs that mix more than chance per fraction, those that persist, multi-label images."""
    base = base_rates(ctx)
    top = [{"fraction": g.fraction, "pairs": _top_pairs(g, ctx, base)} for g in ctx.groups]
    listed = {(p["a"], p["b"]) for t in top for p in t["pairs"]}
    persistent = [
        pair
        for pair in combinations(ctx.classes, 2)
        if all(any((p["a"], p["b"]) == pair for p in t["pairs"]) for t in top)
    ]
    pairs = [
        {
            "a": a,
            "b": b,
            "similar": v.is_similar(a, b),
            "persistent": (a, b) in persistent,
            "chance": ctx.groups[0].point(f"chance/overlap/{a}/{b}"),
            "share": ctx.series(f"overlap/{a}/{b}"),
            "lift": ctx.series(f"pairlift/{a}/{b}"),
        }
        for a, b in combinations(ctx.classes, 2)
        if (a, b) in listed
    ]
    m = ctx.groups[0].records[0].metrics
    return {
        "mixing_classes": ctx.classes,
        "mixing": [{"fraction": g.fraction, "matrix": mixing_matrix(g, ctx)} for g in ctx.groups],
        "top_pairs": top,
        "pairs": pairs,
        "persistent": [{"a": a, "b": b, "similar": v.is_similar(a, b)} for a, b in persistent],
        "multilabel": {"n": m.get("n_multilabel", 0), "pairs": _multilabel_pairs(ctx)},
    }
