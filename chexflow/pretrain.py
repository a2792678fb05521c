"""Self-supervised pretraining of a backbone on unlabelled radiographs (SimCLR).

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"): every image of a batch is augmented twice, the backbone's pooled
features go through a small projection MLP, and the NT-Xent loss pulls each image's two
projections together against the batch's other 2N - 2 views. Only the backbone is kept:
`save_backbone` writes it as safetensors, which fine-tuning loads through
``model.init_checkpoint`` (the classifier is re-initialised there).

Augmentations suited to grayscale radiographs (`radiograph_views`), after MoCo-CXR
(Sowrirajan et al. 2021) and Azizi et al. 2021: a random resized crop that still shows
anatomy (50-100% of the area), rotation up to 10 degrees, mild contrast, brightness and
gamma instead of colour jitter (one channel), Gaussian blur and noise; never a horizontal
flip, because the heart's side is anatomy, not nuisance. Photometric jitter is kept mild:
stronger settings (contrast ×0.7-1.3, gamma 0.7-1.4) left the loss at chance on the
synthetic radiographs, whose patients differ by subtle anatomy.

The loop takes preprocessed images (``uint8 [N, S, S]``, as
`chexflow.data.dataset.load_images` returns them) and no labels, so any image of the
training pool can be used. Everything random is drawn from generators seeded by
``settings.seed`` and the epoch, so a run is reproducible on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import nn

from chexflow.data.dataset import MEAN, STD
from chexflow.files import atomic_file


@dataclass(frozen=True)
class PretrainSettings:
    """How to pretrain; defaults follow SimCLR scaled down to small CPU runs."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    projection_dim: int = 64
    min_crop: float = 0.5  # smallest share of the image area a crop keeps
    seed: int = 0


@dataclass(frozen=True)
class PretrainResult:
    """Mean NT-Xent loss per epoch and the number of images per epoch."""

    losses: list[float]
    images: int


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high, generator=generator)


def radiograph_views(
    images: torch.Tensor, generator: torch.Generator, min_crop: float = 0.5
) -> torch.Tensor:
    """One random view of each of ``[B, 1, S, S]`` images in [0, 1] (same shape and range).

    Random resized crop (area ``min_crop``-1, aspect 3/4-4/3), rotation ±10°, contrast
    ×0.8-1.2, brightness ±0.05, gamma 0.8-1.25, Gaussian blur (sigma 0-1 px) on half the
    images and noise (sigma 0-0.02). No flips.
    """
    n = images.shape[0]
    area = _uniform(n, min_crop, 1.0, generator)
    aspect = torch.exp(_uniform(n, np.log(3 / 4), np.log(4 / 3), generator))
    half_w = torch.sqrt(area * aspect).clamp(max=1.0)
    half_h = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = _uniform(n, -1.0, 1.0, generator) * (1 - half_w)
    centre_y = _uniform(n, -1.0, 1.0, generator) * (1 - half_h)
    angle = torch.deg2rad(_uniform(n, -10.0, 10.0, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * half_w, -sin * half_h, centre_x], 1),
            torch.stack([sin * half_w, cos * half_h, centre_y], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(_uniform(n, np.log(0.8), np.log(1.25), generator)).view(n, 1, 1, 1)
    views = views.clamp(1e-6, 1.0) ** gamma
    contrast = _uniform(n, 0.8, 1.2, generator).view(n, 1, 1, 1)
    brightness = _uniform(n, -0.05, 0.05, generator).view(n, 1, 1, 1)
    views = (views - 0.5) * contrast + 0.5 + brightness
    views = _blur(views, _uniform(n, 0.0, 1.0, generator), _uniform(n, 0, 1, generator) < 0.5)
    noise = torch.randn(views.shape, generator=generator) * _uniform(n, 0.0, 0.02, generator).view(
        n, 1, 1, 1
    )
    return (views + noise).clamp_(0.0, 1.0)


def _blur(images: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of the ``apply`` images with their own ``sigma`` (pixels, 5-tap)."""
    offsets = torch.arange(-2, 3, dtype=images.dtype)
    weights = torch.exp(-(offsets**2) / (2 * sigma.clamp(min=1e-3).view(-1, 1) ** 2))
    weights = weights / weights.sum(1, keepdim=True)  # [B, 5]
    n = images.shape[0]
    rows = weights.view(n, 1, 1, 5)
    padded = F.pad(images.transpose(0, 1), (2, 2, 0, 0), mode="replicate")  # [1, B, S, S+4]
    blurred = F.conv2d(padded, rows, groups=n)
    cols = weights.view(n, 1, 5, 1)
    blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), cols, groups=n)
    blurred = blurred.transpose(0, 1)
    return torch.where(apply.view(n, 1, 1, 1), blurred, images)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy of paired projections ``[N, D]``.

    Each of the 2N views is classified among the other 2N - 1 by cosine similarity /
    ``temperature``; its pair is the right answer. Mean over the 2N views.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class _Contrastive(nn.Module):
    """A timm backbone's pooled features, then SimCLR's projection MLP."""

    def __init__(self, backbone: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        width = int(backbone.num_features)
        self.projection = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, projection_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(x)
        return self.projection(self.backbone.forward_head(features, pre_logits=True))


def pretrain(
    model: nn.Module,
    images: np.ndarray,
    settings: PretrainSettings,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> PretrainResult:
    """Train ``model``'s backbone in place with SimCLR on unlabelled ``images``.

    Args:
        model: A timm model (``forward_features``, ``forward_head``); its classifier is
            not used.
        images: ``uint8 [N, S, S]`` preprocessed images; N >= 2.
        settings: Epochs, batch size, optimiser, temperature, crops, seed.
        device: Where to train.
        on_epoch: Called with (epoch, mean loss) after each epoch (e.g. to log metrics).

    Returns:
        The mean loss of each epoch. Batches are ``settings.batch_size`` images (the
        last smaller one is dropped when it has fewer than 2).

    Raises:
        ValueError: fewer than 2 images, or images not ``uint8 [N, S, S]``.
    """
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) < 2:
        raise ValueError(f"expected uint8 [N >= 2, S, S] images, got {images.dtype} {images.shape}")
    torch.manual_seed(settings.seed)
    net = _Contrastive(model, settings.projection_dim).to(device)
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    pixels = torch.from_numpy(images).unsqueeze(1)
    losses = []
    net.train()
    for epoch in range(settings.epochs):
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        order = torch.randperm(len(images), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(images), settings.batch_size):
            index = order[start : start + settings.batch_size]
            if len(index) < 2:
                continue
            unit = pixels[index].float().div_(255.0)
            pair = [radiograph_views(unit, generator, settings.min_crop) for _ in range(2)]
            z1, z2 = (net(((v - MEAN) / STD).to(device)) for v in pair)
            loss = nt_xent(z1, z2, settings.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, batches = total + float(loss.detach()), batches + 1
        losses.append(total / batches)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    net.eval()
    return PretrainResult(losses=losses, images=len(images))


def save_backbone(model: nn.Module, path: Path) -> Path:
    """Write ``model``'s state dict as safetensors for ``model.init_checkpoint``.

    The classifier is written too; `chexflow.models.load_backbone_weights` drops a head
    whose shape differs and fine-tuning re-initialises it. Written atomically (a reader
    never sees half a file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_file(path, fsync=True) as handle:
        handle.write(safetensors_bytes(state))
    return path
