"""Fine-tuning: masked BCE, AdamW with warm-up + cosine, per-epoch validation, resumable.

Reporting (MLflow, Prefect) plugs in through `Callback`s; this module imports neither.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Subset, TensorDataset
from tqdm.auto import tqdm

from chexflow import checkpoints
from chexflow.config import TrainConfig
from chexflow.data.labels import metric_key
from chexflow.errors import ConfigError, DataError
from chexflow.evaluation import auroc_table, autocast, predict, to_device
from chexflow.models import set_train_mode

log = logging.getLogger("chexflow.train")

POS_WEIGHT_RANGE = (0.01, 100.0)
# Settings that may change between an interrupted run and its resumption.
_RESUME_FREE_SETTINGS = frozenset({"device", "threads", "num_workers", "bootstrap"})

Batch = Sequence[torch.Tensor]


def select_device(pref: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """`auto` → CUDA when available, else CPU; `cuda` without a GPU is a ConfigError."""
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    if pref not in ("auto", "cuda"):
        raise ConfigError(f"train.device: {pref!r}; expected auto, cpu or cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Callback(Protocol):
    """Observes training; subclass it and override what you need (both default to no-ops)."""

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        """After every optimiser step; `step` counts from 1 over the whole run."""
        return None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """After validation and checkpointing of `epoch` (from 1)."""
        return None


@dataclass
class FitResult:
    """Outcome of `fit`. `history` has one dict per epoch (see `fit`)."""

    best_epoch: int
    best_score: float
    epochs_completed: int
    history: list[dict[str, float]]
    best_checkpoint: Path
    last_checkpoint: Path
    resumed_from_epoch: int | None = None


@dataclass
class _Progress:
    """What `last.pt` records besides the tensors."""

    epoch: int = 0
    best_score: float = math.nan
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False

    def add(self, record: dict[str, float], cfg: TrainConfig) -> bool:
        """Record an epoch; returns whether it is the new best (by `val_auroc_mean`)."""
        epoch, score = int(record["epoch"]), record["val_auroc_mean"]
        improved = self.best_epoch == 0 or (
            math.isfinite(score)
            and not (math.isfinite(self.best_score) and score <= self.best_score)
        )
        self.epoch = epoch
        self.history.append(record)
        if improved:
            self.best_epoch, self.best_score = epoch, score
        patience = cfg.early_stopping_patience
        self.stopped_early = patience is not None and epoch - self.best_epoch >= patience
        self.finished = epoch == cfg.epochs or self.stopped_early
        return improved


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and python's `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for one epoch of one run."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


def _order_owners(loader: Iterable[Batch]) -> list[Any]:
    """The loader and the (batch) samplers behind it, each once."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates = (
        loader,
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    )
    owners: dict[int, Any] = {}
    for owner in candidates:
        if owner is not None:
            owners.setdefault(id(owner), owner)
    return list(owners.values())


def seed_loader(loader: Iterable[Batch], seed: int, epoch: int) -> None:
    """Make the loader's shuffle order (and worker seeds) a function of (seed, epoch).

    Samplers with `set_epoch` (chexflow's `SeededBatchSampler`, torch's
    `DistributedSampler`) get the epoch; other generators (the DataLoader's, a
    `RandomSampler`'s, created when absent) are re-seeded from (seed, epoch). A resumed run
    then draws the same batches as an uninterrupted one.
    """
    value = epoch_seed(seed, epoch)
    for owner in _order_owners(loader):
        if callable(getattr(owner, "set_epoch", None)):
            owner.set_epoch(epoch)
        elif hasattr(owner, "generator"):
            if owner.generator is None:
                owner.generator = torch.Generator()
            owner.generator.manual_seed(value)


def masked_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE-with-logits averaged over unmasked entries (mask 0 = U-Ignore)."""
    losses = F.binary_cross_entropy_with_logits(
        logits.float(), target, pos_weight=pos_weight, reduction="none"
    )
    return (losses * mask).sum() / mask.sum().clamp_min(1.0)


def _dataset_labels(dataset: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    if isinstance(dataset, Subset):
        labels = _dataset_labels(dataset.dataset)
        if labels is None:
            return None
        index = torch.as_tensor(list(dataset.indices))
        return labels[0][index], labels[1][index]
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 3:
        return dataset.tensors[1], dataset.tensors[2]
    targets, mask = getattr(dataset, "targets", None), getattr(dataset, "mask", None)
    if targets is None or mask is None:
        return None
    return torch.as_tensor(np.asarray(targets)), torch.as_tensor(np.asarray(mask))


def training_labels(loader: Iterable[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and mask `[n, c]` of the training set.

    Read from the dataset (`TensorDataset`, `Subset`, or `targets`/`mask` attributes)
    when possible; otherwise one pass over the loader.
    """
    labels = _dataset_labels(getattr(loader, "dataset", None))
    if labels is None:
        log.info("pos_weight: dataset exposes no targets/mask; reading them from the loader")
        batches = [(t, m) for _, t, m in loader]
        labels = torch.cat([t for t, _ in batches]), torch.cat([m for _, m in batches])
    return labels[0].float(), labels[1].float()


def compute_pos_weight(targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-class negatives / positives among labelled entries, clamped to POS_WEIGHT_RANGE."""
    positives = (targets * mask).sum(0)
    negatives = ((1 - targets) * mask).sum(0)
    return (negatives / positives.clamp_min(1.0)).clamp(*POS_WEIGHT_RANGE)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases and norm weights."""
    groups = param_groups_weight_decay(model, cfg.weight_decay)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR factor per step: linear warm-up, then cosine decay towards 0."""
    warmup = int(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class TrainStep:
    """One optimisation step on a batch: the inner loop of `fit` (and of the benchmark)."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        total_steps: int,
        device: torch.device,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.optimizer = make_optimizer(model, cfg)
        self.scheduler = LambdaLR(self.optimizer, warmup_cosine(total_steps, cfg.warmup_fraction))
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.pos_weight = None if pos_weight is None else pos_weight.to(device)

    @property
    def lr(self) -> float:
        """Learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def __call__(
        self, images: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Forward, masked loss, backward, clip, step; returns the detached loss.

        Args:
            images: ``[B, 1, S, S]``, normalised float32, or uint8 pixels that are
                normalised on the device after the copy (``evaluation.to_device``; the
                CUDA input path, ``dataset.input_path``).
            target: float32 ``[B, c]``.
            mask: float32 ``[B, c]``; 0 leaves an entry out of the loss.
        """
        images = to_device(images, self.device)
        target = target.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.amp):
            logits = self.model(images)
        loss = masked_bce(logits, target, mask, self.pos_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()


def prepare_model(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """Move to the device; channels-last on CUDA when configured."""
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _show_bar(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def _notify(callbacks: Sequence[Callback], hook: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


@dataclass(frozen=True)
class EpochStats:
    """Mean training loss, images seen, seconds and the last step's learning rate."""

    loss: float
    images: int
    seconds: float
    lr: float


def train_epoch(
    step_fn: TrainStep,
    loader: Iterable[Batch],
    epoch: int = 1,
    first_step: int = 1,
    callbacks: Sequence[Callback] = (),
    bar: tqdm | None = None,
) -> EpochStats:
    """One pass over `loader` in training mode: the inner loop of `fit`."""
    bar = bar if bar is not None else tqdm(disable=True)
    set_train_mode(step_fn.model)
    started = time.perf_counter()
    total = torch.zeros((), device=step_fn.device)
    seen, lr = 0, step_fn.lr
    for i, (images, target, mask) in enumerate(loader):
        lr = step_fn.lr
        try:
            loss = step_fn(images, target, mask)
        except ValueError as exc:
            if "Expected more than 1 value per channel" not in str(exc):
                raise
            raise DataError(
                f"training: a batch of {len(images)} image(s) reaches a 1x1 feature map, where "
                "BatchNorm cannot train; use more training images (a larger fraction) or a "
                "larger data.image_size"
            ) from None
        total += loss * len(images)
        seen += len(images)
        if callbacks:
            _notify(callbacks, "on_step", first_step + i, epoch, float(loss), lr)
        bar.update(1)
        if not bar.disable and i % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.2e}")
    if seen == 0:
        raise DataError("training: the training loader yielded no batches")
    mean_loss = float(total) / seen
    if not math.isfinite(mean_loss):
        raise ConfigError(f"training diverged at epoch {epoch} (loss {mean_loss}); lower train.lr")
    return EpochStats(mean_loss, seen, time.perf_counter() - started, lr)


def _val_loss(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    losses = -(targets * np.log(p) + (1 - targets) * np.log1p(-p))
    return float((losses * mask).sum() / max(mask.sum(), 1.0))


def validate(
    model: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    class_names: Sequence[str],
) -> dict[str, float]:
    """`val_loss`, `val_auroc_mean` (NaN when no class is defined), `val_auroc/<class>`."""
    probs, targets, mask = predict(model, loader, device)
    table = auroc_table(probs, targets, mask, class_names, n_bootstrap=0)
    mean = table["mean"]
    metrics = {
        "val_loss": _val_loss(probs, targets, mask),
        "val_auroc_mean": math.nan if mean is None else mean,
    }
    for name, row in table["classes"].items():
        if row["defined"]:
            metrics[f"val_auroc/{metric_key(name)}"] = row["auroc"]
    return metrics


def _run_signature(
    cfg: TrainConfig, class_names: Sequence[str], seed: int, steps_per_epoch: int
) -> dict[str, Any]:
    settings = {
        k: v for k, v in cfg.model_dump(mode="json").items() if k not in _RESUME_FREE_SETTINGS
    }
    return {
        "seed": seed,
        "class_names": list(class_names),
        "steps_per_epoch": steps_per_epoch,
        "train": settings,
    }


def _check_same_run(saved: dict[str, Any], signature: dict[str, Any], directory: Path) -> None:
    before = saved.get("run", {})
    for key, value in signature.items():
        if before.get(key) != value:
            raise ConfigError(
                f"{directory / checkpoints.LAST} belongs to another run ({key} differs: "
                f"{before.get(key)!r} vs {value!r}); use another checkpoint directory "
                "or resume=false"
            )


def _restore(saved: dict[str, Any], step_fn: TrainStep) -> _Progress:
    step_fn.model.load_state_dict(saved["model"])
    step_fn.optimizer.load_state_dict(saved["optimizer"])
    step_fn.scheduler.load_state_dict(saved["scheduler"])
    checkpoints.restore_rng(saved["rng"])
    return _Progress(
        epoch=int(saved["epoch"]),
        best_score=float(saved["best_score"]),
        best_epoch=int(saved["best_epoch"]),
        history=list(saved["history"]),
        finished=bool(saved.get("finished", False)),
    )


def _save(
    directory: Path,
    step_fn: TrainStep,
    state: _Progress,
    signature: dict[str, Any],
    improved: bool,
) -> None:
    """best.pt first: a crash between the two writes only repeats the last epoch."""
    model_state = checkpoints.cpu_state_dict(step_fn.model)
    if improved:
        checkpoints.save_checkpoint(
            directory,
            checkpoints.BEST,
            model_state,
            {"epoch": state.epoch, "score": state.best_score},
        )
    payload = {
        "model": model_state,
        "optimizer": step_fn.optimizer.state_dict(),
        "scheduler": step_fn.scheduler.state_dict(),
        "epoch": state.epoch,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "finished": state.finished,
        "rng": checkpoints.capture_rng(),
        "run": signature,
    }
    meta = {
        "epoch": state.epoch,
        "score": state.history[-1]["val_auroc_mean"],
        "best_epoch": state.best_epoch,
        "best_score": state.best_score,
        "finished": state.finished,
    }
    checkpoints.save_checkpoint(directory, checkpoints.LAST, payload, meta)


def _result(directory: Path, state: _Progress, resumed_from: int | None) -> FitResult:
    return FitResult(
        best_epoch=state.best_epoch,
        best_score=state.best_score,
        epochs_completed=state.epoch,
        history=state.history,
        best_checkpoint=directory / checkpoints.BEST,
        last_checkpoint=directory / checkpoints.LAST,
        resumed_from_epoch=resumed_from,
    )


def _log_epoch(record: dict[str, float], epochs: int) -> None:
    log.info(
        "epoch %d/%d  loss %.4f  val_auroc %.4f  lr %.2e  %.1f s (%.0f img/s)",
        record["epoch"],
        epochs,
        record["train_loss"],
        record["val_auroc_mean"],
        record["lr"],
        record["seconds"],
        record["images_per_s"],
    )


def _run_epoch(
    step_fn: TrainStep,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    class_names: Sequence[str],
    epoch: int,
    callbacks: Sequence[Callback],
    show_bar: bool,
) -> dict[str, float]:
    """Train one epoch and validate; the epoch's history row."""
    started = time.perf_counter()
    steps = len(train_loader)  # type: ignore[arg-type]
    epochs = step_fn.cfg.epochs
    with tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", disable=not show_bar) as bar:
        stats = train_epoch(step_fn, train_loader, epoch, (epoch - 1) * steps + 1, callbacks, bar)
        metrics = validate(step_fn.model, val_loader, step_fn.device, class_names)
        bar.set_postfix(loss=f"{stats.loss:.4f}", val_auroc=f"{metrics['val_auroc_mean']:.4f}")
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        **metrics,
        "lr": stats.lr,
        "seconds": time.perf_counter() - started,
        "images_per_s": stats.images / stats.seconds,
    }


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    cfg: TrainConfig,
    class_names: Sequence[str],
    checkpoint_dir: Path,
    *,
    seed: int,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Train `model`, validating and checkpointing every epoch.

    The best epoch is the one with the highest validation mean AUROC. With `resume`, a
    complete `checkpoint_dir/last.pt` of the same run is continued and the final weights
    equal those of an uninterrupted run; a finished run returns at once. A `last.pt` or
    `best.pt` that does not match the sha256 recorded beside it is not trusted: training
    starts over (`checkpoints.digest_problem`). `resume=False` always starts over.
    `stop_after_epoch` ends this call after that epoch (the run stays resumable).

    History rows hold `epoch`, `train_loss`, `val_loss`, `val_auroc_mean`,
    `val_auroc/<class>` (defined classes only), `lr`, `seconds` and `images_per_s`.

    Raises:
        ConfigError: CUDA requested but absent, a checkpoint of another run in
            `checkpoint_dir`, or a diverging loss.
        DataError: an empty training loader.
    """
    device = select_device(cfg.device)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise DataError("training: the training loader yields no batches (empty training set?)")
    signature = _run_signature(cfg, class_names, seed, steps_per_epoch)
    pos_weight = compute_pos_weight(*training_labels(train_loader)) if cfg.pos_weight else None
    prepare_model(model, cfg, device)
    step_fn = TrainStep(model, cfg, steps_per_epoch * cfg.epochs, device, pos_weight)

    state, resumed_from = _Progress(), None
    saved = checkpoints.load_last(checkpoint_dir) if resume else None
    if saved is not None and int(saved.get("best_epoch", 0)) > 0:
        # The best epoch's weights live only in best.pt: damaged, they cannot be resumed.
        problem = checkpoints.digest_problem(checkpoint_dir / checkpoints.BEST)
        if problem is not None:
            log.warning("%s; training from scratch", problem)
            saved = None
    if saved is not None:
        _check_same_run(saved, signature, checkpoint_dir)
        state = _restore(saved, step_fn)
        resumed_from = state.epoch
        log.info("resuming from %s at epoch %d", checkpoint_dir / checkpoints.LAST, state.epoch)
        if state.finished:
            return _result(checkpoint_dir, state, resumed_from)

    show_bar = _show_bar(progress)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if stop_after_epoch is not None and epoch > stop_after_epoch:
            break
        seed_loader(train_loader, seed, epoch)
        record = _run_epoch(
            step_fn, train_loader, val_loader, class_names, epoch, callbacks, show_bar
        )
        improved = state.add(record, cfg)
        _save(checkpoint_dir, step_fn, state, signature, improved)
        _notify(callbacks, "on_epoch_end", epoch, {k: v for k, v in record.items() if k != "epoch"})
        if not show_bar:
            _log_epoch(record, cfg.epochs)
        if state.stopped_early:
            log.info("early stopping: no improvement for %d epochs", cfg.early_stopping_patience)
            break
    return _result(checkpoint_dir, state, resumed_from)
