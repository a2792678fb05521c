"""The preprocessed-image cache, the torch dataset and the seeded loaders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from chexflow.data import dataset as ds
from chexflow.data.dataset import (
    MEAN,
    STD,
    ChexpertImages,
    SeededBatchSampler,
    data_fingerprint,
    load_images,
    make_loader,
    set_loader_epoch,
)
from chexflow.data.labels import DEFAULT_POLICY, OBSERVATIONS
from chexflow.errors import DataError

SIZE = 16


def write_jpeg(path: Path, value: int, shape: tuple[int, int] = (40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    gradient = np.linspace(0, 60, shape[1], dtype=np.float32)[None, :]
    pixels = np.clip(value + gradient + np.zeros(shape, np.float32), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).convert("RGB").save(path, quality=95)  # RGB: convert("L") runs


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "CheXpert-v1.0-small"
    paths = [f"train/patient{p:05d}/study1/view1_frontal.jpg" for p in range(1, 7)]
    for i, path in enumerate(paths):
        write_jpeg(root / path, 20 * i)
    return root, paths


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the decoder (threads append; list.append is atomic)."""
    calls: list[int] = []
    original = ds.decode_image

    def counting(data: bytes, image_size: int) -> np.ndarray:
        calls.append(image_size)
        return original(data, image_size)

    monkeypatch.setattr(ds, "decode_image", counting)
    return calls


def test_load_images_decodes_to_uint8_squares(images) -> None:
    root, paths = images
    out = load_images(root, paths, SIZE, cache_dir=None, progress=False)
    assert out.shape == (6, SIZE, SIZE) and out.dtype == np.uint8
    means = out.reshape(6, -1).mean(axis=1)
    assert np.all(np.diff(means) > 10)  # image i is brighter than image i - 1, in order
    assert abs(out[0, :, 0].mean() - 0) < 8 and out[0, :, -1].mean() > 45  # gradient kept


def test_cache_hit_does_not_decode_and_returns_the_same(images, tmp_path, decodes) -> None:
    root, paths = images
    cache = tmp_path / "cache"
    first = load_images(root, paths, SIZE, cache, progress=False)
    assert len(decodes) == 6
    second = load_images(root, paths[::-1], SIZE, cache, progress=False)
    assert len(decodes) == 6
    np.testing.assert_array_equal(second, first[::-1])
    other_size = load_images(root, paths[:2], 8, cache, progress=False)
    assert len(decodes) == 8 and other_size.shape == (2, 8, 8)


def test_cache_is_keyed_by_content(images, tmp_path, decodes) -> None:
    root, paths = images
    cache = tmp_path / "cache"
    before = load_images(root, paths, SIZE, cache, progress=False)
    write_jpeg(root / paths[2], 250)  # edited in place: same path, new bytes
    (root / "train/copy.jpg").write_bytes((root / paths[0]).read_bytes())
    after = load_images(root, [*paths, "train/copy.jpg"], SIZE, cache, progress=False)
    assert len(decodes) == 6 + 1  # only the edited image; the copy is a cache hit
    assert after[2].mean() > before[2].mean() + 100
    np.testing.assert_array_equal(after[6], before[0])
    np.testing.assert_array_equal(np.delete(after[:6], 2, 0), np.delete(before, 2, 0))


def test_duplicate_paths_decode_once(images, tmp_path, decodes) -> None:
    root, paths = images
    out = load_images(root, [paths[0], paths[0]], SIZE, tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(out[0], out[1])
    packs = list((tmp_path / "cache").rglob("*.images.npy"))
    assert len(packs) == 1 and np.load(packs[0]).shape == (1, SIZE, SIZE)


def test_missing_and_corrupt_images_are_named(images, tmp_path) -> None:
    root, paths = images
    (root / paths[1]).unlink()
    (root / paths[4]).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match=r"2 of 6 images .*patient00002.*\(file not found\)"):
        load_images(root, paths, SIZE, tmp_path / "cache", progress=False)
    with pytest.raises(DataError, match=r"1 of 1 images .*patient00005.*cannot decode"):
        load_images(root, [paths[4]], SIZE, None, progress=False)
    with pytest.raises(DataError, match="not relative"):
        load_images(root, ["../outside.jpg"], SIZE, None, progress=False)


def test_cache_writes_are_atomic_and_never_pickle(images, tmp_path) -> None:
    root, paths = images
    cache = tmp_path / "cache"
    load_images(root, paths, SIZE, cache, progress=False)
    files = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert len(files) == 2 and not any(name.endswith(".tmp") for name in files)
    keys = next(cache.rglob("*.keys.npy"))
    assert np.load(keys, allow_pickle=False).dtype == np.dtype("S40")


class _Payload:
    """Unpickling this creates ``marker``: proof that a cache file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("victim", ["keys", "images"])
def test_a_pickled_cache_file_is_refused(images, tmp_path, victim: str) -> None:
    root, paths = images
    cache = tmp_path / "cache"
    load_images(root, paths, SIZE, cache, progress=False)
    target = next(cache.rglob(f"*.{victim}.npy"))
    marker = tmp_path / "pwned"
    np.save(target, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"image cache file .* is not a valid pack.*delete it"):
        load_images(root, paths, SIZE, cache, progress=False)
    assert not marker.exists()


def test_a_pack_of_the_wrong_shape_is_refused(images, tmp_path) -> None:
    root, paths = images
    cache = tmp_path / "cache"
    load_images(root, paths, SIZE, cache, progress=False)
    np.save(next(cache.rglob("*.images.npy")), np.zeros((6, 3, 3), np.float32))
    with pytest.raises(DataError, match=r"expected uint8 \[n, 16, 16\]"):
        load_images(root, paths, SIZE, cache, progress=False)


def make_dataset(n: int = 10, augment: bool = False, seed: int = 0) -> ChexpertImages:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)
    targets = (np.arange(n * 2).reshape(n, 2) % 3 == 0).astype(np.float32)
    mask = np.ones_like(targets)
    mask[::4, 1] = 0
    return ChexpertImages(pixels, targets, mask, augment=augment, seed=seed)


def test_dataset_items_are_normalised_float_tensors() -> None:
    data = make_dataset()
    image, target, mask = data[3]
    assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32
    assert target.shape == (2,) and mask.dtype == torch.float32
    expected = (torch.from_numpy(data.images[3]).float() / 255 - MEAN) / STD
    torch.testing.assert_close(image[0], expected)
    torch.testing.assert_close(data[-1][0], data[9][0])


def test_batch_indexing_equals_stacked_items() -> None:
    data = make_dataset()
    indices = [7, 2, 2, 5]
    images, targets, masks = data[indices]
    items = [data[i] for i in indices]
    for k, batch in enumerate((images, targets, masks)):
        torch.testing.assert_close(batch, torch.stack([item[k] for item in items]))
    assert len(data[2:5][0]) == 3


def test_augmentation_is_light_seeded_and_off_by_default() -> None:
    plain, augmented = make_dataset(), make_dataset(augment=True)
    batch = plain[[0, 1, 2]][0]
    jittered = augmented[[0, 1, 2]][0]
    assert not torch.equal(batch, jittered)
    torch.testing.assert_close(jittered, make_dataset(augment=True)[[0, 1, 2]][0])
    assert not torch.equal(jittered, make_dataset(augment=True, seed=1)[[0, 1, 2]][0])
    # A smooth image keeps its left-right layout (no flip): the bright side stays right.
    smooth = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8), (SIZE, 1))[None]
    moved = ChexpertImages(smooth, np.zeros((1, 1)), np.ones((1, 1)), augment=True)[0][0][0]
    assert moved[:, -4:].mean() > moved[:, :4].mean() + 2


def test_dataset_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ChexpertImages(np.zeros((2, 4, 4), np.float32), np.zeros((2, 1)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="targets"):
        ChexpertImages(np.zeros((2, 4, 4), np.uint8), np.zeros((3, 1)), np.ones((3, 1)))


def _order(loader) -> list[float]:
    return [v for _, targets, _ in loader for v in targets[:, 0].tolist()]


def _rows(loader) -> list[int]:
    """Recover row ids from images (each row of ``ids`` has a unique first pixel)."""
    firsts = [x[:, 0, 0, 0] * STD + MEAN for x, _, _ in loader]
    return torch.cat(firsts).mul(255).round().int().tolist()


def ids_dataset(n: int = 23) -> ChexpertImages:
    pixels = np.zeros((n, 4, 4), np.uint8)
    pixels[:, 0, 0] = np.arange(n)
    return ChexpertImages(pixels, np.zeros((n, 1)), np.ones((n, 1)))


def test_loader_order_is_fixed_by_seed_and_epoch() -> None:
    data = ids_dataset()
    loader = make_loader(data, 5, shuffle=True, seed=0)
    epoch0, epoch1 = _rows(loader), _rows(loader)
    assert sorted(epoch0) == list(range(23)) and epoch0 != list(range(23))
    assert epoch1 != epoch0
    again = make_loader(data, 5, shuffle=True, seed=0)
    assert [_rows(again), _rows(again)] == [epoch0, epoch1]
    assert _rows(make_loader(data, 5, shuffle=True, seed=1)) != epoch0
    set_loader_epoch(again, 1)
    assert _rows(again) == epoch1  # a resumed run replays epoch 1
    assert _rows(make_loader(data, 5, shuffle=False, seed=3)) == list(range(23))


def test_loader_batches_and_drop_last() -> None:
    data = ids_dataset()
    loader = make_loader(data, 5, shuffle=False, seed=0)
    shapes = [tuple(x.shape) for x, _, _ in loader]
    assert len(loader) == 5 and shapes[-1] == (3, 1, 4, 4) and shapes[0] == (5, 1, 4, 4)
    dropped = make_loader(data, 5, shuffle=True, seed=0, drop_last=True)
    assert len(dropped) == 4 and len(_rows(dropped)) == 20


def test_loader_with_workers_matches_in_process() -> None:
    data = ids_dataset()
    single = make_loader(data, 4, shuffle=True, seed=7)
    loader = make_loader(data, 4, shuffle=True, seed=7, num_workers=2)
    assert loader.persistent_workers
    assert [_rows(loader), _rows(loader)] == [_rows(single), _rows(single)]


def test_reseeding_the_sampler_generator_replays_an_epoch() -> None:
    """What train.seed_loader does before each epoch: seed ``loader.sampler.generator``."""
    loader = make_loader(ids_dataset(), 5, shuffle=True, seed=0)
    loader.sampler.generator.manual_seed(1234)
    first = _rows(loader)
    _rows(loader)
    loader.sampler.generator.manual_seed(1234)
    assert _rows(loader) == first


def test_loader_takes_any_map_style_dataset() -> None:
    data = TensorDataset(torch.arange(10.0), torch.arange(10.0))
    loader = make_loader(data, 4, shuffle=True, seed=0)
    seen = [int(v) for batch, _ in loader for v in batch]
    assert sorted(seen) == list(range(10))
    assert seen == [int(v) for batch, _ in make_loader(data, 4, True, seed=0) for v in batch]
    set_loader_epoch(loader, 0)
    assert [int(v) for batch, _ in loader for v in batch] == seen
    assert isinstance(loader.batch_sampler, SeededBatchSampler)


def test_loader_fetches_each_batch_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed property: one gather + one conversion per batch, not one per image.

    (Timings on a shared machine are noise; bench/ measures them. On 2 idle cores a batch
    of 64 x 128 px costs ~2-3 ms, against ~1 s for a resnet18 training step.)
    """
    calls: list[int] = []
    original = ChexpertImages._batch

    def counting(self, indices):
        calls.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(ChexpertImages, "_batch", counting)
    loader = make_loader(ids_dataset(), 5, shuffle=True, seed=0)
    assert sum(1 for _ in loader) == 5
    assert calls == [5, 5, 5, 5, 3]


def test_data_fingerprint_tracks_rows_labels_size_and_policy() -> None:
    frame = pd.DataFrame(
        {
            "path": ["train/patient00001/study1/view1_frontal.jpg", "train/p2.jpg"],
            **{name: np.array([1.0, np.nan], np.float32) for name in OBSERVATIONS},
        }
    )
    base = data_fingerprint(frame, 64, DEFAULT_POLICY)
    assert len(base) == 16 and base == data_fingerprint(frame.copy(), 64, dict(DEFAULT_POLICY))
    changed = frame.copy()
    changed.loc[1, "Edema"] = -1.0
    assert data_fingerprint(changed, 64, DEFAULT_POLICY) != base
    assert data_fingerprint(frame, 128, DEFAULT_POLICY) != base
    assert data_fingerprint(frame, 64, {**DEFAULT_POLICY, "Edema": "zeros"}) != base
    assert data_fingerprint(frame.iloc[::-1], 64, DEFAULT_POLICY) != base


# --- issue 16: run identity from content -----------------------------------------------------


def _invert(path: Path) -> None:
    with Image.open(path) as image:
        pixels = 255 - np.asarray(image.convert("L"))
    Image.fromarray(pixels).save(path, quality=95)


def _frame(paths: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"path": paths, **{name: np.zeros(len(paths), np.float32) for name in OBSERVATIONS}}
    )


def test_the_data_fingerprint_covers_image_bytes(images) -> None:
    # Before: inverting every JPEG kept the fingerprint, so the old training was reused.
    root, paths = images
    frame = _frame(paths)
    before = data_fingerprint(frame, SIZE, DEFAULT_POLICY, root=root)
    assert before == data_fingerprint(frame, SIZE, DEFAULT_POLICY, root=root)
    _invert(root / paths[2])
    assert data_fingerprint(frame, SIZE, DEFAULT_POLICY, root=root) != before
    assert ds.PREPROCESS_VERSION != "v1", "16-bit images decode differently from v1"


def test_content_keys_are_the_image_cache_keys(images, tmp_path) -> None:
    root, paths = images
    keys = ds.content_keys(root, paths)
    load_images(root, paths, SIZE, tmp_path / "cache", progress=False)
    index = ds._PackStore(tmp_path / "cache", SIZE).index()
    assert set(keys) == set(index)
    (root / paths[1]).unlink()
    with pytest.raises(DataError, match=r"1 of 6 images .*patient00002.*\(file not found\)"):
        ds.content_keys(root, paths)


def test_check_image_files_decodes_only_what_the_cache_lacks_and_fills_it(
    images, tmp_path, decodes
) -> None:
    root, paths = images
    cache = tmp_path / "cache"
    load_images(root, paths[:4], SIZE, cache, progress=False)
    decodes.clear()
    keys = ds.check_image_files(root, paths, SIZE, cache)
    assert keys == ds.content_keys(root, paths)
    assert len(decodes) == 2  # the two images the cache did not hold
    load_images(root, paths, SIZE, cache, progress=False)
    assert len(decodes) == 2, "the run that follows decodes nothing again"
    (root / paths[5]).write_bytes((root / paths[5]).read_bytes()[:120])
    for cache_dir in (cache, None):
        with pytest.raises(DataError, match=r"1 of 6 images .*patient00006.*\(cannot decode"):
            ds.check_image_files(root, paths, SIZE, cache_dir)


@pytest.mark.parametrize("high", [4095, 65535])
def test_a_16_bit_png_is_scaled_not_clipped(tmp_path: Path, high: int) -> None:
    # Before: convert("L") clipped at 255, so 98% of the pixels of a 12-bit image were 255.
    values = np.linspace(0, high, 32 * 32).reshape(32, 32).round().astype(np.uint16)
    path = tmp_path / "wide.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I"), image.mode  # a real 16-bit grayscale PNG
    decoded = ds.decode_image(path.read_bytes(), 32)
    expected = np.rint(values.astype(np.float64) * 255.0 / high).astype(np.uint8)
    assert (decoded == 255).mean() < 0.01
    assert decoded.min() == 0 and decoded.max() == 255
    assert np.abs(decoded.astype(int) - expected).max() <= 1  # the resize to 32 px aside
    assert (np.diff(decoded.ravel().astype(int)) >= -1).all()  # order is kept


def test_a_constant_16_bit_png_decodes_to_zero(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((16, 16), 3000, np.uint16)).save(path)
    assert (ds.decode_image(path.read_bytes(), 16) == 0).all()


def test_a_shuffled_loader_never_ends_on_a_batch_of_one() -> None:
    data = ids_dataset()  # 23 items

    def sizes(loader) -> list[int]:
        return [len(x) for x, _, _ in loader]

    training = make_loader(data, 11, shuffle=True, seed=0)
    assert sizes(training) == [11, 12] and len(training) == 2
    assert sorted(_rows(training)) == list(range(23))
    assert sizes(make_loader(data, 11, shuffle=True, seed=0, merge_single=False)) == [11, 11, 1]
    assert sizes(make_loader(data, 11, shuffle=False, seed=0)) == [11, 11, 1]  # evaluation
