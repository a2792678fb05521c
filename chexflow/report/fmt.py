"""How numbers are written: a few fixed formats, so every number in the text can be
traced back to one value of ``comparison.json`` (docs/REPORT.md, "Number formats").

- ``num``: 3 decimals (``0.312``), signed for differences (``+0.069``);
- ``pct``: a share as a whole percent (``31%``); a change of a share in percentage
  points, signed, every bound suffixed (``+5 pp [-3 pp, +12 pp]``);
- ``frac``: a label fraction as a percent with no trailing zeros (``1%``, ``0.5%``);
- ``count``: an integer;
- ``ratio``: 1 decimal (``4.2``).
Missing values are an em dash.
"""

from __future__ import annotations

from typing import Any

DASH = "—"


def num(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def signed(value: float | None) -> str:
    return DASH if value is None else f"{value:+.3f}"


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.0f}%"


def pp(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:+.0f} pp"


def plain(value: float | None) -> str:
    """A setting as written (``30``, ``0.5``)."""
    return DASH if value is None else f"{value:g}"


def frac(value: float) -> str:
    return f"{value * 100:g}%"


def count(value: int | float | None) -> str:
    return DASH if value is None else str(int(value))


def ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def ci(block: dict[str, Any] | None, as_pct: bool = False) -> str:
    """``[low, high]`` of an interval, or empty when it has none."""
    if not block or block.get("ci_low") is None or block.get("ci_high") is None:
        return ""
    f = pct if as_pct else num
    return f"[{f(block['ci_low'])}, {f(block['ci_high'])}]"


def value_ci(block: dict[str, Any] | None, as_pct: bool = False) -> str:
    """``0.312 [0.301, 0.335]``; just the value without an interval; a dash without one."""
    if not block or block.get("value") is None:
        return DASH
    f = pct if as_pct else num
    interval = ci(block, as_pct)
    return f"{f(block['value'])} {interval}" if interval else f(block["value"])


def delta_ci(diff: dict[str, Any], as_pct: bool = False) -> str:
    """``+0.069 [-0.004, 0.142]`` for a difference; ``+5 pp [-3 pp, +12 pp]`` for shares."""
    if diff.get("delta") is None:
        return DASH
    f = pp if as_pct else signed
    if diff.get("ci_low") is None or diff.get("ci_high") is None:
        return f(diff["delta"])
    return f"{f(diff['delta'])} [{f(diff['ci_low'])}, {f(diff['ci_high'])}]"
