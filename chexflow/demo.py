"""The embedded default: a synthetic CheXpert-format dataset and a sweep sized for a laptop."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from chexflow.config import ChexflowConfig, load_config


@dataclass(frozen=True)
class DemoSettings:
    """What the demo synthesises and sweeps."""

    patients: int
    image_size: int
    data_seed: int
    fractions: list[float]
    seeds: list[int]
    config: ChexflowConfig
    labels_from: Path | None = None  # a CheXpert CSV whose rows the demo's patients keep


# Calibrated on 2 cores: see README ("The demo") for the measured times and AUROCs.
FULL = {
    "patients": 3000,
    "overrides": [
        "data.image_size=64",
        "model.name=resnet10t",
        "train.epochs=12",
        "train.batch_size=32",
        "train.lr=0.002",
        "train.bootstrap=200",
        # SimCLR pretraining first (flows/pretrain.py), sized to about a minute of CPU
        # on 2 cores: docs/BENCHMARKS.md ("Pretraining in the demo").
        "model.init_from_pretraining=true",
        "pretrain.epochs=2",
        "pretrain.max_images=400",
        "pretrain.batch_size=64",
    ],
    "fractions": [0.01, 0.1],
}
QUICK = {
    "patients": 600,
    "overrides": [
        "data.image_size=32",
        "model.name=test_resnet",
        "train.epochs=2",
        "train.batch_size=32",
        "train.bootstrap=50",
        "analysis.bootstrap=50",
        "analysis.kmeans_seeds=2",
        "model.init_from_pretraining=true",  # one brief epoch: the smoke test covers the path
        "pretrain.epochs=1",
        "pretrain.max_images=128",
        "pretrain.batch_size=64",
    ],
    "fractions": [0.05, 0.25],
}


def demo_settings(quick: bool = False, labels_from: Path | None = None) -> DemoSettings:
    """The demo's dataset size, fractions and configuration.

    With ``labels_from`` (a CheXpert-format CSV) the dataset keeps the rows of a random
    sample of the CSV's patients (all of them if it holds fewer) and renders their images.
    """
    spec = QUICK if quick else FULL
    config = load_config(None, list(spec["overrides"]))
    return DemoSettings(
        patients=int(spec["patients"]),
        image_size=config.data.image_size,
        data_seed=0,
        fractions=list(spec["fractions"]),
        seeds=[0],
        config=config,
        labels_from=Path(labels_from) if labels_from is not None else None,
    )


def ensure_demo_data(workdir: Path, settings: DemoSettings) -> Path:
    """The synthetic dataset for these settings, written once and reused.

    Raises:
        DataError: ``settings.labels_from`` is not a CheXpert-format CSV (one line).
    """
    size, seed = settings.image_size, settings.data_seed
    if settings.labels_from is None:
        from chexflow.data.synthetic import write_synthetic

        root = Path(workdir) / "data" / f"synthetic-p{settings.patients}-px{size}-seed{seed}"
        if not (root / "train.csv").exists():
            write_synthetic(root, settings.patients, size, seed)
        return root
    from chexflow.data.relabel import count_patients, write_synthetic_from_labels

    csv_path = settings.labels_from
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()[:12]
    root = Path(workdir) / "data" / f"labels-{digest}-p{settings.patients}-px{size}-seed{seed}"
    if not (root / "train.csv").exists():
        patients = min(settings.patients, count_patients(csv_path)) or None  # None: validate
        staging = root.with_name(root.name + ".partial")
        if staging.exists():
            import shutil

            shutil.rmtree(staging)  # an interrupted earlier write
        write_synthetic_from_labels(csv_path, staging, patients, seed, size)
        staging.rename(root)
    return root
