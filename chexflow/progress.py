"""Progress of long work as log lines: one line per training epoch, with an ETA.

A training `Callback` (``chexflow.train``) that writes through `logging`, never `print`:
the application decides where the lines go (the ``chexflow`` command's console, a Prefect
flow run's logs) by handing it a logger.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger("chexflow.progress")


def format_duration(seconds: float) -> str:
    """``75`` → ``"1:15"``, ``3725`` → ``"1:02:05"``; ``"?"`` when not finite."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], eta_s: float) -> str:
    """``epoch 2/5  train loss 0.4123  val AUROC 0.7311  512 img/s  ETA 1:15``.

    Args:
        epoch: The epoch just finished, from 1.
        epochs: Epochs of the whole run.
        metrics: The epoch's history row (``train_loss``, ``val_auroc_mean``,
            ``images_per_s``); a missing or NaN AUROC (no class defined) reads "n/a".
        eta_s: Seconds until the last epoch ends.
    """
    auroc = metrics.get("val_auroc_mean", math.nan)
    shown = f"{auroc:.4f}" if math.isfinite(auroc) else "n/a"
    return (
        f"epoch {epoch}/{epochs}  train loss {metrics.get('train_loss', math.nan):.4f}  "
        f"val AUROC {shown}  {metrics.get('images_per_s', math.nan):.0f} img/s  "
        f"ETA {format_duration(eta_s)}"
    )


class EpochProgress:
    """Training callback: one INFO line per epoch (see `epoch_line`).

    The ETA is the mean duration (``seconds``: training and validation) of the epochs this
    callback has seen times the epochs left (a resumed run counts its new epochs only).
    """

    def __init__(
        self, epochs: int, logger: logging.Logger | logging.LoggerAdapter | None = None
    ) -> None:
        """
        Args:
            epochs: Epochs of the whole run (``train.epochs``).
            logger: Where the lines go; default the ``chexflow.progress`` logger.
        """
        self.epochs = epochs
        self.logger = logger if logger is not None else log
        self._seconds: list[float] = []

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        """Steps are the progress bar's business (a terminal only)."""
        return None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the epoch's line."""
        self._seconds.append(metrics.get("seconds", math.nan))
        per_epoch = sum(self._seconds) / len(self._seconds)
        self.logger.info(epoch_line(epoch, self.epochs, metrics, per_epoch * (self.epochs - epoch)))
