"""Report sections: the limitations (each with its number and remedy) and the method."""

from __future__ import annotations

from chexflow.report.fmt import count, delta_ci, frac, num, pct, plain, ratio, value_ci
from chexflow.report.render import Block, Bullets, Heading, Paragraph, Table
from chexflow.report.text_common import Comparison, Series, flabel, names, seeds_phrase


def _per_fraction(c: Comparison, series: Series | None) -> str:
    if not series:
        return "—"
    return ", ".join(f"{value_ci(e)} at {flabel(c, e['fraction'])}" for e in series["by_fraction"])


def _tsne_line(c: Comparison) -> str:
    g = c["structure"]["global"]
    views = c["limitations"]["views"]
    return (
        "**t-SNE distortion.** Every number above is computed in the embedding space; the "
        "maps only illustrate. Trustworthiness of the primary map (are map neighbours true "
        f"neighbours?): {_per_fraction(c, g['trustworthiness'])}; continuity: "
        f"{_per_fraction(c, g['continuity'])}. Silhouette on the t-SNE map: "
        f"{_per_fraction(c, views['tsne'])}, against "
        f"{_per_fraction(c, c['structure']['overall']['silhouette'])} in the embedding space."
    )


def _spread_line(c: Comparison) -> str:
    spread = c["limitations"]["map_spread"]
    d = c["design"]
    seeds = ", ".join(plain(s) for s in spread["tsne_seeds"] or [])
    perplexities = ", ".join(plain(p) for p in spread["perplexities"] or [])
    if (spread["min_maps"] or 0) <= 1:
        maps = (
            f"One t-SNE map per run (t-SNE seed {seeds}, perplexity {perplexities}), so the "
            "spread across maps is not measured; set `analysis.tsne_seeds` and "
            "`analysis.perplexities` to measure it."
        )
    else:
        maps = (
            f"Across the {count(spread['min_maps'])} or more t-SNE maps per run (seeds {seeds}; "
            f"perplexities {perplexities}): Procrustes disparity "
            f"{_per_fraction(c, spread['disparity'])}; shared map neighbours "
            f"{_per_fraction(c, spread['knn_overlap'])}; standard deviation of the map "
            f"silhouette {_per_fraction(c, spread['tsne_silhouette_sd'])}."
        )
    training = seeds_phrase(c, "training seed")
    if d["single_seed"]:
        training += " (no training spread measured)"
    return f"**Seed and perplexity sensitivity.** {maps} Runs: {training}."


def _imbalance_line(c: Comparison) -> str:
    d, imb = c["design"], c["limitations"]["imbalance"]
    counts = ", ".join(f"{name} {count(n)}" for name, n in d["class_counts"].items())
    if imb["largest"] == imb["smallest"] or imb["ratio"] == 1.0:
        spread = "the classes are balanced"
    else:
        spread = f"{imb['largest']} has {ratio(imb['ratio'])}× as many as {imb['smallest']}"
    return (
        f"**Class imbalance.** Single-label images per class: {counts}; {spread}. "
        "Remedies applied: per-class "
        "metrics, kNN purity read against its chance level, fractions drawn by patient and "
        "nested, with every class represented in each fraction."
    )


def _multilabel_line(c: Comparison) -> str:
    ml = c["limitations"]["multilabel"]
    overall = c["structure"]["overall"]
    return (
        f"**Multi-label handling.** {pct(ml['share_exclusive'])} of the evaluation images have "
        f"exactly one class and carry the cluster metrics; {pct(ml['share_multilabel'])} are "
        f"multi-label (placed against the centroids above); {pct(ml['share_no_class'])} have "
        "none of the classes (maps only). Linear-probe AUROC on single-label images: "
        f"{_per_fraction(c, overall['linear_probe'])}; on all images, multi-label positives "
        f"included: {_per_fraction(c, overall['linear_probe_all'])}."
    )


def _specificity_line(c: Comparison) -> str:
    d = c["design"]
    seeds = "; ".join(
        f"{flabel(c, g['fraction'])} seeds {', '.join(count(s) for s in g['seeds'])}"
        for g in d["seeds"]
    )
    text = (
        f"**Model and data specificity.** The conclusions rest on {count(d['n_runs'])} runs of "
        f"{names(d['models'])} ({seeds}) and one evaluation set of {count(d['n_eval'])} images "
        f"(digest `{d['eval_digest']}`)."
    )
    by_model = c.get("by_model")
    if not by_model:
        return text + (
            " Other backbones, datasets, label policies or evaluation sets may behave differently."
        )
    parts = []
    for name, agree in by_model["agreement"].items():
        if agree["n_models"] >= 2:
            word = "agree" if agree["same_direction"] else "disagree"
            parts.append(f"{name}: directions {word} ({', '.join(agree['calls'])})")
    return (
        text + f" {count(len(by_model['models']))} models were analysed separately (never pooled "
        "as seeds); their headline contrasts are side by side in the table below. "
        + ("; ".join(parts) + "." if parts else "")
    )


def _models_table(c: Comparison) -> Table | None:
    by_model = c.get("by_model")
    if not by_model:
        return None
    measures = list(by_model["agreement"])
    rows = []
    for m in by_model["models"]:
        contrast = f"{frac(m['contrast']['from'])} → {frac(m['contrast']['to'])}"
        cells = [
            f"{delta_ci(m['changes'][k])} {m['changes'][k]['call']}" if m["changes"][k] else "—"
            for k in measures
        ]
        rows.append([m["model"], contrast, *cells])
    return Table(["model", "contrast", *measures], rows, "Headline contrasts per model")


def _resolution_line(c: Comparison) -> str | None:
    r = c["conclusion"]["resolution"]
    if r["auroc_mean"] is None and r["silhouette"] is None:
        return None
    parts = []
    if r["auroc_mean"] is not None:
        parts.append(f"±{num(r['auroc_mean'])} in mean AUROC")
    if r["silhouette"] is not None:
        parts.append(f"±{num(r['silhouette'])} in silhouette")
    return (
        f"**Evaluation size and seeds.** With {count(c['design']['n_eval'])} evaluation images "
        f"and {seeds_phrase(c)}, the 95% CI of the headline difference spans {names(parts)}: "
        "smaller effects are not resolved."
    )


def _views_table(c: Comparison) -> Table:
    views = c["limitations"]["views"]
    columns = [
        ("embedding (cosine)", c["structure"]["overall"]["silhouette"]),
        ("t-SNE map", views["tsne"]),
        ("PCA map", views["pca"]),
    ]
    if views["umap"]:
        columns.append(("UMAP map", views["umap"]))
    rows = []
    for i, fraction in enumerate(c["design"]["fractions"]):
        rows.append([flabel(c, fraction), *(value_ci(s["by_fraction"][i]) for _, s in columns)])
    return Table(["fraction", *(name for name, _ in columns)], rows, "Silhouette by view")


def limitation_blocks(c: Comparison) -> list[Block]:
    views = c["limitations"]["views"]
    umap = "" if views["umap"] else " UMAP was not computed (`analysis.umap: true` adds it)."
    lines = [
        _tsne_line(c),
        _spread_line(c),
        _imbalance_line(c),
        "**Alternative views.** The same silhouette on the embedding and on each map is in "
        f"the table below; only the embedding-space value is evidence.{umap}",
        _multilabel_line(c),
        _specificity_line(c),
    ]
    resolution = _resolution_line(c)
    if resolution:
        lines.append(resolution)
    blocks: list[Block] = [Heading(2, "Limitations, quantified"), Bullets(lines), _views_table(c)]
    models = _models_table(c)
    if models is not None:
        blocks.append(models)
    return blocks


def method_blocks(c: Comparison) -> list[Block]:
    s, d = c["settings"], c["design"]
    resamples = count(d["resamples"]) if d["resamples"] is not None else "the configured"
    mult = d.get("multiplicity") or {}
    patients = count(d.get("n_patients")) if d.get("n_patients") else "the"
    return [
        Heading(2, "Method"),
        Bullets(
            [
                f"**Intervals.** The resampling unit is the patient: {resamples} resamples "
                f"draw the {patients} evaluation patients with replacement, each bringing all "
                "their images, and every run is scored on the same resamples (nothing "
                "refitted; kNN neighbours fixed). One seed: the 95% percentile interval; with "
                "several seeds, a two-level bootstrap (seeds with replacement, then patients). "
                "Geometry intervals are shifted by the resampling bias. Every interval "
                "contains its estimate. Numbers the runs logged without per-image values "
                "(Calinski–Harabasz, k-means, linear probe, map measures) have a t-interval "
                "across seeds or none; shares of counted images a Wilson interval.",
                "**Differences** between two fractions: a paired bootstrap — the difference "
                "on each shared patient resample, both runs embedding the same images — with "
                "its 95% percentile interval; without samples, Welch's t-interval on seed "
                "values or the two standard errors in quadrature.",
                "**Calls and hedges.** **significant**: the 95% CI of the difference excludes "
                "zero (plain verbs: rises, falls) and, for a secondary call, its "
                f"Benjamini–Hochberg q-value is ≤ {num(d['fdr'])}; **suggestive**: the "
                'difference is at least one standard error ("suggests a rise"); **within '
                'noise**: smaller ("no detectable change"); **untested**: a side has no '
                f"interval; **too few patients**: a class with fewer than "
                f"{count(d['min_patients'])} patients, no call.",
                "**Multiplicity.** Pre-declared primary contrasts, called at the 95% level: "
                "mean AUROC, overall silhouette and kNN accuracy at the headline contrast. "
                f"The other {count(mult.get('n_secondary'))} calls are controlled at a false "
                f"discovery rate of {num(d['fdr'])} (Benjamini–Hochberg; p-values from each "
                "difference's standard error): "
                f"{count(mult.get('n_significant_before'))} would be significant at 95% "
                f"alone, {count(mult.get('n_significant_after'))} remain.",
                "**Labels.** AUROC and class membership use certain labels only: 1 positive; "
                "0 or blank negative; −1 left out of that class (and out of the single-label "
                "set), whatever the training policy.",
                "**Chance and scale.** Neighbour shares are read against their chance level "
                "given the class sizes (lift = share / chance); cohesion and centroid "
                "distances are relative to the overall spread in the centred space.",
                "**Similar pairs** (overlap expected from appearance): "
                + "; ".join(f"{p['a']} ↔ {p['b']}" for p in s["similar_pairs"])
                + ".",
                "**Numbers.** Every number in this report is a value in `comparison.json`: "
                "3 decimals, whole percents for shares, signed percentage points (pp) for "
                "changes of shares.",
            ]
        ),
        Paragraph(
            f"Verdict thresholds: compact ≥ {num(s['silhouette_compact'])} silhouette, diffuse "
            f"< {num(s['silhouette_diffuse'])}; mixing relative to chance low < "
            f"{num(s['mixing_low'])}, high ≥ {num(s['mixing_high'])}; partners named from "
            f"{pct(s['partner_share'])} when "
            f"above chance; top {count(s['top_pairs'])} pairs per fraction; rank shifts from "
            f"{count(s['rank_shift'])} places; multi-label positions by a "
            f"{pct(s['majority'])} majority."
        ),
    ]
