"""Decoded images as one uint8 array, cached on disk, and the torch Dataset/loader over it.

Preprocessing: each image is decoded with PIL to 8-bit grayscale and resized to ``S × S``
with a Lanczos filter. 8-bit images (CheXpert's JPEGs; RGB or palette images through
``convert("L")``) keep their values. Images of more than 8 bits (16-bit PNG ``I;16``,
32-bit ``I``, float ``F``) are windowed to their own minimum and maximum, as the DICOM to
8-bit conversions of chest X-ray datasets do, and scaled linearly to 0-255 (a constant
image becomes 0); PIL's ``convert("L")`` would clip them at 255. The resize squashes the
aspect ratio (CheXpert-small images are about 390×320, so anatomy is stretched by ~20% —
identically for training and evaluation). JPEGs are decoded at the smallest DCT scale
that is still at least ``S`` pixels (``Image.draft``), which is faster and, after the
antialiasing resize, visually the same.

Cache layout (``<cache_dir>/images-<PREPROCESS_VERSION>/s<S>/``): *packs*. Each
``load_images`` call that decodes anything writes one pack — ``<id>.images.npy`` (uint8
``[m, S, S]``) plus ``<id>.keys.npy`` (the sha1 of each source file's bytes, ``S40``). An
image's cache key is therefore (sha1 of its file bytes, ``S``, preprocessing version): an
edited image gets a new key and is decoded again; the same bytes under another path are
decoded once.
Packs rather than one file per image because a run reads tens of thousands of images:
opening a few memory-mapped packs and gathering rows is much faster than as many small
files, and appending a pack never rewrites what is there. Writes are atomic (temporary
file + ``os.replace``; the keys file is written last and publishes the pack), so
concurrent runs at worst decode the same images twice. Files are read with
``allow_pickle=False``; anything else in a pack is refused with a ``DataError``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from chexflow.data.labels import OBSERVATIONS, LabelPolicy
from chexflow.errors import DataError
from chexflow.files import atomic_file

log = logging.getLogger(__name__)

# Bump when decoding or resizing changes: the cache folder, the data fingerprint and the
# evaluation digest change with it. v2: images of more than 8 bits are scaled, not clipped.
PREPROCESS_VERSION = "v2"
# PIL modes of more than 8 bits per pixel (one channel).
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
# Grayscale normalisation: CheXpert pixel intensities have mean ≈ 0.5 and std ≈ 0.25–0.3
# in [0, 1]; round constants keep the input near zero mean, unit variance.
MEAN = 0.5
STD = 0.25
# (p / 255 - MEAN) / STD as p * _SCALE - _SHIFT (normalise_pixels).
_SCALE = 1.0 / (255.0 * STD)
_SHIFT = MEAN / STD
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# Images per cache pack written by check_image_files (bounds the memory it holds).
_CHECK_PACK = 4096


def load_images(
    root: Path,
    paths: Sequence[str],
    image_size: int,
    cache_dir: Path | None,
    progress: bool = True,
) -> np.ndarray:
    """Decoded, resized images ``uint8 [len(paths), S, S]``, from the cache where possible.

    Args:
        root: the dataset root the ``paths`` are relative to.
        paths: canonical-frame paths (``train/patient00001/study1/view1_frontal.jpg``).
        image_size: ``S``.
        cache_dir: where packs are kept (module docstring); None decodes without caching.
        progress: show a progress bar (only on a terminal).

    Raises:
        DataError: a file is missing or does not decode (names the first and the count),
            or a cache file is not a valid pack.
    """
    root = Path(root)
    for path in paths:
        _check_relative(path)
    store = _PackStore(Path(cache_dir), image_size) if cache_dir is not None else None
    index = store.index() if store else {}
    out = np.empty((len(paths), image_size, image_size), dtype=np.uint8)
    hits: dict[str, list[tuple[int, int]]] = defaultdict(list)
    fresh: dict[str, int] = {}  # key of a newly decoded image → its row in ``out``
    failures: list[tuple[str, str]] = []
    bar = tqdm(
        total=len(paths),
        desc=f"images {image_size}px",
        unit="img",
        disable=not (progress and sys.stderr.isatty()),
    )
    with bar, ThreadPoolExecutor(_workers()) as pool:
        results = pool.map(lambda p: _read_one(root / p, image_size, index), paths)
        for i, (path, (key, pixels, problem)) in enumerate(zip(paths, results, strict=True)):
            bar.update()
            if problem is not None:
                failures.append((path, problem))
            elif pixels is None:
                pack, row = index[key]
                hits[pack].append((i, row))
            else:
                out[i] = pixels
                fresh.setdefault(key, i)
    if store:
        store.fill(out, hits)
        if fresh:
            store.add(list(fresh), out[list(fresh.values())])
    _raise_failures(root, paths, failures)
    return out


def _check_relative(path: str) -> None:
    # Plain string tests: this runs once per image, up to 223k times per call.
    if not path or path.startswith("/") or "\\" in path or "/../" in f"/{path}/":
        raise DataError(f"image path {path!r} is not relative to the dataset root")


def _workers() -> int:
    # Decoding and hashing release the GIL, so threads scale; more than 8 rarely helps I/O.
    return min(8, os.cpu_count() or 1)


def _read_one(
    path: Path, image_size: int, index: Mapping[str, tuple[str, int]]
) -> tuple[str, np.ndarray | None, str | None]:
    """(content key, decoded pixels or None on a cache hit, problem or None)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "", None, "file not found"
    except OSError as exc:
        return "", None, f"cannot read: {exc.strerror or exc}"
    key = content_key(data)
    if key in index:
        return key, None, None
    try:
        return key, decode_image(data, image_size), None
    except _DECODE_ERRORS as exc:
        return key, None, f"cannot decode: {str(exc).strip() or type(exc).__name__}"


def content_key(data: bytes) -> str:
    """The cache key of an encoded image: sha1 of its bytes, 40 hex characters."""
    return hashlib.sha1(data).hexdigest()


def content_keys(root: Path, paths: Sequence[str]) -> list[str]:
    """``content_key`` of each file under ``root``, in order (the run-identity inputs).

    Raises:
        DataError: a path escapes the root, or a file is missing or unreadable (names the
            first and the count).
    """
    root = Path(root)
    for path in paths:
        _check_relative(path)
    with ThreadPoolExecutor(_workers()) as pool:
        results = list(pool.map(lambda p: _key_of(root / p), paths))
    _raise_failures(root, paths, [(p, why) for p, (_, why) in zip(paths, results, strict=True)])
    return [key for key, _ in results]


def check_image_files(
    root: Path, paths: Sequence[str], image_size: int, cache_dir: Path | None = None
) -> list[str]:
    """Check that every file exists and decodes; returns their ``content_keys``.

    With ``cache_dir``, files whose bytes the image cache of ``image_size`` already holds
    are only read and hashed; the others are decoded as ``load_images`` does and added to
    the cache (packs of ``_CHECK_PACK`` images), so the run that follows does not decode
    them again. Without, each file is decoded at the smallest JPEG scale
    (``Image.draft``), which still reads every coded block: a truncated or corrupt file
    is found either way.

    Raises:
        DataError: as ``content_keys``, or a file that does not decode (``cannot decode``).
    """
    root = Path(root)
    for path in paths:
        _check_relative(path)
    if cache_dir is None:
        with ThreadPoolExecutor(_workers()) as pool:
            results = list(pool.map(lambda p: _check_one(root / p), paths))
        _raise_failures(root, paths, [(p, w) for p, (_, w) in zip(paths, results, strict=True)])
        return [key for key, _ in results]
    store = _PackStore(Path(cache_dir), image_size)
    index = store.index()
    keys: list[str] = []
    failures: list[tuple[str, str]] = []
    fresh: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(_workers()) as pool:
        results = pool.map(lambda p: _read_one(root / p, image_size, index), paths)
        for path, (key, pixels, problem) in zip(paths, results, strict=True):
            keys.append(key)
            if problem is not None:
                failures.append((path, problem))
            elif pixels is not None:
                fresh.setdefault(key, pixels)
                if len(fresh) >= _CHECK_PACK:
                    store.add(list(fresh), np.stack(list(fresh.values())))
                    fresh.clear()
    if fresh:
        store.add(list(fresh), np.stack(list(fresh.values())))
    _raise_failures(root, paths, failures)
    return keys


def _key_of(path: Path) -> tuple[str, str | None]:
    try:
        return content_key(path.read_bytes()), None
    except FileNotFoundError:
        return "", "file not found"
    except OSError as exc:
        return "", f"cannot read: {exc.strerror or exc}"


def _check_one(path: Path) -> tuple[str, str | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "", "file not found"
    except OSError as exc:
        return "", f"cannot read: {exc.strerror or exc}"
    key = content_key(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("L", ((image.width + 7) // 8, (image.height + 7) // 8))
            image.load()
    except _DECODE_ERRORS as exc:
        return key, f"cannot decode: {str(exc).strip() or type(exc).__name__}"
    return key, None


def _raise_failures(
    root: Path, paths: Sequence[str], problems: Sequence[tuple[str, str | None]]
) -> None:
    failures = [(path, why) for path, why in problems if why]
    if failures:
        path, problem = failures[0]
        raise DataError(
            f"{len(failures)} of {len(paths)} images are missing or unreadable; first: "
            f"{root / path} ({problem})"
        )


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    """One encoded image → grayscale ``uint8 [S, S]`` (preprocessing: module docstring)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (image_size, image_size))
        gray = to_8bit(image)
    resized = gray.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def to_8bit(image: Image.Image) -> Image.Image:
    """A mode-``L`` image: 8-bit modes converted, wider ones windowed to their min-max."""
    if image.mode not in _WIDE_MODES:
        return image.convert("L")
    values = np.asarray(image).astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{image.mode} image holds NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


class _PackStore:
    """The packs of one image size (module docstring)."""

    def __init__(self, cache_dir: Path, image_size: int) -> None:
        self.dir = cache_dir / f"images-{PREPROCESS_VERSION}" / f"s{image_size}"
        self.image_size = image_size

    def index(self) -> dict[str, tuple[str, int]]:
        """Content key → (pack id, row) over every published pack."""
        index: dict[str, tuple[str, int]] = {}
        if not self.dir.is_dir():
            return index
        for keys_file in sorted(self.dir.glob("*.keys.npy")):
            pack = keys_file.name.removesuffix(".keys.npy")
            if not self._images_file(pack).is_file():
                continue  # deleted by hand: its images are decoded again
            keys = _load_npy(keys_file)
            if keys.dtype != np.dtype("S40") or keys.ndim != 1:
                raise _bad_cache(keys_file, f"expected sha1 keys, found {keys.dtype} {keys.shape}")
            for row, key in enumerate(keys.tolist()):
                index.setdefault(key.decode("ascii"), (pack, row))
        return index

    def fill(self, out: np.ndarray, hits: Mapping[str, list[tuple[int, int]]]) -> None:
        """Copy cached rows into ``out``: ``hits[pack]`` lists (row in out, row in pack)."""
        for pack, pairs in hits.items():
            images = _load_npy(self._images_file(pack), mmap=True)
            size = self.image_size
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
                raise _bad_cache(
                    self._images_file(pack),
                    f"expected uint8 [n, {size}, {size}], found {images.dtype} {images.shape}",
                )
            targets, rows = np.array(pairs, dtype=np.int64).T
            if rows.max() >= len(images):
                raise _bad_cache(self._images_file(pack), "fewer images than keys")
            order = np.argsort(rows)  # read the memory map front to back
            out[targets[order]] = images[rows[order]]

    def add(self, keys: list[str], images: np.ndarray) -> None:
        """Publish a new pack; a cache that cannot be written only costs speed."""
        pack = hashlib.sha1("".join(keys).encode()).hexdigest()[:20]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _save_npy(self._images_file(pack), images)
            _save_npy(self.dir / f"{pack}.keys.npy", np.array(keys, dtype="S40"))
        except OSError as exc:
            log.warning("could not write the image cache in %s: %s", self.dir, exc)

    def _images_file(self, pack: str) -> Path:
        return self.dir / f"{pack}.images.npy"


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _bad_cache(path, str(exc).strip().splitlines()[0]) from exc


def _bad_cache(path: Path, why: str) -> DataError:
    return DataError(
        f"image cache file {path} is not a valid pack ({why}); delete it (or the whole "
        "cache folder) and rerun"
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """``(pixel / 255 - MEAN) / STD`` of uint8 pixels, on whatever device they are.

    The one normalisation of training and evaluation images: ``ChexpertImages`` applies
    it in the loader on the float32 input path, ``evaluation.to_device`` after the copy on
    the uint8 path (``input_path``). Computed as ``pixels * (1 / (255 STD)) - MEAN / STD``
    in float32, rounding after the multiply and after the shift, the same on every
    device. On a GPU the cast is fused into the multiply and the shift is in place (the
    batch is read once as uint8); on the CPU a mixed-dtype multiply is not vectorised and
    measured slower than a separate cast, so the cast comes first there. A single fused
    multiply-add (``torch.addcmul``) would round once and differ by up to 1 ulp (2.4e-7):
    two roundings keep both paths bit-identical.

    Args:
        pixels: uint8 ``[B, 1, S, S]`` (any shape; any memory format, which is kept).

    Returns:
        float32 (torch's default dtype), the shape, device and memory format of ``pixels``.
    """
    if pixels.dtype != torch.uint8:
        raise TypeError(f"normalise_pixels takes uint8 pixels, not {pixels.dtype}")
    if pixels.device.type == "cpu":
        return pixels.float().mul_(_SCALE).sub_(_SHIFT)
    return _cast_scale_shift(pixels)


def _cast_scale_shift(pixels: torch.Tensor) -> torch.Tensor:
    """``normalise_pixels`` off the CPU: one kernel casts and scales, one shifts in place."""
    return pixels.mul(_SCALE).sub_(_SHIFT)


@dataclass(frozen=True)
class InputPath:
    """How image batches travel from the loader to the model's device.

    Attributes:
        uint8: the loader yields uint8 pixels ``[B, 1, S, S]`` (``ChexpertImages(uint8=True)``)
            that ``normalise_pixels`` turns into float32 on the device, after the copy;
            False: the loader yields normalised float32 batches.
        pin_memory: the DataLoader copies batches into page-locked memory, so that the
            copy to the device runs asynchronously (``non_blocking=True``).
    """

    uint8: bool
    pin_memory: bool

    def describe(self) -> str:
        """A short label for logs and benchmark files."""
        pinned = "pinned" if self.pin_memory else "unpinned"
        if self.uint8:
            return f"uint8 {pinned}, normalised on the device"
        return f"float32 normalised in the loader, {pinned}"


def input_path(device: torch.device) -> InputPath:
    """The input path for training and evaluation on ``device``: the one place it is chosen.

    CUDA: uint8 batches from pinned memory, normalised on the GPU after an asynchronous
    copy. A 320 px batch of 64 is 6.5 MB instead of 26 MB of float32 over PCIe, and the
    normalisation leaves the loader workers; pinned memory lets the copy overlap the
    previous step. CPU: normalised float32 from the loader, as before, with no pinning
    (pinned memory needs an accelerator). The "device" is the same memory there, so the
    uint8 path only moves the same normalisation from the loader into the step; it
    measured no faster (docs/BENCHMARKS.md, "GPU input path").

    Args:
        device: where the model runs (``train.select_device``).
    """
    cuda = device.type == "cuda"
    return InputPath(uint8=cuda, pin_memory=cuda)


class ChexpertImages(Dataset):
    """Images, targets and masks for training or evaluation.

    ``dataset[i]`` is ``(image float32 [1, S, S], target float32 [c], mask float32 [c])``.
    ``dataset[indices]`` (a sequence or array) returns the same three as batched tensors
    converted in one go; ``make_loader`` uses this so that a batch costs one gather and
    one conversion instead of ``batch_size`` of each. Images are normalised as
    ``(pixel / 255 - MEAN) / STD`` (``normalise_pixels``).

    With ``uint8=True`` the images are returned as uint8 pixels ``[.., 1, S, S]`` instead,
    for ``evaluation.to_device`` to normalise on the device after the copy (the CUDA input
    path, ``input_path``): a quarter of the bytes to pin and copy. Augmentation
    interpolates, so it runs in float on [0, 1] as on the float path and its result is
    rounded back to 8 bits (as torchvision's transforms do on uint8 images): the batch
    differs from the float path's by at most half a grey level, 0.5 / 255 / STD = 0.0078
    after normalisation; unaugmented batches are bit-identical after ``normalise_pixels``.

    Args:
        images: ``uint8 [n, S, S]`` (``load_images``); kept as is, not copied.
        targets: ``[n, c]`` from ``label_targets``.
        mask: ``[n, c]`` from ``label_targets``.
        augment: small random affine (±5°, ±4% shift, ±5% scale) and brightness/contrast
            (±5% / ±10%) jitter — never a horizontal flip: the heart is on the left.
        seed: with ``augment``, the transform of a batch is drawn from a torch generator
            seeded by ``seed`` and the batch's indices, so it does not depend on worker
            processes or timing.
        uint8: return uint8 pixels, to be normalised on the device (above).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray,
        augment: bool = False,
        seed: int = 0,
        uint8: bool = False,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be uint8 [n, S, S], not {images.dtype} {images.shape}")
        if targets.shape != mask.shape or targets.ndim != 2 or len(targets) != len(images):
            raise ValueError(
                f"targets {targets.shape} and mask {mask.shape} must be [n, c] with "
                f"n = {len(images)} images"
            )
        self.images = images
        self.targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        self.mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
        self.augment = augment
        self.seed = seed
        self.uint8 = uint8

    def with_uint8(self, uint8: bool) -> ChexpertImages:
        """The same images, labels and augmentation, returning uint8 pixels or not."""
        twin = copy.copy(self)
        twin.uint8 = uint8
        return twin

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(index, int | np.integer):
            image, target, mask = self._batch(np.arange(len(self))[[index]])
            return image[0], target[0], mask[0]
        if isinstance(index, slice):
            return self._batch(np.arange(len(self))[index])
        return self._batch(np.asarray(index, dtype=np.int64))

    def _batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(self.images[indices]).unsqueeze(1)
        if self.augment:
            unit = augment_batch(pixels.float().div_(255.0), self._generator(indices))
            if self.uint8:  # back to 8 bits: normalised on the device
                images = unit.mul_(255.0).round_().to(torch.uint8)
            else:
                images = unit.sub_(MEAN).div_(STD)
        elif self.uint8:
            images = pixels
        else:
            images = normalise_pixels(pixels)
        rows = torch.from_numpy(indices)
        return images, self.targets[rows], self.mask[rows]

    def _generator(self, indices: np.ndarray) -> torch.Generator:
        digest = hashlib.blake2b(indices.tobytes(), digest_size=8, key=_seed_bytes(self.seed))
        return torch.Generator().manual_seed(int.from_bytes(digest.digest()) >> 1)


def _seed_bytes(seed: int) -> bytes:
    return str(seed).encode()


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light, anatomy-preserving jitter of ``[B, 1, S, S]`` images in [0, 1].

    Rotation ±5°, scale ±5%, shift ±4% (black fill, like the collimator border), then
    contrast ±10% and brightness ±5%. No flips: left and right are anatomically distinct.
    """
    n = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(n).uniform_(low, high, generator=generator)

    angle = torch.deg2rad(uniform(-5.0, 5.0))
    inverse_scale = 1.0 / uniform(0.95, 1.05)
    shift_x, shift_y = uniform(-0.08, 0.08), uniform(-0.08, 0.08)  # ±4% of [-1, 1]
    cos, sin = torch.cos(angle) * inverse_scale, torch.sin(angle) * inverse_scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = uniform(0.9, 1.1).view(n, 1, 1, 1)
    brightness = uniform(-0.05, 0.05).view(n, 1, 1, 1)
    return ((moved - 0.5) * contrast + 0.5 + brightness).clamp_(0.0, 1.0)


class SeededBatchSampler(Sampler[np.ndarray]):
    """Batches of indices; the order of epoch ``e`` is fixed by (seed, e).

    Each pass draws its permutation from ``self.generator`` when its first batch is taken
    (DataLoader may create iterators it never uses), then re-seeds the generator for the
    next epoch. ``set_epoch(e)`` makes the next pass use epoch ``e``'s order, so a resumed
    run replays the same batches; re-seeding ``generator`` directly before a pass (as
    ``train.seed_loader`` does) also works.

    A shuffled (training) pass never ends with a batch of one image when ``n > 1``: that
    image joins the previous batch (``merge_single``, on by default when shuffling).
    BatchNorm cannot train on one image whose feature map is 1×1 (a 32 px input to a
    ResNet), which made every training set of ``k × batch_size + 1`` images crash.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        merge_single: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.merge_single = shuffle if merge_single is None else merge_single
        self.epoch = 0
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use the order of ``epoch``."""
        self.epoch = epoch
        entropy = [self.seed % 2**64, epoch % 2**64]
        state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
        self.generator.manual_seed(int(state >> np.uint64(1)))

    def __len__(self) -> int:
        if self.drop_last or self._merges():
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def _merges(self) -> bool:
        """Whether the last batch would hold one image and joins the previous one."""
        return self.merge_single and self.n > self.batch_size and self.n % self.batch_size == 1

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).numpy()
        else:
            order = np.arange(self.n)
        self.set_epoch(self.epoch + 1)
        count = len(self)
        for k, start in enumerate(range(0, count * self.batch_size, self.batch_size)):
            end = self.n if k == count - 1 and self._merges() else start + self.batch_size
            yield order[start:end]


def _as_is(batch: Any) -> Any:
    """Collate for datasets that already return whole batches."""
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    merge_single: bool | None = None,
) -> DataLoader:
    """A DataLoader whose batch order is fixed by ``seed`` (and the epoch).

    A shuffled loader merges a final batch of one image into the previous batch
    (``SeededBatchSampler``); ``merge_single=False`` keeps it.

    For ``ChexpertImages`` each batch is fetched with one ``dataset[indices]`` call;
    other map-style datasets are fetched per item and collated as usual. The sampler is
    ``loader.sampler`` or ``loader.batch_sampler``; ``set_loader_epoch`` reaches it.
    ``pin_memory`` is for CUDA only: ``input_path(device).pin_memory`` says when.
    """
    sampler = SeededBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        shuffle,
        seed,
        drop_last,
        merge_single,
    )
    common: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": num_workers > 0,
        # Seeds worker processes (torch, random) reproducibly for datasets that use them.
        "generator": torch.Generator().manual_seed(seed % 2**63),
    }
    if isinstance(dataset, ChexpertImages):
        return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_as_is, **common)
    return DataLoader(dataset, batch_sampler=sampler, **common)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Make the next pass over a ``make_loader`` loader use the order of ``epoch``."""
    sampler = loader.batch_sampler
    if not isinstance(sampler, SeededBatchSampler):
        sampler = loader.sampler
    if not isinstance(sampler, SeededBatchSampler):
        raise TypeError("set_loader_epoch needs a loader built by make_loader")
    sampler.set_epoch(epoch)


def data_fingerprint(
    frame: pd.DataFrame,
    image_size: int,
    policy: Mapping[str, LabelPolicy],
    *,
    root: Path | None = None,
) -> str:
    """Digest of the rows used (paths, image bytes and labels, in order), image size,
    label policy and ``PREPROCESS_VERSION``.

    16 hex characters; two runs with the same fingerprint saw the same data. With
    ``root`` the digest covers each image's bytes (``content_keys``: an edited or
    replaced image changes it); without, the paths only — pass ``root`` wherever the
    fingerprint identifies a training.

    Raises:
        DataError: (with ``root``) an image is missing or unreadable.
    """
    digest = hashlib.sha256()
    settings = {
        "image_size": image_size,
        "policy": dict(sorted(policy.items())),
        "preprocess": PREPROCESS_VERSION,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update("\n".join(frame["path"].tolist()).encode())
    if root is not None:
        digest.update("\n".join(content_keys(root, frame["path"].tolist())).encode())
    labels = frame[list(OBSERVATIONS)].to_numpy(dtype=np.float32)
    # NaN payloads can differ; a sentinel makes blanks hash the same everywhere.
    digest.update(np.nan_to_num(labels, nan=-9.0).tobytes())
    return digest.hexdigest()[:16]
