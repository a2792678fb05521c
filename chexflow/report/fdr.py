"""False discovery rate control across the report's calls (Benjamini & Hochberg 1995).

A report makes hundreds of calls (every class, pair and measure at every contrast). The
few pre-declared primary contrasts — mean AUROC, overall silhouette and kNN accuracy at
the headline contrast — are called at the 95% level as planned; every other call is
significant only if its Benjamini–Hochberg q-value is at most the configured rate
(``analysis.fdr``, default 0.05). p-values come from each difference's standard error
(normal approximation to its bootstrap or t distribution).
"""

from __future__ import annotations

from typing import Any

from chexflow.report.context import Context, trend
from chexflow.report.stats import SIGNIFICANT, SUGGESTIVE, WITHIN_NOISE, benjamini_hochberg


def apply_fdr(ctx: Context) -> dict[str, Any]:
    """Adjust every registered change's call in place; returns the summary for ``design``."""
    primary = [t for t in ctx.tests if t["pre_declared"]]
    secondary = [t for t in ctx.tests if not t["pre_declared"]]
    before = sum(t["change"]["call"] == SIGNIFICANT for t in secondary)
    q_values = benjamini_hochberg([t["change"]["p"] for t in secondary])
    for test, q in zip(secondary, q_values, strict=True):
        change = test["change"]
        change["q"] = float(q)
        if change["call"] == SIGNIFICANT and q > ctx.fdr:
            se = change.get("se") or 0.0
            delta = abs(change["delta"] or 0.0)
            change["call"] = SUGGESTIVE if se > 0 and delta >= se else WITHIN_NOISE
            change["fdr_demoted"] = True
    for test in primary:
        test["change"]["q"] = None
        test["change"]["pre_declared"] = True
    for groups, series in ctx.all_series():
        if "trend" in series:
            series["trend"] = trend(series["changes"], groups)
    return {
        "method": "Benjamini–Hochberg",
        "level": ctx.fdr,
        "n_calls": len(ctx.tests),
        "n_primary": len(primary),
        "n_secondary": len(secondary),
        "n_significant_before": before,
        "n_significant_after": sum(t["change"]["call"] == SIGNIFICANT for t in secondary),
        "primary": sorted({t["key"] for t in primary}),
    }
