"""Phrases shared by the report's sections; they read ``comparison.json`` only."""

from __future__ import annotations

from typing import Any

from chexflow.report.fmt import count, delta_ci, frac, value_ci
from chexflow.report.verdicts import CHANGE_TEMPLATES

Comparison = dict[str, Any]
Series = dict[str, Any]


def flabel(c: Comparison, fraction: float) -> str:
    """``5%``; the initial-backbone reference as ``0% (initial)``."""
    reference = c["design"]["reference_fractions"]
    return f"{frac(fraction)} (initial)" if fraction in reference else frac(fraction)


def at(series: Series, fraction: float) -> dict[str, Any]:
    """The estimate of ``series`` at ``fraction``."""
    return next(e for e in series["by_fraction"] if e["fraction"] == fraction)


def primary(series: Series | None) -> dict[str, Any] | None:
    """The headline change (smallest labelled → largest fraction) of a series."""
    if not series:
        return None
    return next((ch for ch in series["changes"] if ch["primary"]), None)


def change_sentence(
    c: Comparison,
    subject: str,
    series: Series,
    change: dict[str, Any],
    as_pct: bool = False,
    up: tuple[str, str] = ("rises", "rise"),
    down: tuple[str, str] = ("falls", "fall"),
) -> str:
    """One change in the words its call allows (``verdicts.CHANGE_TEMPLATES``); ``subject``
    starts the sentence as given."""
    verb, noun = up if (change["delta"] or 0) > 0 else down
    return CHANGE_TEMPLATES[change["call"]].format(
        subject=subject,
        verb=verb,
        noun=noun,
        a=value_ci(at(series, change["from"]), as_pct),
        f0=flabel(c, change["from"]),
        b=value_ci(at(series, change["to"]), as_pct),
        f1=flabel(c, change["to"]),
        delta=delta_ci(change, as_pct),
        reason=change.get("reason", ""),
    )


def fraction_cells(c: Comparison, series: Series, as_pct: bool = False) -> list[str]:
    """``value [CI]`` per fraction, in fraction order."""
    return [value_ci(e, as_pct) for e in series["by_fraction"]]


def change_cells(change: dict[str, Any] | None, as_pct: bool = False) -> list[str]:
    """``Δ [CI]`` and the call of one change."""
    if change is None:
        return ["—", "—"]
    return [delta_ci(change, as_pct), change["call"]]


def fraction_headers(c: Comparison) -> list[str]:
    return [flabel(c, f) for f in c["design"]["fractions"]]


def primary_header(c: Comparison) -> str:
    contrast = c["conclusion"]["contrast"]
    return f"change {flabel(c, contrast['from'])} → {flabel(c, contrast['to'])} [95% CI]"


def names(items: list[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def seeds_phrase(c: Comparison, noun: str = "seed") -> str:
    """``one seed per fraction``, ``3 seeds per fraction``, ``2 to 3 seeds per fraction``."""
    d = c["design"]
    if d["single_seed"]:
        return f"one {noun} per fraction"
    if d["min_seeds"] == d["max_seeds"]:
        return f"{count(d['min_seeds'])} {noun}s per fraction"
    return f"{count(d['min_seeds'])} to {count(d['max_seeds'])} {noun}s per fraction"
