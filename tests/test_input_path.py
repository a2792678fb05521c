"""The input path: uint8 pixels normalised on the device give the loader's float batches.

On CUDA the loader yields uint8 from pinned memory and ``evaluation.to_device`` normalises
after the copy (``dataset.input_path``); on CPU the loader normalises, as before. The
device side runs here on the CPU: its tensors, losses and weights must be bit-identical
to the float path's, whose values are those of the loader before the change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chexflow.config import ModelConfig, TrainConfig, load_config
from chexflow.data import dataset as dataset_module
from chexflow.data.dataset import (
    MEAN,
    STD,
    ChexpertImages,
    InputPath,
    input_path,
    make_loader,
    normalise_pixels,
)
from chexflow.data.labels import PATHOLOGIES
from chexflow.embed import predict_and_embed
from chexflow.evaluation import predict, to_device
from chexflow.models import create_model
from chexflow.train import TrainStep, train_epoch

SIZE = 32
N = 16  # N * SIZE * SIZE = 64 * 256: every grey level 64 times
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def every_grey_level(n: int = N, size: int = SIZE) -> np.ndarray:
    """uint8 ``[n, size, size]`` holding each of the 256 grey levels equally often."""
    levels = np.tile(np.arange(256, dtype=np.uint8), n * size * size // 256)
    return np.random.default_rng(0).permutation(levels).reshape(n, size, size)


def dataset(*, uint8: bool = False, augment: bool = False) -> ChexpertImages:
    rng = np.random.default_rng(1)
    targets = (rng.random((N, len(PATHOLOGIES))) < 0.4).astype(np.float32)
    mask = (rng.random((N, len(PATHOLOGIES))) > 0.1).astype(np.float32)
    return ChexpertImages(every_grey_level(), targets, mask, augment=augment, seed=3, uint8=uint8)


def loader_normalisation_before(pixels: np.ndarray) -> torch.Tensor:
    """What ``ChexpertImages`` returned before the uint8 path (the asserted values)."""
    images = torch.from_numpy(pixels).unsqueeze(1).float()
    return images.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)


def test_the_decision_is_uint8_pinned_on_cuda_only() -> None:
    assert input_path(torch.device("cpu")) == InputPath(uint8=False, pin_memory=False)
    cuda = input_path(torch.device("cuda", 0))  # a device object needs no GPU
    assert cuda == InputPath(uint8=True, pin_memory=True)
    assert cuda.describe() == "uint8 pinned, normalised on the device"
    assert input_path(CPU).describe() == "float32 normalised in the loader, unpinned"


def test_the_float_path_keeps_the_values_of_before() -> None:
    data = dataset()
    images, _, _ = data[np.arange(N)]
    assert images.dtype == torch.float32
    assert torch.equal(images, loader_normalisation_before(data.images))
    assert images.min() == -MEAN / STD and images.max() == pytest.approx((1 - MEAN) / STD)


def test_uint8_batches_normalised_on_the_device_equal_the_float_batches() -> None:
    raw, plain = dataset(uint8=True), dataset()
    pixels, targets, mask = raw[[5, 0, 9, 9]]
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, 1, SIZE, SIZE)
    assert torch.equal(pixels[:, 0], torch.from_numpy(raw.images[[5, 0, 9, 9]]))
    images, float_targets, float_mask = plain[[5, 0, 9, 9]]
    assert torch.equal(to_device(pixels, CPU), images)
    assert torch.equal(targets, float_targets) and torch.equal(mask, float_mask)
    # Every grey level, through the function both paths share.
    levels = torch.arange(256, dtype=torch.uint8)
    expected = loader_normalisation_before(levels.numpy()[None])[0]
    assert torch.equal(normalise_pixels(levels[None]), expected)
    # The GPU's formulation (cast fused into the multiply) is the same arithmetic.
    assert torch.equal(dataset_module._cast_scale_shift(levels[None]), expected)
    with pytest.raises(TypeError, match="uint8"):
        normalise_pixels(images)


def test_with_uint8_shares_the_images_and_labels() -> None:
    plain = dataset()
    raw = plain.with_uint8(True)
    assert raw.uint8 and not plain.uint8
    assert raw.images is plain.images and raw.targets is plain.targets
    assert torch.equal(to_device(raw[[1, 2]][0], CPU), plain[[1, 2]][0])


def training_run(data: ChexpertImages) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Two CPU training steps of test_resnet over a shuffled loader; losses and weights."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="test_resnet"), len(PATHOLOGIES))
    cfg = TrainConfig(batch_size=8, device="cpu", lr=3e-3)
    step = TrainStep(model, cfg, total_steps=4, device=CPU)
    losses: list[float] = []

    class Record:
        def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
            losses.append(loss)

    train_epoch(step, make_loader(data, 8, shuffle=True, seed=0), callbacks=[Record()])
    return losses, model.state_dict()


def test_a_cpu_training_step_is_bit_identical_either_way() -> None:
    float_losses, float_weights = training_run(dataset())
    uint8_losses, uint8_weights = training_run(dataset(uint8=True))
    assert len(float_losses) == 2 and float_losses == uint8_losses
    for key, value in float_weights.items():
        assert torch.equal(value, uint8_weights[key]), key


def test_an_evaluation_batch_is_bit_identical_either_way() -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="test_resnet"), len(PATHOLOGIES))
    outputs = []
    for uint8 in (False, True):
        loader = make_loader(dataset(uint8=uint8), 6, shuffle=False, seed=0)
        outputs.append(
            (*predict_and_embed(model, loader, CPU, False), *predict(model, loader, CPU))
        )
    for before, after in zip(*outputs, strict=True):
        assert np.array_equal(before, after)


def test_augmented_uint8_batches_are_the_float_ones_rounded_to_8_bits() -> None:
    jittered = dataset(augment=True)[[0, 3, 7]][0]
    pixels = dataset(augment=True, uint8=True)[[0, 3, 7]][0]
    assert pixels.dtype == torch.uint8
    difference = (to_device(pixels, CPU) - jittered).abs()
    assert difference.max() <= 0.5 / 255 / STD + 1e-5  # half a grey level
    assert difference.max() > 0  # the jitter itself is not lost: same draws, then rounding
    unaugmented = dataset(uint8=True)[[0, 3, 7]][0]
    assert not torch.equal(pixels, unaugmented)


def test_the_pipeline_builds_either_path(tiny_dataset: Path, tmp_path: Path) -> None:
    from chexflow import pipeline

    cfg = load_config(None, ["data.image_size=32"])
    prepared = pipeline.prepare_data(tiny_dataset, cfg.data, 0.5, 0, tmp_path)
    plain, _ = pipeline.build_dataset(prepared, "val", PATHOLOGIES, cfg.data, tmp_path)
    raw, _ = pipeline.build_dataset(prepared, "val", PATHOLOGIES, cfg.data, tmp_path, uint8=True)
    rows = np.arange(min(5, len(plain)))
    assert raw[rows][0].dtype == torch.uint8
    assert torch.equal(to_device(raw[rows][0], CPU), plain[rows][0])
