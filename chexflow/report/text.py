"""The report as blocks, written from ``comparison.json`` alone (every number is in it)."""

from __future__ import annotations

from chexflow.report.fmt import count, delta_ci, num, pct, value_ci
from chexflow.report.render import Block, Bullets, Figure, Heading, Paragraph, Table
from chexflow.report.text_classes import classwise_blocks, overlap_blocks
from chexflow.report.text_common import (
    Comparison,
    Series,
    change_cells,
    change_sentence,
    flabel,
    fraction_cells,
    fraction_headers,
    names,
    primary,
    primary_header,
    seeds_phrase,
)
from chexflow.report.text_limits import limitation_blocks, method_blocks

OVERALL_NAMES = {
    "silhouette": "silhouette (cosine) ↑",
    "davies_bouldin": "Davies–Bouldin ↓",
    "knn_accuracy": "kNN accuracy ↑",
    "calinski_harabasz": "Calinski–Harabasz ↑",
    "kmeans_nmi": "k-means NMI ↑",
    "kmeans_ari": "k-means ARI ↑",
    "linear_probe": "linear probe AUROC, single-label ↑",
    "linear_probe_all": "linear probe AUROC, all images ↑",
}


def trend_text(c: Comparison, series: Series) -> str:
    t = series.get("trend")
    if not t:
        return ""
    largest = t["largest_step"]
    return (
        f"{t['direction']}; {count(t['n_significant_steps'])} of {count(t['n_steps'])} steps "
        f"significant; largest {flabel(c, largest['from'])} → {flabel(c, largest['to'])}"
    )


def series_table(
    c: Comparison, rows: list[tuple[str, Series]], first: str, as_pct: bool = False
) -> Table:
    """One row per series: value per fraction, the headline change, its call (and trend)."""
    trends = len(c["design"]["fractions"]) >= 3
    header = [first, *fraction_headers(c)]
    if len(c["design"]["fractions"]) >= 2:
        header += [primary_header(c), "call"]
    if trends:
        header.append("trend over fractions")
    body = []
    for label, series in rows:
        row = [label, *fraction_cells(c, series, as_pct)]
        if len(c["design"]["fractions"]) >= 2:
            row += change_cells(primary(series), as_pct)
        if trends:
            row.append(trend_text(c, series))
        body.append(row)
    return Table(header, body)


def _seeds_text(c: Comparison) -> str:
    d = c["design"]
    unit = d["intervals"]["unit"]
    patients = (
        f"{count(d['n_patients'])} evaluation patients" if d.get("n_patients") else "the images"
    )
    if d["single_seed"]:
        return (
            f"**One seed per fraction.** Every interval is a 95% bootstrap interval over the "
            f"{patients} (unit: {unit}; a patient's images are resampled together): it "
            "leaves out training randomness (which patients were drawn, initialisation), so a "
            "difference called significant here may not hold for another seed."
        )
    per = "; ".join(
        f"{flabel(c, g['fraction'])}: seeds {', '.join(count(x) for x in g['seeds'])}"
        for g in d["seeds"]
    )
    return (
        f"Seeds per fraction: {per}. An estimate is the mean across seeds; its 95% interval "
        f"is a two-level bootstrap (seeds drawn with replacement, then the {patients}), so "
        "it holds training randomness and evaluation sampling together; each run's own "
        "interval stays in `comparison.json` (`per_seed`)."
    )


def intro_blocks(c: Comparison) -> list[Block]:
    d = c["design"]
    fractions = names([flabel(c, f) for f in d["fractions"]])
    text = (
        f"{count(d['n_runs'])} runs of {', '.join(d['models'])} at {fractions}, all embedding "
        f"the same {count(d['n_eval'])} evaluation images (digest `{d['eval_digest']}`). "
        + _seeds_text(c)
    )
    blocks: list[Block] = [Heading(1, "Label-fraction comparison"), Paragraph(text)]
    if d["reference_fractions"]:
        blocks.append(
            Paragraph(
                f"The {flabel(c, d['reference_fractions'][0])} run is the backbone before "
                "fine-tuning: the baseline the labels move the representation away from. Its "
                "classification head is untrained, so it is left out of the AUROC comparison."
            )
        )
    if not d["embeddings_available"]:
        blocks.append(
            Paragraph(
                "Embeddings were missing for some runs: their cohesion, separation and mixing "
                "have no intervals, and changes in them are untested."
            )
        )
    return blocks


def runs_blocks(c: Comparison) -> list[Block]:
    header = [
        "run",
        "fraction",
        "seed",
        "model",
        "starting point",
        "mean AUROC [95% CI]",
        "silhouette [95% CI]",
        "Davies–Bouldin [95% CI]",
        "kNN accuracy [95% CI]",
        "highest-lift pair (no interval)",
    ]
    rows = []
    for r in c["runs"]:
        top = r["top_overlap"]
        pair = (
            f"{top['a']} ↔ {top['b']} ({pct(top['share'])}, lift {num(top['lift'])})"
            if top
            else "—"
        )
        rows.append(
            [
                f"`{r['run_id'][:8]}`",
                flabel(c, r["fraction"]),
                count(r["seed"]),
                r["model"],
                r.get("start") or "not recorded",
                value_ci(r["auroc_mean"]) + (" (untrained head)" if r["reference"] else ""),
                value_ci(r["silhouette"]),
                value_ci(r["davies_bouldin"]),
                value_ci(r["knn_accuracy"]),
                pair,
            ]
        )
    blocks: list[Block] = [Heading(2, "Runs"), Table(header, rows)]
    if "tsne_side_by_side" in c.get("figures", {}):
        blocks.append(
            Figure(
                c["figures"]["tsne_side_by_side"],
                "t-SNE maps of the same evaluation images, rotated (Procrustes) onto the "
                "largest fraction's map; multi-label images in grey",
            )
        )
    return blocks


def _downstream_line(c: Comparison) -> str:
    k = c["conclusion"]["downstream"]
    if k is None:
        return "**Downstream**: fewer than two fine-tuned fractions, so no AUROC contrast."
    down = c["downstream"]
    text = "**Downstream**: " + change_sentence(c, "Mean AUROC", down["mean"], k["mean"]) + "."
    for label, group in (("significant", k["significant"]), ("suggestive", k["suggestive"])):
        if group:
            items = [f"{n} ({delta_ci(primary(down['classes'][n]))})" for n in group]
            text += f" Per class, {label}: {names(items)}."
    rest = [n for n in down["classes"] if n not in k["significant"] + k["suggestive"]]
    if rest:
        text += f" Within noise or untested: {names(rest)}."
    return text


def _representation_line(c: Comparison) -> str:
    r = c["conclusion"]["representation"]
    overall = c["structure"]["overall"]
    parts = []
    for name, subject in (("silhouette", "The silhouette"), ("knn_accuracy", "kNN accuracy")):
        if r[name]:
            parts.append(change_sentence(c, subject, overall[name], r[name]))
    if r["davies_bouldin"]:
        parts.append(
            change_sentence(
                c,
                "Davies–Bouldin (lower is better)",
                overall["davies_bouldin"],
                r["davies_bouldin"],
            )
        )
    calls = r["classes"]
    groups = [
        ("better", "better separated (significant)"),
        ("worse", "worse (significant)"),
        ("suggests_better", "suggests better"),
        ("suggests_worse", "suggests worse"),
        ("unchanged", "no detectable change"),
        ("untested", "untested"),
        ("too_few", "too few patients, no call"),
    ]
    per_class = "; ".join(
        f"{label}: {names(calls[key])}" for key, label in groups if calls.get(key)
    )
    if not parts:
        return "**Representation**: one fraction only, so no contrast."
    text = "**Representation**: " + ". ".join(parts) + "."
    return text + (f" Per-class silhouette — {per_class}." if per_class else "")


def _reference_line(c: Comparison) -> str | None:
    """How far fine-tuning moved the representation from the initial backbone."""
    reference = c["design"]["reference_fractions"]
    last = c["design"]["fractions"][-1]
    if not reference or last in reference:
        return None
    series = c["structure"]["overall"]["silhouette"]
    change = next(
        (ch for ch in series["changes"] if ch["from"] == reference[0] and ch["to"] == last), None
    )
    if change is None:
        return None
    return (
        "**From the initial backbone**: "
        + change_sentence(c, "the silhouette", series, change)
        + "."
    )


def _reference_bar_line(c: Comparison) -> str | None:
    """Which fractions do not beat the initial backbone, measure by measure."""
    bar = c["conclusion"].get("reference_bar") or []
    if not bar:
        return None
    reference = flabel(c, c["design"]["reference_fractions"][0])
    short = [
        f"{b['measure']} at {flabel(c, b['to'])} ({delta_ci(b)})" for b in bar if not b["beats"]
    ]
    if not short:
        return (
            f"**Against the initial backbone** ({reference}): every fine-tuned fraction beats "
            "it on silhouette, kNN accuracy and the linear probe (significant)."
        )
    return (
        f"**Against the initial backbone** ({reference}), the bar a fraction must clear: not "
        f"beaten on {names(short)} — there the labels did not improve on the untrained "
        "features."
    )


def _noise_line(c: Comparison) -> str:
    items = c["conclusion"]["not_significant"]
    d = c["design"]
    seeds = seeds_phrase(c)
    if not items:
        return "**Not significant**: none of the headline differences."
    listed = [f"{i['what']} ({delta_ci(i)}, {i['call']})" for i in items]
    return (
        f"**Not significant** given {seeds} and {count(d['n_eval'])} evaluation images "
        f"(95% CI of the difference includes zero, or no interval): {names(listed)}."
    )


def conclusion_blocks(c: Comparison) -> list[Block]:
    k = c["conclusion"]
    lines = [_downstream_line(c), _representation_line(c)]
    from_reference = _reference_line(c)
    if from_reference:
        lines.append(from_reference)
    if k["persistent_overlaps"]:
        pairs = [
            f"{p['a']} ↔ {p['b']}" + (" (a known similar pair)" if p["similar"] else "")
            for p in k["persistent_overlaps"]
        ]
        verb = "stays" if len(pairs) == 1 else "stay"
        lines.append(
            f"**Persistent overlap**: {names(pairs)} {verb} among the top "
            f"{count(c['settings']['top_pairs'])} mixed pairs at every fraction."
        )
    bar = _reference_bar_line(c)
    if bar:
        lines.append(bar)
    lines.append(_noise_line(c))
    if c["design"]["single_seed"]:
        lines.append(
            "**One seed per fraction**: the calls above reflect evaluation-set sampling only; "
            "run several seeds per fraction before relying on a difference."
        )
    contrast = f"{flabel(c, k['contrast']['from'])} → {flabel(c, k['contrast']['to'])}"
    if len(c["design"]["fractions"]) < 2:
        intro = "One fraction only: the report describes it, and compares nothing."
    else:
        intro = f"Headline contrast: {contrast}. Wording follows the rules under Method."
    return [Heading(2, "Conclusion"), Paragraph(intro), Bullets(lines)]


def downstream_blocks(c: Comparison) -> list[Block]:
    down = c["downstream"]
    if down["mean"] is None:
        return []
    blocks: list[Block] = [
        Heading(2, "Downstream effect: AUROC by fraction"),
        Paragraph(
            f"AUROC of each run's fine-tuned head on the {count(down['n_eval'])} evaluation "
            "images, scored on certain labels only whatever the training policy (1 positive; "
            "0 or blank negative; −1 left out of that class), with 95% patient-bootstrap "
            "intervals (two-level over seeds and patients with several seeds)."
        ),
    ]
    rows = [("**mean**", down["mean"])] + [
        (
            f"{name} ({count(down['n_pos'][name])} positive / {count(down['n_neg'][name])} "
            f"negative / {count(down['n_uncertain_excluded'][name])} uncertain left out)",
            s,
        )
        for name, s in down["classes"].items()
    ]
    table = series_table(
        {**c, "design": {**c["design"], "fractions": down["fractions"]}}, rows, "class"
    )
    blocks.append(table)
    if "auroc_by_fraction" in c.get("figures", {}):
        blocks.append(Figure(c["figures"]["auroc_by_fraction"], "AUROC by label fraction (95% CI)"))
    return blocks


def _centroid_text(c: Comparison) -> list[str]:
    cs = c["structure"]["centroids"]
    means = ", ".join(
        f"{num(m['value'])} at {flabel(c, m['fraction'])}" for m in cs["mean_distance"]
    )
    lines = [f"Mean distance between class centroids: {means}."]
    for corr in cs["rank_correlation"]:
        if corr["spearman"] is not None:
            lines.append(
                f"Rank agreement of the pair distances, {flabel(c, corr['from'])} → "
                f"{flabel(c, corr['to'])}: Spearman {num(corr['spearman'])}."
            )
    shift = c["settings"]["rank_shift"]
    for block in cs["rank_shifts"]:
        span = f"{flabel(c, block['from'])} → {flabel(c, block['to'])}"
        if block["pairs"]:
            moved = [
                f"{p['a']} ↔ {p['b']} (rank {count(p['rank_from'])} → {count(p['rank_to'])})"
                for p in block["pairs"]
            ]
            lines.append(
                f"Relative position shifts {span} (rank change ≥ {count(shift)}, "
                f"rank 1 = closest pair): {names(moved)}."
            )
        else:
            lines.append(
                f"Relative position shifts {span}: no pair's rank moves by {count(shift)} or more."
            )
    for block in cs["nearest_changes"]:
        if block["classes"]:
            items = [
                f"{x['class']} ({x['nearest_from']} → {x['nearest_to']})" for x in block["classes"]
            ]
            lines.append(
                f"Nearest class changes {flabel(c, block['from'])} → "
                f"{flabel(c, block['to'])}: {names(items)}."
            )
    return lines


def _global_lines(c: Comparison) -> list[str]:
    g = c["structure"]["global"]
    lines = []
    for name, label in (
        ("trustworthiness", "Trustworthiness of the primary t-SNE map"),
        ("continuity", "Continuity"),
        ("knn_preservation", "Share of embedding neighbours kept on the map"),
    ):
        values = ", ".join(
            f"{value_ci(e)} at {flabel(c, e['fraction'])}" for e in g[name]["by_fraction"]
        )
        lines.append(f"{label}: {values}.")
    a = g["agreement"]
    for entry in a["between"]:
        if entry["value"] is not None:
            lines.append(
                f"Neighbourhood agreement in the embedding spaces, {flabel(c, entry['from'])} vs "
                f"{flabel(c, entry['to'])}: {value_ci(entry)} of each image's {count(a['k'])} "
                "nearest neighbours are shared."
            )
    for entry in a["within"]:
        lines.append(
            f"Between seeds of {flabel(c, entry['fraction'])}: {value_ci(entry)} (the agreement "
            "that training randomness alone leaves)."
        )
    return lines


def structure_blocks(c: Comparison) -> list[Block]:
    s = c["structure"]
    blocks: list[Block] = [
        Heading(2, "Effects of the label fraction on the representation"),
        Heading(3, "Overall cluster quality"),
        series_table(c, [(OVERALL_NAMES[k], v) for k, v in s["overall"].items()], "measure"),
        Heading(3, "Inter-cluster distances"),
        Paragraph(
            "Distance between class centroids relative to the overall spread (RMS distance of "
            "the single-label images to their mean), in the centred space (embeddings centred "
            "on their mean, then L2-normalised): scaling or shifting the whole embedding "
            "leaves it unchanged, so fractions whose models have different scales compare."
        ),
    ]
    rows = [(f"{p['a']} ↔ {p['b']}", p["distance"]) for p in s["centroids"]["pairs"]]
    blocks.append(series_table(c, rows, "pair"))
    blocks.append(Bullets(_centroid_text(c)))
    blocks.append(Heading(3, "Intra-cluster cohesion"))
    blocks.append(
        Paragraph(
            "RMS distance of a class's images to their centroid over the overall spread, in "
            "the same centred space (1 = as spread as the whole set; lower is tighter)."
        )
    )
    rows = [(name, e["cohesion"]) for name, e in c["classwise"].items()]
    blocks.append(series_table(c, rows, "class (relative cohesion ↓)"))
    blocks.append(Heading(3, "Global structure"))
    blocks.append(Bullets(_global_lines(c)))
    return blocks


def document(c: Comparison) -> list[Block]:
    """All sections, in reading order."""
    return [
        *intro_blocks(c),
        *runs_blocks(c),
        *conclusion_blocks(c),
        *downstream_blocks(c),
        *classwise_blocks(c),
        *structure_blocks(c),
        *overlap_blocks(c),
        *limitation_blocks(c),
        *method_blocks(c),
    ]
