"""The report's figures read at 100% zoom: text at least ~9 CSS px, legend colours distinct.

The report of three runs (the widest figures: three maps, three mixing heatmaps and their
difference) is rendered in headless Chromium at a 1280 px wide window; each figure's
smallest text is its smallest font size (points, recorded as matplotlib saves it) times
``dpi / 72`` image pixels, times the browser's displayed width over the image's width.
Colour distances are CIEDE2000 (Sharma, Wu & Dalal 2005).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from helpers import chromium, chromium_command
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from chexflow.analysis import plots

MIN_TEXT_PX = 9.0
MIN_LEGEND_DELTA_E = 20.0  # CIEDE2000; ~2.3 is a just-noticeable difference on large patches
WINDOW = "--window-size=1280,4000"


def _lab(hex_colour: str) -> tuple[float, float, float]:
    """sRGB hex → CIE L*a*b* (D65)."""
    rgb = [int(hex_colour.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    x = (0.4124 * lin[0] + 0.3576 * lin[1] + 0.1805 * lin[2]) / 0.95047
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    z = (0.0193 * lin[0] + 0.1192 * lin[1] + 0.9505 * lin[2]) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def ciede2000(c1: str, c2: str) -> float:
    """CIEDE2000 colour difference of two sRGB hex colours (kL = kC = kH = 1)."""
    (l1, a1, b1), (l2, a2, b2) = _lab(c1), _lab(c2)
    c_bar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_bar**7 / (c_bar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360
    h2p = math.degrees(math.atan2(b2, a2p)) % 360
    dl, dc = l2 - l1, c2p - c1p
    dh = 0.0
    if c1p * c2p:
        dh = h2p - h1p
        dh = dh - 360 if dh > 180 else dh + 360 if dh < -180 else dh
    d_big_h = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dh / 2))
    l_bar, cp_bar = (l1 + l2) / 2, (c1p + c2p) / 2
    h_bar = h1p + h2p
    if c1p * c2p:
        h_bar = (h1p + h2p) / 2 if abs(h1p - h2p) <= 180 else (h1p + h2p + 360) / 2
        h_bar = h_bar - 180 if h_bar >= 360 else h_bar
    t = (1 - 0.17 * math.cos(math.radians(h_bar - 30)) + 0.24 * math.cos(math.radians(2 * h_bar))
         + 0.32 * math.cos(math.radians(3 * h_bar + 6))
         - 0.20 * math.cos(math.radians(4 * h_bar - 63)))  # fmt: skip
    sl = 1 + 0.015 * (l_bar - 50) ** 2 / math.sqrt(20 + (l_bar - 50) ** 2)
    sc, sh = 1 + 0.045 * cp_bar, 1 + 0.015 * cp_bar * t
    rt = (-2 * math.sqrt(cp_bar**7 / (cp_bar**7 + 25**7))
          * math.sin(math.radians(60 * math.exp(-(((h_bar - 275) / 25) ** 2)))))  # fmt: skip
    return math.sqrt((dl / sl) ** 2 + (dc / sc) ** 2 + (d_big_h / sh) ** 2
                     + rt * (dc / sc) * (d_big_h / sh))  # fmt: skip


def test_ciede2000_matches_sharma_et_al() -> None:
    # Pairs 1 and 17 of Sharma, Wu & Dalal (2005), Table 1, through Lab → sRGB round trips
    # are not exact, so check the defining properties and a published grey-step value.
    assert ciede2000("#777777", "#777777") == 0
    assert ciede2000("#000000", "#FFFFFF") == pytest.approx(100, abs=0.5)
    assert ciede2000("#FF0000", "#00FF00") == pytest.approx(86.6, abs=1.0)


def test_map_legend_colours_are_far_apart() -> None:
    legend = {"none of the classes": plots.NO_CLASS_COLOR, "multi-label": plots.MULTILABEL_COLOR}
    legend.update(plots.CLASS_COLORS)
    close = [
        (a, b, round(ciede2000(legend[a], legend[b]), 1))
        for a, b in combinations(legend, 2)
        if ciede2000(legend[a], legend[b]) < MIN_LEGEND_DELTA_E
    ]
    assert not close, close
    # and every colour stands off the white page
    assert min(ciede2000(c, "#FFFFFF") for c in legend.values()) >= 10


def _smallest_text_pt(fig: Figure) -> float:
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_figure() is not None
    ]
    return min(sizes)


@pytest.fixture(scope="module")
def three_run_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """report.html of three fractions, and per saved PNG: smallest text (pt) and dpi."""
    from test_report import make_run

    from chexflow.report import write_report

    saved: dict[str, dict[str, float]] = {}
    original = Figure.savefig

    def recording_savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, fname, *args, **kwargs)
        dpi = float(kwargs.get("dpi") or self.dpi)
        saved[str(fname)] = {"pt": _smallest_text_pt(self), "dpi": dpi}
        return result

    out = tmp_path_factory.mktemp("report3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", recording_savefig)
        paths = write_report([make_run(0.01), make_run(0.1), make_run(0.5)], out)
    return paths["html"], saved


MEASURE = """<script>
window.addEventListener("load", () => {
  const rows = [...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.clientWidth]);
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(rows);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed")
def test_figure_text_is_readable_at_100_percent(three_run_report, tmp_path: Path) -> None:
    html, saved = three_run_report
    page = html.with_name("measured.html")
    page.write_text(html.read_text().replace("</body>", MEASURE + "</body>"))
    command = chromium_command(
        str(chromium()), tmp_path / "profile", WINDOW, "--virtual-time-budget=10000",
        "--dump-dom", page.resolve().as_uri(),
    )  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    shown = json.loads(re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S).group(1))
    by_size = {(w, h): client for w, h, client in shown}
    heights = {}
    for path, info in saved.items():
        name = Path(path).name
        with Image.open(path) as image:
            size = image.size
        assert size in by_size, f"{name} is not shown in report.html"
        scale = by_size[size] / size[0]
        heights[name] = info["pt"] * info["dpi"] / 72 * scale
    assert {"mixing.png", "tsne_side_by_side.png"} <= set(heights), heights
    small = {k: round(v, 1) for k, v in heights.items() if v < MIN_TEXT_PX}
    assert not small, f"text below {MIN_TEXT_PX} CSS px at 100%: {small} (all: {heights})"
