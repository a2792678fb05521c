"""Report sections about classes: quality per class, overlapping pairs, multi-label images."""

from __future__ import annotations

from typing import Any

from chexflow.report.fmt import count, num, pct, value_ci
from chexflow.report.render import Block, Bullets, Figure, Heading, Paragraph, Table
from chexflow.report.text_common import (
    Comparison,
    at,
    change_cells,
    change_sentence,
    flabel,
    fraction_cells,
    fraction_headers,
    names,
    primary,
    primary_header,
)


def verdict_text(c: Comparison, row: dict[str, Any]) -> str:
    """``compact, 8% mixing (chance 80%)`` / ``diffuse, mixed with Edema 31%``."""
    verdict = row["verdict"]
    if verdict.get("too_few"):
        return verdict["too_few"]
    if row["mixing"] is None:
        return f"{verdict['compactness']}, mixing not measured"
    head = verdict["compactness"]
    mixing = f"{pct(row['mixing'])} mixing"
    if row.get("mixing_chance") is not None:
        mixing += f" (chance {pct(row['mixing_chance'])})"
    if verdict["mixing_level"] == "low":
        return f"{head}, {mixing}"
    shares = {p["class"]: p["share"]["value"] for p in row["partners"]}
    if verdict["partners"]:
        return f"{head}, mixed with " + names(
            [f"{p} {pct(shares[p])}" for p in verdict["partners"]]
        )
    limit = pct(c["settings"]["partner_share"])
    return f"{head}, {mixing}, no other class above chance at {limit} or more"


def _thresholds(c: Comparison) -> str:
    s = c["settings"]
    return (
        f"Verdicts: **compact** when the class silhouette is ≥ {num(s['silhouette_compact'])}, "
        f"**diffuse** below {num(s['silhouette_diffuse'])}, **loose** between; mixing "
        "(1 − kNN purity) over its chance level (1 − the class's chance purity; 1 = as "
        f"mixed as random neighbours) is low below {num(s['mixing_low'])} and high from "
        f"{num(s['mixing_high'])}; another class is named as a partner when it holds at least "
        f"{pct(s['partner_share'])} of the neighbours (at most {count(s['max_partners'])})."
    )


def _class_rows(c: Comparison, name: str, entry: dict[str, Any]) -> list[list[str]]:
    rows = []
    for i, row in enumerate(entry["by_fraction"]):
        f = row["fraction"]
        partners = ", ".join(
            f"{p['class']} {pct(p['share']['value'])} (chance {pct(p['chance'])}, lift "
            f"{value_ci(p['lift'])})"
            for p in row["partners"]
        )
        purity = value_ci(at(entry["purity"], f), as_pct=True)
        rows.append(
            [
                f"**{name}** ({count(entry['n'])} images, {count(entry['n_patients'])} patients)"
                if i == 0
                else "",
                flabel(c, f),
                value_ci(at(entry["cohesion"], f)),
                value_ci(at(entry["separation"], f)),
                row["nearest"] or "—",
                value_ci(at(entry["silhouette"], f)),
                f"{purity} (chance {pct(entry['purity_chance'])})",
                partners or "—",
                verdict_text(c, row),
            ]
        )
    return rows


def _class_line(c: Comparison, name: str, entry: dict[str, Any]) -> str:
    chain = " → ".join(
        f"{verdict_text(c, row)} at {flabel(c, row['fraction'])}" for row in entry["by_fraction"]
    )
    change = primary(entry["silhouette"])
    tail = (
        f" {change_sentence(c, 'Its silhouette', entry['silhouette'], change)}." if change else ""
    )
    return f"**{name}**: {chain}.{tail}"


def classwise_blocks(c: Comparison) -> list[Block]:
    d = c["design"]
    blocks: list[Block] = [
        Heading(2, "Class-wise cluster quality and separability"),
        Paragraph(
            f"Measured in the embedding space ({count(d['dim'])} dimensions, cosine) on the "
            f"{count(d['n_exclusive'])} single-label evaluation images (certain labels: one "
            "positive, no uncertain class). **Cohesion**: RMS distance of a class's images to "
            "their centroid (lower is tighter). "
            "**Separation**: distance to the nearest other centroid (higher is better "
            "separated). Both are relative to the overall spread in the centred space, so "
            "they do not move when the embedding is scaled or shifted. **Silhouette** per "
            "class (cosine; higher is better). **kNN purity**: share of the k = "
            f"{count(d['knn_k'])} nearest neighbours in the same class, next to its chance "
            "level given the class sizes. **Mixes most with**: the other classes by **lift** "
            "(share of the neighbours over its chance level; 1 = random neighbours), named in "
            "the verdict only when the lift's 95% interval lies above 1. A class with fewer "
            f'than {count(d["min_patients"])} patients gets its numbers and "too few '
            'patients", no verdict and no call. ' + _thresholds(c)
        ),
    ]
    header = [
        "class (images, patients)",
        "fraction",
        "cohesion ↓ [95% CI]",
        "separation ↑ [95% CI]",
        "nearest class",
        "silhouette [95% CI]",
        "kNN purity [95% CI]",
        "mixes most with, by lift over chance",
        "verdict",
    ]
    rows = [row for name, e in c["classwise"].items() for row in _class_rows(c, name, e)]
    blocks.append(Table(header, rows))
    blocks.append(Bullets([_class_line(c, n, e) for n, e in c["classwise"].items()]))
    if "silhouette_by_class" in c.get("figures", {}):
        blocks.append(
            Figure(c["figures"]["silhouette_by_class"], "Per-class silhouette by fraction (95% CI)")
        )
    return blocks


def _similar_list(c: Comparison) -> str:
    return "; ".join(f"{p['a']} ↔ {p['b']} ({p['reason']})" for p in c["settings"]["similar_pairs"])


def _persistence(c: Comparison) -> str:
    o, s = c["overlap"], c["settings"]
    if len(c["design"]["fractions"]) < 2:
        return "One fraction only: persistence is not assessed."
    if not o["persistent"]:
        return (
            f"No pair stays above chance among the top {count(s['top_pairs'])} at every fraction."
        )
    items = [
        f"{p['a']} ↔ {p['b']} ({'a known similar pair' if p['similar'] else 'not in the list'})"
        for p in o["persistent"]
    ]
    return (
        f"Among the top {count(s['top_pairs'])} at every fraction: "
        + names(items)
        + ". An overlap that persists between a known similar pair is expected from appearance; "
        "one outside the list points to co-occurrence or label noise."
    )


def overlap_blocks(c: Comparison) -> list[Block]:
    o, s = c["overlap"], c["settings"]
    blocks: list[Block] = [
        Heading(2, "Class overlap and mixed regions"),
        Paragraph(
            "Mixing of a pair: the mean of the share of a's nearest neighbours in b and of b's "
            "in a; chance is what random neighbours would give given the class sizes; **lift** "
            "is the mean of the two shares over their chance levels (1 = chance). Pairs are "
            "ranked by lift, and a pair is called overlapping only when the 95% interval of "
            "its lift lies above 1: a large class attracts neighbours by its size alone, and a "
            f"pair at chance is never called. Known similar pairs used: {_similar_list(c)}."
        ),
    ]
    rows = [
        [
            flabel(c, t["fraction"]),
            count(p["rank"]),
            f"{p['a']} ↔ {p['b']}",
            value_ci(p["share"], as_pct=True),
            pct(p["chance"]),
            value_ci(p["lift"]),
            "yes" if p["similar"] else "no",
        ]
        for t in o["top_pairs"]
        for p in t["pairs"]
    ]
    header = [
        "fraction",
        "rank",
        "pair",
        "mixing [95% CI]",
        "chance",
        "lift [95% CI]",
        "known similar",
    ]
    if rows:
        blocks.append(
            Table(header, rows, f"Pairs above chance (top {count(s['top_pairs'])} by lift)")
        )
    else:
        blocks.append(Paragraph("No pair mixes more than chance at any fraction."))
    blocks.append(Paragraph(_persistence(c)))
    if len(c["design"]["fractions"]) >= 2:
        rows = [
            [
                f"{p['a']} ↔ {p['b']}",
                *fraction_cells(c, p["lift"]),
                *change_cells(primary(p["lift"])),
            ]
            for p in o["pairs"]
        ]
        header = ["pair", *fraction_headers(c), primary_header(c), "call"]
        if rows:
            blocks.append(Table(header, rows, "How the listed pairs' lift changes"))
    if "mixing" in c.get("figures", {}):
        blocks.append(
            Figure(
                c["figures"]["mixing"],
                "kNN class mixing per fraction (row: class; column: neighbour class) "
                "and the difference between the last and the first",
            )
        )
    blocks += multilabel_blocks(c)
    return blocks


def multilabel_blocks(c: Comparison) -> list[Block]:
    ml = c["overlap"]["multilabel"]
    share = c["limitations"]["multilabel"]["share_multilabel"]
    blocks: list[Block] = [
        Heading(3, "Multi-label images"),
        Paragraph(
            f"{count(ml['n'])} evaluation images ({pct(share)}) carry two or more of the "
            "classes. They are left out of the cluster metrics and placed against the class "
            "centroids: **between** = projected inside the segment joining their two classes' "
            "centroids and closer to it than to any centroid; **betweenness** is highest at "
            "the segment's midpoint; **nearest own** = the nearest centroid is one of their "
            "classes; **inside one** = within the median member distance of one of the two "
            "centroids. Shares with 95% Wilson intervals. Each is read against a **baseline**: "
            "the single-label images of the *other* classes measured against the same two "
            "centroids; **vs baseline** is the multi-label mean minus the baseline mean, with "
            "a patient-bootstrap interval (a betweenness that other-class images reach too is "
            "no property of multi-label images)."
        ),
    ]
    rows = []
    for pair in ml["pairs"]:
        label = f"{' + '.join(pair['classes'])} ({count(pair['count'])})"
        for i, pos in enumerate(pair["position"]):
            f = pos["fraction"]
            rows.append(
                [
                    label if i == 0 else "",
                    flabel(c, f),
                    value_ci(at(pair["share_between"], f), as_pct=True),
                    num(at(pair["betweenness"], f)["value"]),
                    value_ci(at(pair["betweenness_contrast"], f)),
                    value_ci(at(pair["share_nearest_own"], f), as_pct=True),
                    value_ci(at(pair["share_inside_one"], f), as_pct=True),
                    value_ci(at(pair["inside_one_contrast"], f)),
                    pos["text"],
                ]
            )
    if rows:
        header = [
            "pair (images)",
            "fraction",
            "between",
            "betweenness",
            "betweenness vs baseline",
            "nearest own",
            "inside one",
            "inside one vs baseline",
            "position",
        ]
        blocks.append(Table(header, rows))
        lines = []
        for pair in ml["pairs"]:
            change = primary(pair["betweenness_contrast"])
            if change:
                subject = (
                    f"The betweenness of {' + '.join(pair['classes'])} images over the "
                    "other-class baseline"
                )
                lines.append(
                    change_sentence(c, subject, pair["betweenness_contrast"], change) + "."
                )
        if lines:
            blocks.append(Bullets(lines))
    return blocks
