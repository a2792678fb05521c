"""One fine-tuning run as plain steps on local paths: prepare, train, evaluate + embed, analyse.

Each step reads what the previous one wrote and returns a small JSON-able record (paths,
digests, numbers), so Prefect tasks can persist and cache them and a step can be rerun
on its own. No Prefect and no MLflow here: ``tasks/`` and ``tracking.py`` add those.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from chexflow.config import DataConfig, ModelConfig, TrainConfig, fingerprint
from chexflow.data.chexpert import (
    find_dataset_root,
    label_targets,
    read_split,
)
from chexflow.data.dataset import (
    ChexpertImages,
    data_fingerprint,
    input_path,
    load_images,
    make_loader,
)
from chexflow.data.fractions import fraction_frame, sample_patients
from chexflow.data.labels import EVAL_CLASSES, OBSERVATIONS, column_of
from chexflow.data.splits import eval_digest, make_splits
from chexflow.errors import ChexflowError, ConfigError, DataError
from chexflow.files import missing_file, staged_directory

FRAMES = ("train", "val", "eval")
# Checkpoints, MLflow artifacts and databases of a run, besides its image cache.
MIN_FREE_BYTES = 256 * 2**20


class PreparedData(BaseModel):
    """The frames one run uses, written as CSVs under ``directory``."""

    dataset_root: str
    directory: str
    fraction: float
    seed: int
    data_fingerprint: str
    eval_digest: str
    n_train_images: int
    n_train_patients: int
    n_val_images: int
    n_eval_images: int

    def frame(self, name: str) -> pd.DataFrame:
        """``train``, ``val`` or ``eval`` as the canonical frame."""
        return pd.read_csv(
            Path(self.directory) / f"{name}.csv",
            dtype={"path": str, "patient": str, "study": str, "ap_pa": str},
            keep_default_na=False,
            na_values={col: [""] for col in OBSERVATIONS},
        )


class TrainedModel(BaseModel):
    """Where a finished training left its checkpoints, and how it went."""

    fingerprint: str
    checkpoint_dir: str
    best_checkpoint: str
    last_checkpoint: str
    best_epoch: int
    best_score: float | None
    epochs_completed: int
    resumed_from_epoch: int | None
    history: list[dict[str, Any]]

    def relative_to(self, workdir: Path) -> TrainedModel:
        """The record with checkpoint paths relative to ``workdir`` (as the training cache
        stores it: a copied workdir then reads its own checkpoints, not the original's)."""
        root = Path(workdir).resolve()

        def rel(path: str) -> str:
            resolved = Path(path).resolve()
            return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path

        return self.model_copy(
            update={
                name: rel(getattr(self, name))
                for name in ("checkpoint_dir", "best_checkpoint", "last_checkpoint")
            }
        )

    def located(self, workdir: Path) -> TrainedModel:
        """The record with its relative checkpoint paths resolved against ``workdir``."""
        return self.model_copy(
            update={
                name: str(Path(workdir) / getattr(self, name))
                for name in ("checkpoint_dir", "best_checkpoint", "last_checkpoint")
            }
        )


class Evaluated(BaseModel):
    """Evaluation AUROC table and the embeddings of the evaluation set."""

    output_dir: str
    auroc: dict[str, Any]
    embeddings_dir: str


class Analysed(BaseModel):
    """Cluster metrics, maps and plots of one run's embeddings."""

    output_dir: str
    metrics_file: str
    flat_metrics: dict[str, float]


def _write_atomically(directory: Path, files: dict[str, str]) -> None:
    """Write text files into ``directory`` in one rename; a directory that exists (written
    by an earlier or a concurrent run of the same data) is kept."""
    if directory.exists():
        return
    with staged_directory(directory, replace=False) as staged:
        for name, text in files.items():
            (staged / name).write_text(text)


def prepare_data(
    data_dir: Path, cfg: DataConfig, fraction: float, seed: int, workdir: Path
) -> PreparedData:
    """Read the CSVs, carve the fixed evaluation split and draw this fraction's patients.

    ``fraction=0`` draws no training patients: the initial backbone's "0%" reference.
    """
    root = find_dataset_root(Path(data_dir))
    train = read_split(root, "train")
    valid = read_split(root, "valid") if (root / "valid.csv").exists() else None
    if valid is None and cfg.eval_source != "holdout":
        raise DataError(f"{root / 'valid.csv'} is missing; use data.eval_source=holdout")
    splits = make_splits(train, valid, cfg)
    check_eval_classes(splits.eval)
    patients = sample_patients(splits.pool, fraction, seed, cfg.min_class_count) if fraction else []
    frames = {
        "train": fraction_frame(splits.pool, patients) if patients else splits.pool.iloc[:0],
        "val": splits.val,
        "eval": splits.eval,
    }
    data_fp = fingerprint(
        {
            name: data_fingerprint(frame, cfg.image_size, cfg.label_policy, root=root)
            for name, frame in frames.items()
        }
    )
    directory = Path(workdir) / "prepared" / data_fp
    record = PreparedData(
        dataset_root=str(root),
        directory=str(directory),
        fraction=fraction,
        seed=seed,
        data_fingerprint=data_fp,
        # image bytes, labels, label policy and preprocessing: content, not paths
        eval_digest=eval_digest(splits.eval, root=root, policy=cfg.label_policy),
        n_train_images=len(frames["train"]),
        n_train_patients=len(patients),
        n_val_images=len(splits.val),
        n_eval_images=len(splits.eval),
    )
    files = {f"{name}.csv": frame.to_csv(index=False) for name, frame in frames.items()}
    files["patients.txt"] = "\n".join(patients) + "\n"
    files["prepared.json"] = record.model_dump_json(indent=2)
    _write_atomically(directory, files)
    return record


def check_eval_classes(frame: pd.DataFrame) -> None:
    """Every evaluation class needs a positive image, or its AUROC and cluster are undefined."""
    empty = [name for name in EVAL_CLASSES if not (frame[column_of(name)] == 1).any()]
    if empty:
        raise DataError(
            f"the evaluation set ({len(frame)} images) has no positive {', '.join(empty)} image: "
            "per-class AUROC and clusters would be undefined; use more patients, a larger "
            "data.holdout_fraction, or data.eval_source=both"
        )


def check_workdir(workdir: Path, cache_dir: Path | None = None, image_bytes: int = 0) -> None:
    """Refuse, before anything starts, a workdir that cannot be written or is nearly full.

    ``image_bytes`` (the decoded-image cache, in ``cache_dir`` or the workdir) is added to
    ``MIN_FREE_BYTES`` (checkpoints, artifacts, databases): a floor, not a guarantee.

    Raises:
        ChexflowError: naming the directory and what is wrong.
    """
    need: dict[int, tuple[Path, int]] = {}
    for directory, amount in ((workdir, MIN_FREE_BYTES), (cache_dir or workdir, image_bytes)):
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=directory).close()
        except OSError as exc:
            raise ChexflowError(
                f"workdir {directory} is not writable ({exc.strerror or type(exc).__name__}): "
                "choose another --workdir (or data.cache_dir)"
            ) from None
        device = directory.stat().st_dev
        where, before = need.get(device, (directory, 0))
        need[device] = (where, before + amount)
    for directory, amount in need.values():
        free = shutil.disk_usage(directory).free
        if free < amount:
            raise ChexflowError(
                f"workdir {directory}: {free / 2**20:.0f} MiB free, a run needs about "
                f"{amount / 2**20:.0f} MiB (image cache, checkpoints, artifacts); "
                "free some space or choose another --workdir"
            )


def image_bytes(n_images: int, image_size: int) -> int:
    """Size of the decoded-image cache for ``n_images`` (uint8, one channel)."""
    return n_images * image_size * image_size


_MODEL_INPUTS_PASSED: set[tuple[str, int]] = set()


def check_model_input(model_cfg: ModelConfig, image_size: int) -> None:
    """Refuse, before any run starts, a model timm does not know or an input it cannot take.

    Builds the architecture with random weights (no download, no checkpoint read) and
    passes one blank image of ``image_size`` through it. A model and size that passed are
    remembered for the process, so the entry points (CLI, flow, subflows) build it once.

    Raises:
        ConfigError: unknown ``model.name``, missing ``model.init_checkpoint``, or an image
            size the model rejects (too small for its downsampling, or a fixed input size).
    """
    import torch

    from chexflow.models import create_model

    checkpoint = model_cfg.init_checkpoint
    if checkpoint is not None and (problem := missing_file(Path(checkpoint))) is not None:
        raise ConfigError(f"model.init_checkpoint: {checkpoint} {problem}")
    key = (model_cfg.model_dump_json(), image_size)
    if key in _MODEL_INPUTS_PASSED:
        return
    bare = model_cfg.model_copy(update={"pretrained": False, "init_checkpoint": None})
    model = create_model(bare).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size))
    except (RuntimeError, AssertionError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"data.image_size={image_size} does not fit model.name={model_cfg.name} ({reason}); "
            "use a larger image size or another model"
        ) from None
    _MODEL_INPUTS_PASSED.add(key)


def image_cache_dir(cfg: DataConfig, workdir: Path) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(workdir) / "cache" / "images"


def build_dataset(
    prepared: PreparedData,
    name: str,
    classes: Sequence[str],
    cfg: DataConfig,
    workdir: Path,
    *,
    augment: bool = False,
    uint8: bool = False,
) -> tuple[ChexpertImages, pd.DataFrame]:
    """A torch dataset over one of the prepared frames, images from the shared cache.

    ``augment`` (``train.augment``, the training frame only) jitters each batch, seeded
    by the run's seed and the batch's indices (`ChexpertImages`). ``uint8`` makes it
    yield uint8 pixels, normalised on the device (``dataset.input_path``).
    """
    frame = prepared.frame(name)
    images = load_images(
        Path(prepared.dataset_root),
        frame["path"].tolist(),
        cfg.image_size,
        image_cache_dir(cfg, workdir),
    )
    targets, mask = label_targets(frame, classes, cfg.label_policy)
    dataset = ChexpertImages(
        images, targets, mask, augment=augment, seed=prepared.seed, uint8=uint8
    )
    return dataset, frame


def training_fingerprint(
    prepared: PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int
) -> str:
    """What determines the trained weights (not threads, loader workers or bootstrap count)."""
    relevant = train_cfg.model_dump(mode="json", exclude={"threads", "num_workers", "bootstrap"})
    return fingerprint(model_cfg, relevant, prepared.data_fingerprint, seed)


def train_model(
    prepared: PreparedData,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    workdir: Path,
    *,
    callbacks: Sequence[Any] = (),
    resume: bool = True,
    progress: bool = True,
) -> TrainedModel:
    """Fine-tune (or resume) into ``<workdir>/checkpoints/<training fingerprint>``."""
    from chexflow.models import create_model, head_classes
    from chexflow.runtime import loader_workers
    from chexflow.train import fit, seed_everything, select_device

    classes = head_classes(model_cfg)
    inputs = input_path(select_device(train_cfg.device))
    train_set, _ = build_dataset(
        prepared,
        "train",
        classes,
        data_cfg,
        workdir,
        augment=train_cfg.augment,
        uint8=inputs.uint8,
    )
    val_set, _ = build_dataset(prepared, "val", classes, data_cfg, workdir, uint8=inputs.uint8)
    seed = prepared.seed
    workers = loader_workers(train_cfg.num_workers, train_cfg.device)
    common = {"seed": seed, "num_workers": workers, "pin_memory": inputs.pin_memory}
    train_loader = make_loader(train_set, train_cfg.batch_size, shuffle=True, **common)
    val_loader = make_loader(val_set, train_cfg.batch_size * 2, shuffle=False, **common)
    train_fp = training_fingerprint(prepared, model_cfg, train_cfg, seed)
    checkpoint_dir = Path(workdir) / "checkpoints" / train_fp
    seed_everything(seed)  # the random initialisation too: same seed, same weights
    model = create_model(model_cfg, len(classes))
    result = fit(
        model,
        train_loader,
        val_loader,
        train_cfg,
        classes,
        checkpoint_dir,
        seed=seed,
        resume=resume,
        callbacks=callbacks,
        progress=progress,
    )
    return TrainedModel(
        fingerprint=train_fp,
        checkpoint_dir=str(checkpoint_dir),
        best_checkpoint=str(result.best_checkpoint),
        last_checkpoint=str(result.last_checkpoint),
        best_epoch=result.best_epoch,
        best_score=result.best_score,
        epochs_completed=result.epochs_completed,
        resumed_from_epoch=result.resumed_from_epoch,
        history=result.history,
    )


def evaluate_and_embed(
    prepared: PreparedData,
    trained: TrainedModel | None,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    workdir: Path,
    *,
    progress: bool = True,
) -> Evaluated:
    """AUROC with CIs on the evaluation set and its pre-logits embeddings.

    With ``trained=None`` the initial backbone is embedded: the "0%" reference.
    """
    from chexflow.checkpoints import load_best
    from chexflow.embed import predict_and_embed, save_embeddings
    from chexflow.evaluation import (
        auroc_table,
        certain_labels,
        certain_membership,
        evaluation_columns,
        label_values,
    )
    from chexflow.models import create_model, head_classes
    from chexflow.train import seed_everything, select_device

    classes = head_classes(model_cfg)
    device = select_device(train_cfg.device)
    inputs = input_path(device)
    eval_set, frame = build_dataset(
        prepared, "eval", classes, data_cfg, workdir, uint8=inputs.uint8
    )
    loader = make_loader(
        eval_set, train_cfg.batch_size * 2, shuffle=False, seed=0, pin_memory=inputs.pin_memory
    )
    seed_everything(prepared.seed)  # the reference's random head (or backbone) is reproducible
    model = create_model(model_cfg, len(classes))
    if trained is not None:
        # the sha256 recorded beside best.pt is checked: a damaged file is one line
        model.load_state_dict(load_best(Path(trained.best_checkpoint)))
        key = trained.fingerprint
    else:
        key = "initial-" + fingerprint(model_cfg, prepared.eval_digest)
    model.to(device)
    # One folder per evaluation: two flows of the same model (a sweep started twice, the
    # references of two sweeps) never read files that the other is rewriting.
    (Path(workdir) / "outputs" / key).mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(tempfile.mkdtemp(prefix=f"{stamp}-", dir=Path(workdir) / "outputs" / key))
    # One pass for both (bench/bench_scaling.py: half the time of predict + embed).
    probs, targets, mask, features = predict_and_embed(model, loader, device, progress=progress)
    # Evaluation uses certain labels only (1 / 0-or-blank; -1 left out), whatever the
    # training policy, and resamples patients (docs/METRICS.md).
    targets, mask, _ = certain_labels(label_values(frame, classes))
    auroc = auroc_table(
        probs,
        targets,
        mask,
        classes,
        train_cfg.bootstrap,
        seed=prepared.seed,
        patients=frame["patient"].tolist(),
    )
    values = label_values(frame, EVAL_CLASSES)
    positives, exclusive = certain_membership(values)
    table = pd.DataFrame(
        {
            "path": frame["path"],
            "patient": frame["patient"],
            "view": frame["view"],
            "positives": ["|".join(p) for p in positives],
            "exclusive": [e or "" for e in exclusive],
            **evaluation_columns(values, probs, classes),
        }
    )
    embeddings_dir = out_dir / "embeddings"
    meta = {
        "eval_digest": prepared.eval_digest,
        "model": model_cfg.name,
        "fraction": prepared.fraction if trained is not None else 0.0,
        "seed": prepared.seed,
        "training_fingerprint": key,
        "label_policy": dict(data_cfg.label_policy),
    }
    save_embeddings(embeddings_dir, features, table, meta)
    (out_dir / "evaluation.json").write_text(json.dumps(auroc, indent=2))
    return Evaluated(output_dir=str(out_dir), auroc=auroc, embeddings_dir=str(embeddings_dir))


def analyse_run(
    embeddings_dir: Path, analysis_cfg: Any, output_dir: Path, title: str, seed: int = 0
) -> Analysed:
    """Maps, cluster metrics and plots for one run's saved embeddings."""
    from chexflow.analysis.run_analysis import analyse_embeddings, flat_metrics, write_analysis
    from chexflow.embed import load_embeddings

    features, table, _meta = load_embeddings(Path(embeddings_dir))
    positives = [tuple(p.split("|")) if p else () for p in table["positives"].fillna("")]
    exclusive = [e or None for e in table["exclusive"].fillna("")]
    patients = table["patient"].astype(str).tolist()
    result = analyse_embeddings(
        features, positives, exclusive, analysis_cfg, seed=seed, patients=patients
    )
    write_analysis(result, Path(output_dir), title)
    return Analysed(
        output_dir=str(output_dir),
        metrics_file=str(Path(output_dir) / "metrics" / "cluster_metrics.json"),
        flat_metrics=flat_metrics(result.metrics),
    )
