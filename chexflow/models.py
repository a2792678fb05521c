"""timm backbones for grayscale radiographs: hub weights, a local checkpoint or random init."""

from __future__ import annotations

import difflib
import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn

from chexflow.config import ModelConfig
from chexflow.data.labels import NORMAL, PATHOLOGIES
from chexflow.errors import ChexflowError, ConfigError
from chexflow.files import missing_file
from chexflow.records import init_coverage_tags

log = logging.getLogger("chexflow.models")

IN_CHANS = 1
# Wrappers that training frameworks put in front of backbone keys (DDP, SSL encoders,
# torch.compile's OptimizedModule).
_KEY_PREFIXES = ("module.", "backbone.", "encoder.", "model.", "_orig_mod.")
# Bookkeeping buffers, not weights: their absence leaves nothing uninitialised.
_COUNTERS = ("num_batches_tracked",)
_NESTED_KEYS = ("state_dict", "model")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin")


@dataclass(frozen=True)
class LoadReport:
    """What `load_backbone_weights` did with a checkpoint."""

    path: Path
    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    dropped_head: tuple[str, ...] = ()
    adapted_input: tuple[str, ...] = field(default=())
    backbone_tensors: int = 0
    backbone_missing: tuple[str, ...] = ()
    backbone_unexpected: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every backbone tensor came from the file and the file held no other tensor."""
        return not self.backbone_missing and not self.backbone_unexpected

    def tags(self) -> dict[str, str]:
        """Counts for run tags: loaded / backbone tensors, missing, unexpected."""
        return init_coverage_tags(
            self.backbone_tensors, len(self.backbone_missing), len(self.backbone_unexpected)
        )

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.path.name}: loaded {self.loaded} tensors, {len(self.missing)} missing "
            f"({len(self.backbone_missing)} of {self.backbone_tensors} backbone), "
            f"{len(self.unexpected)} unexpected, head re-initialised: "
            f"{', '.join(self.dropped_head) or 'no'}, "
            f"input conv summed to 1 channel: {', '.join(self.adapted_input) or 'no'}"
        )


def head_classes(cfg: ModelConfig) -> tuple[str, ...]:
    """Names of the model outputs, in order."""
    return (*PATHOLOGIES, NORMAL) if cfg.include_normal else PATHOLOGIES


def create_model(cfg: ModelConfig, num_classes: int | None = None) -> nn.Module:
    """A single-channel timm model initialised as `cfg` says.

    Order: architecture (random init) → hub weights when `cfg.pretrained` → the local
    `cfg.init_checkpoint` (overrides the hub weights it matches) → backbone frozen when
    `cfg.linear_probe`.
    """
    _check_model_name(cfg.name)
    n_out = len(head_classes(cfg)) if num_classes is None else num_classes
    model = _build(cfg, n_out)
    if cfg.init_checkpoint is not None:
        report = load_backbone_weights(model, cfg.init_checkpoint, strict=cfg.init_strict)
        log.info("init checkpoint %s", report.summary())
    if cfg.linear_probe:
        freeze_backbone(model)
    return model


def _check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    close += [n for n in timm.list_models(f"*{name}*") if n not in close][: 5 - len(close)]
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
    raise ConfigError(f"model.name: unknown timm model {name!r}{hint}")


def _build(cfg: ModelConfig, num_classes: int) -> nn.Module:
    kwargs = {"in_chans": IN_CHANS, "num_classes": num_classes, "drop_rate": cfg.drop_rate}
    if not cfg.pretrained:
        return timm.create_model(cfg.name, pretrained=False, **kwargs)
    try:
        return timm.create_model(cfg.name, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as exc:
        # huggingface_hub raises OSError subclasses offline; timm a RuntimeError without weights.
        raise ConfigError(
            f"model.pretrained: could not fetch hub weights for {cfg.name!r} (the hub is "
            f"unreachable or has none: {type(exc).__name__}); set model.init_checkpoint to a "
            "local .safetensors/.pt file or model.pretrained=false"
        ) from exc


def freeze_backbone(model: nn.Module) -> None:
    """Leave only the classifier (`model.get_classifier()`) trainable."""
    head = {id(p) for p in model.get_classifier().parameters()}
    if not head:
        raise ConfigError("model.linear_probe: the model has no trainable classifier")
    for param in model.parameters():
        param.requires_grad_(id(param) in head)


def set_train_mode(model: nn.Module) -> nn.Module:
    """`model.train()`, but batch norms whose parameters are all frozen stay in eval mode.

    A frozen backbone (linear probe) must not drift its running statistics either.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
    return model


def load_backbone_weights(model: nn.Module, path: Path | str, *, strict: bool = True) -> LoadReport:
    """Initialise `model` from a local state dict, adapting it to this model.

    Accepts `.safetensors`, or `.pt/.pth/.bin` loaded with `weights_only=True` (a raw
    state dict or one under a "state_dict"/"model" key). Wrapper prefixes (`module.`,
    `backbone.`, `encoder.`, `model.`, torch.compile's `_orig_mod.`) are stripped where that
    makes a key match, a 3-channel first convolution is summed to 1 channel, and classifier
    tensors of another shape are dropped so the head keeps its fresh initialisation.

    Coverage: every backbone tensor of `model` (all but the classifier and BatchNorm's
    `num_batches_tracked` counters) must come from the file, and the file must hold no
    tensor outside `model` (classifier tensors aside). With `strict=False` such a file is
    loaded anyway and `LoadReport.tags()` gives the counts to record.

    Raises:
        ConfigError: missing file, unknown format, nothing matches, a backbone tensor has
            an incompatible shape, or (``strict``) backbone tensors missing or unexpected.
        ChexflowError: the file is not a plain tensor checkpoint (e.g. an unsafe pickle).
    """
    path = Path(path)
    raw = read_state_dict(path)
    target = model.state_dict()
    state = _match_keys(raw, target.keys())
    adapted = _adapt_input_convs(model, state, target)
    dropped = _drop_mismatched_head(model, state, target, path)
    loaded = sum(key in target for key in state)
    if loaded == 0:
        raise ConfigError(
            f"model.init_checkpoint: no tensor in {path} matches {_arch(model)} "
            f"(first keys: {', '.join(list(raw)[:3])}); is it a checkpoint of this architecture?"
        )
    heads = _names_in_cfg(model, "classifier")
    backbone = [k for k in target if not _is_head(k, heads) and not k.endswith(_COUNTERS)]
    report = LoadReport(
        path=path,
        loaded=loaded,
        missing=tuple(k for k in target if k not in state),
        unexpected=tuple(k for k in state if k not in target),
        dropped_head=dropped,
        adapted_input=adapted,
        backbone_tensors=len(backbone),
        backbone_missing=tuple(k for k in backbone if k not in state),
        backbone_unexpected=tuple(
            k
            for k in state
            if k not in target and not _is_head(k, heads) and not k.endswith(_COUNTERS)
        ),
    )
    if strict and not report.complete:
        raise ConfigError(_coverage_problem(report, model))
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    return report


def _arch(model: nn.Module) -> str:
    return getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)


def _coverage_problem(report: LoadReport, model: nn.Module) -> str:
    missing, unexpected = report.backbone_missing, report.backbone_unexpected
    example = f"missing e.g. {missing[0]}" if missing else f"unexpected e.g. {unexpected[0]}"
    return (
        f"model.init_checkpoint: {report.path} covers {report.backbone_tensors - len(missing)} "
        f"of {report.backbone_tensors} backbone tensors of {_arch(model)} and holds "
        f"{len(unexpected)} it does not have ({example}); check model.name, or set "
        "model.init_strict=false to load it anyway (the counts are recorded as run tags)"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or weights-only `.pt/.pth/.bin` file, on CPU."""
    if (problem := missing_file(path)) is not None:
        raise ConfigError(f"model.init_checkpoint: {path} {problem}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ChexflowError(f"{path}: not a readable safetensors file ({exc})") from exc
    if suffix not in _PICKLE_SUFFIXES:
        raise ConfigError(
            f"model.init_checkpoint: {path} has suffix {suffix!r}; expected .safetensors, "
            + ", ".join(_PICKLE_SUFFIXES)
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ChexflowError(
            f"{path}: refused to load; it holds objects other than tensors and plain values, "
            "and arbitrary pickles are never executed (save a state dict or .safetensors)"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ChexflowError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ChexflowError(f"{path}: expected a state dict, found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ChexflowError(f"{path}: holds no tensors")
    return tensors


def _match_keys(raw: Mapping[str, torch.Tensor], wanted: Iterable[str]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes from keys that do not match as they are."""
    wanted = set(wanted)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        name = key
        while name not in wanted and name.startswith(_KEY_PREFIXES):
            name = name.split(".", 1)[1]
        out[name if name in wanted else key] = tensor
    return out


def _names_in_cfg(model: nn.Module, field_name: str) -> tuple[str, ...]:
    value = getattr(model, "pretrained_cfg", {}).get(field_name) or ()
    return (value,) if isinstance(value, str) else tuple(value)


def _adapt_input_convs(
    model: nn.Module, state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[str, ...]:
    adapted = []
    for conv in _names_in_cfg(model, "first_conv"):
        key = f"{conv}.weight"
        if key not in state or key not in target:
            continue
        have, want = state[key], target[key]
        if have.ndim == 4 and have.shape[1] != want.shape[1] and want.shape[1] == IN_CHANS:
            state[key] = adapt_input_conv(IN_CHANS, have)
            adapted.append(key)
    return tuple(adapted)


def _is_head(key: str, heads: tuple[str, ...]) -> bool:
    return any(key == h or key.startswith(f"{h}.") for h in heads)


def _drop_mismatched_head(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    path: Path,
) -> tuple[str, ...]:
    heads = _names_in_cfg(model, "classifier")
    dropped, clashes = [], []
    for key in [k for k in state if k in target and state[k].shape != target[k].shape]:
        if _is_head(key, heads):
            dropped.append(key)
            del state[key]
        else:
            clashes.append(f"{key} {tuple(state[key].shape)} vs {tuple(target[key].shape)}")
    if clashes:
        raise ConfigError(
            f"model.init_checkpoint: {path} does not fit model {_arch(model)} "
            f"({len(clashes)} shape mismatches, e.g. {clashes[0]}); check model.name"
        )
    return tuple(dropped)
