"""Progress of long work: one line per epoch in the library's log and in a CLI run's output."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import set_args
from torch.utils.data import DataLoader, TensorDataset

from chexflow.config import TrainConfig
from chexflow.progress import EpochProgress, epoch_line, format_duration
from chexflow.train import fit

CHEXFLOW = str(Path(sys.executable).parent / "chexflow")
EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+)  train loss \d+\.\d{4}  val AUROC (\d\.\d{4}|n/a)  "
    r"\d+ img/s  ETA (\d+:)?\d+:\d\d"
)


def test_durations_read_as_clock_time() -> None:
    assert format_duration(0) == "0:00"
    assert format_duration(75.4) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(math.nan) == "?"


def test_epoch_line_has_every_figure() -> None:
    line = epoch_line(
        2, 5, {"train_loss": 0.41234, "val_auroc_mean": 0.73111, "images_per_s": 512.4}, 75
    )
    assert line == "epoch 2/5  train loss 0.4123  val AUROC 0.7311  512 img/s  ETA 1:15"
    undefined = epoch_line(1, 1, {"train_loss": 1.0, "val_auroc_mean": math.nan}, 0)
    assert "val AUROC n/a" in undefined and EPOCH_LINE.search(undefined) is None  # nan img/s


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 16, 16, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).float()[:, None].repeat(1, 2)
    data = TensorDataset(x, y, torch.ones_like(y))
    return DataLoader(data, batch_size=16), DataLoader(data, batch_size=32)


def test_fit_reports_each_epoch_with_an_eta(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import timm

    model = timm.create_model("test_resnet", num_classes=2, pretrained=False)
    cfg = TrainConfig(epochs=3, batch_size=16, device="cpu", bootstrap=1)
    with caplog.at_level(logging.INFO, logger="chexflow.progress"):
        fit(model, *_loaders(), cfg, ["a", "b"], tmp_path, seed=0, progress=False,
            callbacks=[EpochProgress(cfg.epochs)])  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.name == "chexflow.progress"]
    matches = [EPOCH_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert [(m.group(1), m.group(2)) for m in matches] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert lines[-1].endswith("ETA 0:00")


@pytest.mark.slow
def test_cli_finetune_prints_one_line_per_epoch(tiny_dataset: Path, tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    result = subprocess.run(
        [CHEXFLOW, "finetune", "--data", str(tiny_dataset), "--fraction", "0.5",
         "--workdir", str(tmp_path / "work"), *set_args("train.epochs=3")],
        capture_output=True, text=True, timeout=600, env=clean, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    epochs = [(m.group(1), m.group(2)) for m in EPOCH_LINE.finditer(output)]
    assert epochs == [("1", "3"), ("2", "3"), ("3", "3")], output[-3000:]
