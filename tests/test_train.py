"""fit: learning, determinism, resume equivalence, checkpoints, callbacks."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from chexflow import checkpoints
from chexflow.checkpoints import sha256_file
from chexflow.config import ModelConfig, TrainConfig
from chexflow.data.dataset import make_loader
from chexflow.data.labels import PATHOLOGIES
from chexflow.errors import ChexflowError, ConfigError, DataError
from chexflow.models import create_model
from chexflow.train import (
    Callback,
    compute_pos_weight,
    fit,
    masked_bce,
    seed_loader,
    select_device,
    training_labels,
    warmup_cosine,
)

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def tiny_dataset(n: int, seed: int) -> TensorDataset:
    """Class j draws a bright square in cell j of a 2×3 grid; 10% of labels masked."""
    g = torch.Generator().manual_seed(seed)
    classes = len(PATHOLOGIES)
    targets = (torch.rand(n, classes, generator=g) < 0.4).float()
    mask = (torch.rand(n, classes, generator=g) > 0.1).float()
    images = 0.2 * torch.randn(n, 1, SIZE, SIZE, generator=g)
    cell = SIZE // 4
    for j in range(classes):
        y, x = (j // 3) * (SIZE // 2) + cell // 2, (j % 3) * (SIZE // 3) + 2
        images[targets[:, j] > 0, :, y : y + cell, x : x + cell] += 1.0
    return TensorDataset(images, targets, mask)


def loaders(batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(tiny_dataset(64, 0), batch_size=batch_size, shuffle=True)
    val = DataLoader(tiny_dataset(48, 1), batch_size=32)
    return train, val


def tiny_model(drop_rate: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(name="test_resnet", drop_rate=drop_rate))


def train_cfg(**kwargs: object) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "device": "cpu", "bootstrap": 1}
    return TrainConfig(**{**base, **kwargs})


def run(directory: Path, **kwargs: object) -> tuple[torch.nn.Module, object]:
    model = tiny_model(drop_rate=0.2)
    train, val = loaders()
    cfg = kwargs.pop("cfg", train_cfg())
    result = fit(model, train, val, cfg, PATHOLOGIES, directory, seed=7, progress=False, **kwargs)
    return model, result


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history
    ]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in {"cpu", "cuda"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            select_device("cuda")


def test_warmup_then_cosine() -> None:
    factor = warmup_cosine(total_steps=100, warmup_fraction=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.02)
    assert factor(99) < 0.01


def test_masked_entries_do_not_count() -> None:
    logits = torch.randn(4, 5)
    target = (torch.rand(4, 5) > 0.5).float()
    mask = torch.ones(4, 5)
    mask[:, 2] = 0
    flipped = target.clone()
    flipped[:, 2] = 1 - flipped[:, 2]
    assert torch.equal(masked_bce(logits, target, mask), masked_bce(logits, flipped, mask))
    assert masked_bce(logits, target, torch.zeros(4, 5)) == 0


def test_pos_weight_is_negatives_over_positives() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    assert torch.allclose(compute_pos_weight(targets, mask), torch.tensor([3.0, 2.0]))
    assert compute_pos_weight(torch.zeros(3, 1), torch.ones(3, 1)).item() == 3.0


def test_fit_learns_a_learnable_signal(tmp_path: Path) -> None:
    model = tiny_model()
    train, val = loaders()
    result = fit(
        model,
        train,
        val,
        train_cfg(epochs=4, lr=1e-2, pos_weight=True),
        PATHOLOGIES,
        tmp_path,
        seed=0,
        progress=False,
    )
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert result.best_score > 0.75
    assert result.epochs_completed == 4
    assert {f"val_auroc/{k}" for k in ("atelectasis", "pleural_effusion")} <= result.history[
        0
    ].keys()


def test_same_config_gives_bit_identical_weights(tmp_path: Path) -> None:
    first, _ = run(tmp_path / "a")
    second, _ = run(tmp_path / "b")
    assert_same_weights(first, second)


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, full = run(tmp_path / "straight")
    _, partial = run(tmp_path / "resumed", stop_after_epoch=1)
    assert partial.epochs_completed == 1
    resumed, result = run(tmp_path / "resumed")
    assert result.resumed_from_epoch == 1
    assert_same_weights(straight, resumed)
    assert untimed(result.history) == untimed(full.history)


class Recorder(Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []
        self.epochs: list[dict[str, float]] = []

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        assert math.isfinite(loss) and lr > 0
        self.steps.append((step, epoch))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)


def test_callbacks_and_finished_run_returns_at_once(tmp_path: Path) -> None:
    recorder = Recorder()
    _, result = run(tmp_path, callbacks=[recorder])
    assert recorder.steps == [(s, 1 + (s - 1) // 4) for s in range(1, 9)]
    assert len(recorder.epochs) == 2
    assert {"train_loss", "val_auroc_mean", "lr", "images_per_s"} <= recorder.epochs[0].keys()

    again = Recorder()
    model, second = run(tmp_path, callbacks=[again])
    assert again.steps == [] and second.resumed_from_epoch == 2
    assert second.history == result.history
    best = torch.load(second.best_checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(best)


def test_checkpoints_load_weights_only_with_metadata(tmp_path: Path) -> None:
    _, result = run(tmp_path)
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["finished"] is True
    assert {"model", "optimizer", "scheduler", "rng", "history"} <= last.keys()
    for name in ("best", "last"):
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        assert meta["sha256"] == sha256_file(tmp_path / f"{name}.pt")
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == result.best_epoch
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    run(tmp_path, stop_after_epoch=1)
    with pytest.raises(ConfigError, match="another run"):
        run(tmp_path, cfg=train_cfg(lr=1e-4))


def test_quiet_log_line_per_epoch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="chexflow.train"):
        run(tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2")


def _order(loader: DataLoader) -> list[float]:
    return [float(t) for images, *_ in loader for t in images[:, 0, 0, 0]]


def test_shuffle_order_is_a_function_of_seed_and_epoch() -> None:
    train, _ = loaders()
    seed_loader(train, 7, 3)
    third = _order(train)
    seed_loader(train, 7, 4)
    assert _order(train) != third
    seed_loader(train, 7, 3)
    assert _order(train) == third


class EpochBatches(torch.utils.data.Sampler[list[int]]):
    """A batch sampler with `set_epoch`, like the data layer's seeded sampler."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return 2

    def __iter__(self) -> Iterator[list[int]]:
        return iter([[0, 1], [2, 3]])


def test_samplers_with_set_epoch_are_told_the_epoch() -> None:
    sampler = EpochBatches()
    seed_loader(DataLoader(tiny_dataset(4, 0), batch_sampler=sampler), 7, 5)
    assert sampler.epochs == [5]


def test_early_stopping_when_validation_never_scores(tmp_path: Path) -> None:
    train, _ = loaders()
    unlabelled = TensorDataset(torch.randn(8, 1, SIZE, SIZE), torch.zeros(8, 5), torch.ones(8, 5))
    result = fit(
        tiny_model(),
        train,
        DataLoader(unlabelled, batch_size=8),
        train_cfg(epochs=4, early_stopping_patience=1),
        PATHOLOGIES,
        tmp_path,
        seed=0,
        progress=False,
    )
    assert result.epochs_completed == 2 and result.best_epoch == 1
    assert math.isnan(result.best_score) and result.best_checkpoint.is_file()
    assert json.loads((tmp_path / "best.json").read_text())["score"] is None


class LabelledImages(torch.utils.data.Dataset):
    """Exposes `targets` and `mask` like the data layer's dataset."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data
        self.targets, self.mask = data.tensors[1], data.tensors[2]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        raise AssertionError("labels must be read without loading images")


def test_training_labels_come_from_the_dataset_without_images() -> None:
    data = tiny_dataset(8, 0)
    targets, mask = training_labels(DataLoader(LabelledImages(data), batch_size=4))
    assert torch.equal(targets, data.tensors[1]) and torch.equal(mask, data.tensors[2])


# --- issue 16: degenerate batch sizes -----------------------------------------------------------


def test_a_training_set_of_k_batches_plus_one_image_trains(tmp_path: Path) -> None:
    # Before: 33 images in batches of 16 ended each epoch on a batch of one image, and
    # BatchNorm raised at the 1x1 feature map of a 32 px input.
    data = tiny_dataset(33, 0)
    train = make_loader(data, 16, shuffle=True, seed=0)
    assert [len(x) for x, _, _ in train] == [16, 17]
    val = make_loader(tiny_dataset(8, 1), 16, shuffle=False, seed=0)
    result = fit(tiny_model(), train, val, train_cfg(epochs=1), PATHOLOGIES, tmp_path, seed=0)
    assert result.epochs_completed == 1 and math.isfinite(result.history[0]["train_loss"])
    kept = make_loader(data, 16, shuffle=True, seed=0, merge_single=False)
    with pytest.raises(DataError, match=r"^training: a batch of 1 image\(s\) reaches a 1x1"):
        fit(tiny_model(), kept, val, train_cfg(epochs=1), PATHOLOGIES, tmp_path / "b", seed=0)


def test_a_single_training_image_is_a_one_line_data_error(tmp_path: Path) -> None:
    train = make_loader(tiny_dataset(1, 0), 16, shuffle=True, seed=0)
    val = make_loader(tiny_dataset(8, 1), 16, shuffle=False, seed=0)
    with pytest.raises(DataError, match="use more training images") as raised:
        fit(tiny_model(), train, val, train_cfg(epochs=1), PATHOLOGIES, tmp_path, seed=0)
    assert "\n" not in str(raised.value)


# --- issue 16: checkpoint digests are checked wherever a checkpoint is read ---------------------


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["best.pt", "last.pt"])
def test_a_damaged_checkpoint_of_a_finished_training_is_retrained(
    tmp_path: Path, victim: str
) -> None:
    # Before: the finished run returned at once with its damaged best.pt, and evaluation
    # crashed on it with a raw RuntimeError on every rerun.
    straight, _ = run(tmp_path / "straight")
    run(tmp_path / "damaged")
    _damage(tmp_path / "damaged" / victim)
    recorder = Recorder()
    model, result = run(tmp_path / "damaged", callbacks=[recorder])
    assert result.resumed_from_epoch is None and len(recorder.epochs) == 2  # trained again
    for name in ("best.pt", "last.pt"):
        assert checkpoints.digest_problem(tmp_path / "damaged" / name) is None
    assert_same_weights(straight, model)


def test_load_best_checks_the_recorded_digest(tmp_path: Path) -> None:
    _, result = run(tmp_path)
    state = checkpoints.load_best(result.best_checkpoint)
    fresh = tiny_model(drop_rate=0.2)
    fresh.load_state_dict(state)
    _damage(result.best_checkpoint)
    with pytest.raises(ChexflowError) as raised:
        checkpoints.load_best(result.best_checkpoint)
    assert str(raised.value) == (
        f"checkpoint {result.best_checkpoint} does not match the sha256 recorded in best.json "
        "(damaged?); retrain it (rerun with --force)"
    )
    (tmp_path / "best.json").unlink()
    with pytest.raises(ChexflowError, match=r"has no best\.json recording its sha256"):
        checkpoints.load_best(result.best_checkpoint)
