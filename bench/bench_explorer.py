"""Benchmark: the explorer page's size and time to interactive, 1,000 and 10,000 images.

    .venv/bin/python -m bench.bench_explorer [--sizes 1000,10000] [--repeats 3]
        [--out bench/results/explorer.json]

Input of the demo's shape, built by the library's own steps: three runs (the initial
backbone, 1% and 10%, seed 0), each with a t-SNE and a PCA map and ``[n, 64]`` class-
clustered embeddings whose 10 nearest neighbours ``explorer.inputs.embedding_neighbours``
finds; labels and 48-px WebP thumbnails of synthetic CheXpert-format radiographs (1,000
distinct images, cycled). ``write_explorer`` writes the page; headless Chromium (the
system one, driven by Playwright, offline flags as tests/helpers.py) opens it from disk.

- ``bytes``: the HTML file's size.
- ``interactive_ms``: from navigation start (``performance.now()`` origin) until BokehJS
  reports the document idle (every visible map drawn, tools attached) — median of
  ``--repeats`` loads, each in a fresh tab (one untimed load first warms the caches).
- ``main_thread_cpu_ms``: CPU time of the page's main thread over the same span (Chrome's
  ``ThreadTime`` metric): what the load takes when no other process competes for a core.
- ``hover_ms``: from moving the mouse onto a point until its tooltip (thumbnail, labels,
  neighbours) is in the page.
- ``select_ms``: from releasing a box selection in one map until the selection has reached
  every map.
- ``write_s``: building and writing the page (neighbour search excluded); thumbnail
  encoding per image is timed apart (``thumbnail_ms_per_image``).

Targets (issue 17): under 20 MB and interactive within 3 s at 10,000 images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import figure, finish_document, start_document, stats

MODULE = "bench.bench_explorer"
SIZE_TARGET_MB = 20.0
INTERACTIVE_TARGET_S = 3.0
DISTINCT_IMAGES = 1000
# As tests/helpers.py: headless, offline, no sandbox (root in CI).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
IDLE_JS = "() => window.Bokeh?.documents?.[0]?.is_idle === true"
POINT_JS = """([name, i]) => {
  const doc = Bokeh.documents[0];
  const root = Object.values(Bokeh.index)[0];
  const view = root.owner.find_one(doc.get_model_by_name(name));
  const box = view.parent.canvas_view.el.getBoundingClientRect();
  const frame = view.parent.frame.bbox;
  return {x: box.left + view.glyph.sx[i], y: box.top + view.glyph.sy[i],
          frame: [box.left + frame.left, box.top + frame.top,
                  box.left + frame.right, box.top + frame.bottom]};
}"""


def synthetic_dataset(root: Path) -> Path:
    """A small CheXpert-format dataset (400 patients, 128 px) for thumbnails and labels."""
    from chexflow.data.synthetic import write_synthetic

    return write_synthetic(root / "data", patients=420, image_size=128, seed=0, progress=False)


def constructed_inputs(n: int, data_root: Path) -> tuple[list[Any], list[Any], list[str], float]:
    """Images, runs and thumbnails for ``n`` evaluation images, and the seconds per
    thumbnail (the dataset's first ``DISTINCT_IMAGES`` images, cycled)."""
    import pandas as pd

    from chexflow.data.labels import EVAL_CLASSES
    from chexflow.explorer import ExplorerRun
    from chexflow.explorer.inputs import dataset_labels, embedding_neighbours, explorer_images
    from chexflow.explorer.thumbnails import thumbnail_uris

    labels = dataset_labels(data_root)
    distinct = labels.index[:DISTINCT_IMAGES].tolist()
    start = time.perf_counter()
    thumbs = thumbnail_uris(data_root, distinct)
    per_thumbnail = (time.perf_counter() - start) / len(distinct)
    paths = [distinct[i % len(distinct)] for i in range(n)]
    table = pd.DataFrame(
        {"path": paths, "patient": [p.split("/")[1] for p in paths], "positives": ""}
    )
    images = explorer_images(table, labels)
    rng = np.random.default_rng(0)
    first = np.array([EVAL_CLASSES.index(im.positives[0]) if im.positives else 6 for im in images])
    centres = rng.normal(size=(7, 64))
    runs = []
    for r, (fraction, label) in enumerate(
        [(0.0, "0% seed 0"), (0.01, "1% seed 0"), (0.1, "10% seed 0")]
    ):
        spread = 2.0 - 0.6 * r  # clusters tighten with more labels
        features = centres[first] + spread * rng.normal(size=(n, 64))
        maps = {
            "tsne_s0_p30": (8 * centres[first, :2] / spread + rng.normal(size=(n, 2))),
            "pca": features[:, :2],
        }
        runs.append(
            ExplorerRun(
                label,
                fraction,
                0,
                {k: v.astype(np.float32) for k, v in maps.items()},
                embedding_neighbours(features.astype(np.float32)),
                [("mean AUROC", "0.864 [0.850, 0.878]"), ("silhouette", "0.070")],
            )
        )
    return images, runs, [thumbs[i % len(thumbs)] for i in range(n)], per_thumbnail


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure_page(browser: Any, url: str, n: int) -> dict[str, float]:
    """One load in a fresh tab: time to idle, to a hover tooltip, to a linked selection."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    before = _metrics(cdp)
    page.goto(url)
    page.wait_for_function(IDLE_JS, timeout=60_000, polling=20)
    interactive_ms = page.evaluate("() => performance.now()")
    after = _metrics(cdp)
    point = page.evaluate(POINT_JS, ["map|tsne_s0_p30|1% seed 0", n // 2])
    start = time.perf_counter()
    page.mouse.move(point["x"], point["y"])
    page.locator(".cx-tip img").first.wait_for(timeout=10_000)
    hover_ms = (time.perf_counter() - start) * 1000
    left, top, right, bottom = point["frame"]
    page.mouse.move(left + 2, top + 2)
    page.mouse.down()
    page.mouse.move((left + right) / 2, (top + bottom) / 2, steps=4)
    start = time.perf_counter()
    page.mouse.up()
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('images').selected.indices.length > 0",
        polling=10,
    )
    select_ms = (time.perf_counter() - start) * 1000
    page.close()
    return {
        "interactive_ms": interactive_ms,
        "main_thread_cpu_ms": (after["ThreadTime"] - before["ThreadTime"]) * 1000,
        "hover_ms": hover_ms,
        "select_ms": select_ms,
    }


def bench_size(n: int, data_root: Path, tmp: Path, repeats: int, browser: Any) -> dict[str, Any]:
    from chexflow.explorer import write_explorer

    images, runs, thumbs, per_thumbnail = constructed_inputs(n, data_root)
    out = tmp / f"explorer-{n}.html"
    start = time.perf_counter()
    write_explorer(out, images, runs, thumbs)
    write_s = time.perf_counter() - start
    url = out.resolve().as_uri()
    measure_page(browser, url, n)  # warm-up, untimed
    samples = [measure_page(browser, url, n) for _ in range(repeats)]
    return {
        "n": n,
        "runs": len(runs),
        "maps_per_run": len(runs[0].maps),
        "bytes": out.stat().st_size,
        "megabytes": round(out.stat().st_size / 1e6, 2),
        "write_s": round(write_s, 3),
        "thumbnail_ms_per_image": round(per_thumbnail * 1000, 3),
        **{
            key: stats([s[key] for s in samples], digits=1)
            for key in ("interactive_ms", "main_thread_cpu_ms", "hover_ms", "select_ms")
        },
    }


def explorer_figures(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Size, wall time and main-thread CPU time to interactive, per page size."""
    figures = []
    target = f"< {INTERACTIVE_TARGET_S:.0f} s"
    shared, free = (
        "wall clock, cores shared: see load_average",
        "Chrome ThreadTime: wall on a free core",
    )
    for row in rows:
        n, mb = f"{row['n']:,}", row["megabytes"]
        wall = row["interactive_ms"]["median"] / 1000
        cpu = row["main_thread_cpu_ms"]["median"] / 1000
        figures += [
            figure(f"explorer page size, {n} images", mb, "MB", f"< {SIZE_TARGET_MB:.0f} MB",
                   mb < SIZE_TARGET_MB),
            figure(f"explorer time to interactive, {n} images", round(wall, 2), "s", target,
                   wall < INTERACTIVE_TARGET_S, shared),
            figure(f"explorer main-thread CPU to interactive, {n} images", round(cpu, 2), "s",
                   target, cpu < INTERACTIVE_TARGET_S, free),
        ]  # fmt: skip
    return figures


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=Path("bench/results/explorer.json"))
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    doc = start_document("explorer", MODULE, argv)
    with (
        tempfile.TemporaryDirectory(prefix="chexflow-bench-explorer-") as tmp,
        sync_playwright() as pw,
    ):
        data_root = synthetic_dataset(Path(tmp))
        browser = pw.chromium.launch(executable_path=args.browser, args=list(CHROMIUM_FLAGS))
        try:
            rows = [bench_size(n, data_root, Path(tmp), args.repeats, browser) for n in args.sizes]
            version = browser.version
        finally:
            browser.close()
    doc["settings"] = {
        "sizes": args.sizes,
        "repeats": args.repeats,
        "warmup": "one untimed page load per size",
        "browser": f"Chromium {version} (headless, --disable-gpu: canvas rendering on the CPU)",
        "viewport": "1400 x 1000",
        "thumbnails": f"48-px WebP of {DISTINCT_IMAGES} distinct synthetic radiographs, cycled",
    }
    doc["results"] = {"pages": rows}
    doc["figures"] = explorer_figures(rows)
    finish_document(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
