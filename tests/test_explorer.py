"""The explorer page: its inputs from a comparison's runs, and the page in headless Chromium.

The browser checks open a page built from constructed input (48 images on a grid, two
runs whose maps are mirror images, two map names) with Playwright driving the system
Chromium, and read what BokehJS drew: one mark per image in every map, a tooltip with
the hovered image's thumbnail and labels, a box selection in one map lighting the same
images in the others, and the colour and class controls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bokeh.palettes import Viridis256
from helpers import CHROMIUM_FLAGS, chromium
from PIL import Image

from chexflow.analysis.plots import MULTILABEL_COLOR
from chexflow.comparison import RunRecord
from chexflow.data.labels import EVAL_CLASSES
from chexflow.errors import DataError
from chexflow.explorer import (
    ExplorerImage,
    ExplorerRun,
    explorer_images,
    write_comparison_explorer,
    write_explorer,
)
from chexflow.explorer.colours import change_pairs, colour_modes, neighbourhood_agreement
from chexflow.explorer.inputs import aligned_maps, dataset_labels, key_numbers
from chexflow.explorer.page import packed_rgba
from chexflow.explorer.thumbnails import MISSING, thumbnail_uris

N = 48  # an 8 x 6 grid
RUNS = ("1% seed 0", "10% seed 0")
MAPS = ("tsne_s0_p30", "pca")


# ---------------------------------------------------------------- constructed input


def _labels(i: int) -> dict[str, Any]:
    """Image i: positive for class i % 6, also Edema when i % 8 == 0, Consolidation
    uncertain when i % 5 == 0, Atelectasis negative when odd, the rest blank."""
    states = dict.fromkeys(EVAL_CLASSES, "blank")
    states[EVAL_CLASSES[1 if i % 2 else 0]] = "negative"
    states["Consolidation"] = "uncertain" if i % 5 == 0 else states["Consolidation"]
    states[EVAL_CLASSES[i % 6]] = "positive"
    if i % 8 == 0:
        states["Edema"] = "positive"
    return states


def constructed(tmp: Path) -> tuple[list[ExplorerImage], list[ExplorerRun], list[str]]:
    grid = np.array([(i % 8, i // 8) for i in range(N)], dtype=np.float32)
    images = [
        ExplorerImage(f"train/patient{i // 2:05d}/study1/view{i % 2 + 1}_frontal.jpg",
                      f"patient{i // 2:05d}", f"patient{i // 2:05d}/study1", _labels(i))
        for i in range(N)
    ]  # fmt: skip
    runs = []
    for r, label in enumerate(RUNS):
        coords = grid if r == 0 else grid * np.array([-1.0, 1.0], dtype=np.float32)
        neighbours = np.stack([(np.arange(1, 6) * (r + 1) + i) % N for i in range(N)])
        maps = {"tsne_s0_p30": coords, "pca": coords[:, ::-1].copy()}
        runs.append(
            ExplorerRun(label, (0.01, 0.1)[r], 0, maps, neighbours, [("silhouette", f"0.{r}00")])
        )
    for i in range(3):  # three radiographs, cycled; image 47's file is missing
        (tmp / f"im{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64), 60 * i + 40, dtype=np.uint8)).save(tmp / f"im{i}.jpg")
    thumbs = thumbnail_uris(tmp, [f"im{i % 3}.jpg" for i in range(N - 1)] + ["absent.jpg"])
    return images, runs, thumbs


# ---------------------------------------------------------------- inputs, without a browser


def test_thumbnails_are_small_webp_and_a_missing_file_is_a_grey_dot(tmp_path: Path) -> None:
    _images, _runs, thumbs = constructed(tmp_path)
    assert all(t.startswith("data:image/webp;base64,") for t in thumbs[:-1])
    assert max(len(t) for t in thumbs[:-1]) < 1_000
    assert thumbs[-1] == MISSING


def test_neighbourhood_agreement_is_the_share_of_shared_neighbours() -> None:
    a = np.array([[1, 2, 3, 4], [0, 2, 3, 4]])
    b = np.array([[4, 3, 2, 1], [5, 6, 7, 0]])
    assert neighbourhood_agreement(a, b).tolist() == [1.0, 0.25]


def test_colour_modes_follow_the_labels_and_the_change_pairs(tmp_path: Path) -> None:
    images, runs, _ = constructed(tmp_path)
    modes = {m.key: m for m in colour_modes(images, runs, EVAL_CLASSES)}
    assert list(modes) == ["c_class", "c_status", "c_uncertain", "c_change0"]
    assert change_pairs(runs) == [(0, 1)]
    # image 1: Cardiomegaly only -> its class colour; image 0: Atelectasis + Edema -> grey
    assert modes["c_class"].colours[1] == "#56B4E9"
    assert modes["c_class"].colours[0] == MULTILABEL_COLOR == "#7F7F7F"
    assert modes["c_status"].colours[0] == "#D55E00" and modes["c_status"].colours[1] == "#0072B2"
    assert (
        modes["c_uncertain"].colours[5] == "#E69F00"
        and modes["c_uncertain"].colours[1] == "#C8C8C8"
    )
    # run 1's neighbours are i+1, ..., i+5, run 2's i+2, i+4, ..., i+10: 2 of 5 kept
    assert set(modes["c_change0"].colours) == {Viridis256[round(0.4 * 255)]}
    assert packed_rgba(["#56B4E9"]).tolist() == [0x56B4E9FF]


def test_inputs_are_refused_when_rows_do_not_match(tmp_path: Path) -> None:
    images, runs, thumbs = constructed(tmp_path)
    bad = ExplorerRun("bad", 0.5, 0, {"pca": np.zeros((N - 1, 2))}, runs[0].neighbours)
    with pytest.raises(DataError, match=r"map pca has shape \(47, 2\)"):
        write_explorer(tmp_path / "x.html", images, [runs[0], bad], thumbs)
    far = ExplorerRun("far", 0.5, 0, runs[0].maps, runs[0].neighbours + N)
    with pytest.raises(DataError, match="neighbours must be"):
        write_explorer(tmp_path / "x.html", images, [far], thumbs)


def _record(table: pd.DataFrame, fraction: float, maps: dict[str, np.ndarray]) -> RunRecord:
    rng = np.random.default_rng(int(fraction * 100))
    mixing = [[0.5 if a == b else 0.1 for b in range(3)] for a in range(3)]
    mixing[1][2] = mixing[2][1] = 0.3  # Edema and Normal overlap above chance (0.25)
    mixing[0][2] = mixing[2][0] = 0.375  # Atelectasis and Normal at chance: not listed
    metrics = {
        "silhouette": {"value": 0.1, "ci_low": 0.05, "ci_high": 0.15},
        "knn": {
            "accuracy": {"value": 0.6},
            "mixing": {"classes": ["Atelectasis", "Edema", "Normal"], "matrix": mixing,
                       "base_rate": [0.5, 0.25, 0.25]},
        },
    }  # fmt: skip
    return RunRecord(
        run_id=f"run{fraction}",
        fraction=fraction,
        seed=0,
        model="test_resnet",
        directory=Path("."),
        eval_digest="same",
        auroc={"mean": 0.7, "mean_ci_low": 0.6, "mean_ci_high": 0.8},
        metrics=metrics,
        table=table,
        maps=maps,
        feature_array=rng.normal(size=(len(table), 16)).astype(np.float32),
    )


def test_a_comparisons_runs_become_a_page_with_the_datasets_labels(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    labels = dataset_labels(tiny_dataset)
    paths = labels.index[:40].tolist()
    table = pd.DataFrame(
        {"path": paths, "patient": [p.split("/")[1] for p in paths], "view": "Frontal",
         "positives": "", "exclusive": ""}
    )  # fmt: skip
    ref = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    turned = ref @ np.array([[0.0, -1.0], [1.0, 0.0]], dtype=np.float32)  # a quarter turn
    records = [
        _record(table, 0.1, {"tsne_s0_p30": ref, "tsne": ref, "pca": ref}),
        _record(table, 0.01, {"tsne_s0_p30": turned, "tsne": turned, "pca": turned}),
    ]
    aligned = aligned_maps(records)
    assert list(aligned) == ["1% seed 0", "10% seed 0"]
    assert list(aligned["1% seed 0"]) == ["tsne_s0_p30", "pca"]  # the "tsne" copy left out
    np.testing.assert_allclose(aligned["1% seed 0"]["tsne_s0_p30"], ref, atol=1e-4)

    images = explorer_images(table, labels)
    values = labels.loc[paths[0], "Edema"]
    expected = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}.get(values, "blank")
    assert images[0].labels["Edema"] == expected
    assert images[0].study == labels.loc[paths[0], "study"]
    states = {s for im in images for s in im.labels.values()}
    assert {"positive", "blank"} <= states and "unknown" not in states

    assert key_numbers(records[0]) == [
        ("mean AUROC", "0.700 [0.600, 0.800]"),
        ("silhouette", "0.100 [0.050, 0.150]"),
        ("kNN accuracy", "0.600"),
        ("overlap Edema ↔ Normal", "30% (chance 25%)"),
    ]
    out = write_comparison_explorer(records, tmp_path / "explorer.html", tiny_dataset)
    text = out.read_text()
    assert "data:image/webp;base64," in text and "cdn.bokeh.org" not in text


def test_without_the_dataset_labels_are_positives_and_not_positive() -> None:
    table = pd.DataFrame({"path": ["train/patient00001/study2/view1_frontal.jpg"],
                          "patient": ["patient00001"], "positives": ["Edema|Normal"]})  # fmt: skip
    (image,) = explorer_images(table, None)
    assert image.study == "patient00001/study2"
    assert image.positives == ("Edema", "Normal")
    assert image.labels["Atelectasis"] == "unknown"


def test_images_of_another_dataset_are_refused(tiny_dataset: Path) -> None:
    table = pd.DataFrame({"path": ["train/patient99999/study1/view1_frontal.jpg"],
                          "patient": ["patient99999"], "positives": [""]})  # fmt: skip
    with pytest.raises(DataError, match=r"not in the dataset's train\.csv or valid\.csv"):
        explorer_images(table, dataset_labels(tiny_dataset))


# ---------------------------------------------------------------- the page in Chromium

IDLE_JS = "() => window.Bokeh?.documents?.[0]?.is_idle === true"
VIEW_JS = """
const doc = Bokeh.documents[0];
const root = Object.values(Bokeh.index)[0];
const view = (name) => root.owner.find_one(doc.get_model_by_name(name));
"""
DRAWN_JS = (
    VIEW_JS
    + """
return names.map((name) => {
  const v = view(name);
  const box = v.parent.frame.bbox;
  const inside = [...v.glyph.sx].filter((x, k) => x >= box.left && x <= box.right
      && v.glyph.sy[k] >= box.top && v.glyph.sy[k] <= box.bottom).length;
  return {n: v.glyph.sx.length, inside, indices: [...v.model.view.indices]};
});
"""
)
POINTS_JS = (
    VIEW_JS
    + """
const v = view(name);
const canvas = v.parent.canvas_view.el.getBoundingClientRect();
const box = v.parent.frame.bbox;
return {
  x: [...v.glyph.sx].map((x) => x + canvas.left), y: [...v.glyph.sy].map((y) => y + canvas.top),
  frame: [box.left + canvas.left, box.top + canvas.top, box.right + canvas.left,
          box.bottom + canvas.top],
};
"""
)


def js(body: str) -> str:
    return f"([names, name]) => {{ {body} }}"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[ExplorerImage]]]:
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("chromium is not installed (apt-get install chromium enables this check)")
    sync_api = pytest.importorskip("playwright.sync_api")
    tmp = tmp_path_factory.mktemp("explorer")
    images, runs, thumbs = constructed(tmp)
    out = write_explorer(tmp / "explorer.html", images, runs, thumbs, title="Test explorer")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=list(CHROMIUM_FLAGS))
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.route("**/*", lambda route: route.abort() if not route.request.url.startswith(
                ("file:", "data:")) else route.continue_())  # fmt: skip
            tab.goto(out.resolve().as_uri())
            tab.wait_for_function(IDLE_JS, timeout=60_000)
            yield tab, images
        finally:
            browser.close()


def map_names() -> list[str]:
    return [f"map|{m}|{r}" for m in MAPS for r in RUNS]


def test_each_map_draws_one_mark_per_image(page: tuple[Any, list[ExplorerImage]]) -> None:
    tab, _ = page
    drawn = tab.evaluate(js(DRAWN_JS), [map_names(), None])
    assert [d["n"] for d in drawn] == [N] * 4
    assert [d["inside"] for d in drawn[:2]] == [N, N]  # the visible tab: all inside the frame
    assert all(d["indices"] == list(range(N)) for d in drawn)


def test_hover_shows_the_images_thumbnail_labels_and_neighbours(
    page: tuple[Any, list[ExplorerImage]],
) -> None:
    tab, _ = page
    points = tab.evaluate(js(POINTS_JS), [None, "map|tsne_s0_p30|10% seed 0"])
    i = 11  # Normal positive, Cardiomegaly negative; patient00005
    tab.mouse.move(points["x"][i], points["y"][i])
    tip = tab.locator(".cx-tip").first
    tip.wait_for(timeout=10_000)
    text = tip.inner_text()
    assert "patient00005" in text and f"image #{i}" in text
    assert "positive: Normal" in text and "negative: Cardiomegaly" in text
    # run 2's nearest images of image 11 are 13, 15, ...: image 13 is positive for Card
    assert "nearest in this run: Card" in text
    src = tab.locator(".cx-tip img").first.get_attribute("src")
    assert src.startswith("data:image/webp;base64,") and src in images_thumbs(tab)
    tab.mouse.move(1, 1)


def images_thumbs(tab: Any) -> list[str]:
    return tab.evaluate("() => [...Bokeh.documents[0].get_model_by_name('images').data.thumb]")


def test_a_box_in_one_map_lights_the_same_images_in_every_map(
    page: tuple[Any, list[ExplorerImage]],
) -> None:
    tab, _ = page
    source = "map|tsne_s0_p30|1% seed 0"
    other = tab.locator(".bk-Figure").nth(1)  # the 10% map, mirrored
    before = other.screenshot()
    points = tab.evaluate(js(POINTS_JS), [None, source])
    left, top, right, bottom = points["frame"]
    x0, y0, x1, y1 = left + 3, top + 3, (left + right) / 2, (top + bottom) / 2
    tab.mouse.move(x0, y0)
    tab.mouse.down()
    tab.mouse.move(x1, y1, steps=5)
    tab.mouse.up()
    expected = [
        i for i, (x, y) in enumerate(zip(points["x"], points["y"], strict=True))
        if x0 < x < x1 and y0 < y < y1
    ]  # fmt: skip
    assert 0 < len(expected) < N
    selected = tab.evaluate(
        js(VIEW_JS + "return names.map((n) => [...view(n).model.data_source.selected.indices]);"),
        [map_names(), None],
    )
    assert all(sorted(s) == expected for s in selected)
    tab.wait_for_timeout(300)
    assert other.screenshot() != before  # the other map redrew with the selection lit
    tab.mouse.dblclick((left + right) / 2, bottom - 5)


def test_colour_and_class_controls_recolour_and_filter_every_map(
    page: tuple[Any, list[ExplorerImage]],
) -> None:
    tab, images = page
    tab.locator("select").nth(0).select_option(label="multi-label status")
    tab.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('legend').text.includes('several classes')"
    )
    colours = tab.evaluate(
        "() => { const d = Bokeh.documents[0].get_model_by_name('images').data;"
        " return [[...d.color], [...d.c_status]]; }"
    )
    assert colours[0] == colours[1]
    tab.locator("select").nth(1).select_option("Edema")
    edema = [i for i, im in enumerate(images) if "Edema" in im.positives]
    tab.wait_for_function(
        "(n) => Bokeh.documents[0].get_model_by_name('class-filter').indices?.length === n",
        arg=len(edema),
    )
    tab.wait_for_timeout(300)
    drawn = tab.evaluate(js(DRAWN_JS), [map_names(), None])
    assert all(d["indices"] == edema for d in drawn)
    tab.locator("select").nth(1).select_option("all images")


def test_runs_are_laid_out_seeds_by_fractions(tmp_path: Path) -> None:
    from bokeh.models import Spacer

    from chexflow.explorer.page import build_layout

    images, runs, thumbs = constructed(tmp_path)
    grid = [
        ExplorerRun(f"{f * 100:g}% seed {s}", f, s, runs[0].maps, runs[0].neighbours)
        for f, s in [(0.0, 0), (0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]
    ]
    layout = build_layout(images, grid, thumbs, EVAL_CLASSES, "t")
    tabs = layout.select_one({"name": "maps"}).tabs
    assert [t.title for t in tabs] == ["t-SNE seed 0, perplexity 30", "PCA"]
    seed_rows = tabs[0].child.children
    assert len(seed_rows) == 2 and [len(r.children) for r in seed_rows] == [3, 3]
    assert isinstance(seed_rows[1].children[0], Spacer)  # the reference has seed 0 only
    titles = [[c.children[0].title.text for c in r.children[1:]] for r in seed_rows]
    assert titles == [["1% seed 0", "10% seed 0"], ["1% seed 1", "10% seed 1"]]
