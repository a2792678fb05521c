"""One typed configuration tree for the CLI, the flow parameters and the deployments.

YAML files and ``--set key=value`` overrides are validated by the same pydantic models,
which Prefect also renders as the parameter form of a deployment.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chexflow.data.labels import DEFAULT_POLICY, EVAL_CLASSES, LabelPolicy
from chexflow.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which images are used and how they are labelled and split."""

    image_size: int = Field(128, ge=16, le=1024, description="Square input size in pixels.")
    frontal_only: bool = Field(True, description="Keep frontal views only.")
    view: Literal["any", "AP", "PA"] = Field("any", description="AP/PA filter on frontal views.")
    label_policy: dict[str, LabelPolicy] = Field(
        default_factory=lambda: dict(DEFAULT_POLICY),
        description="Uncertain-label (-1) policy per evaluation class: ones, zeros or ignore.",
    )
    eval_source: Literal["holdout", "valid", "both"] = Field(
        "holdout", description="Evaluation set: patients held out of train.csv, valid.csv, or both."
    )
    holdout_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="Share of train.csv patients held out for evaluation."
    )
    val_fraction: float = Field(
        0.05, gt=0, lt=0.5, description="Share of train.csv patients held out for epoch selection."
    )
    split_seed: int = Field(0, description="Seed of the fixed hold-out split (same for all runs).")
    min_class_count: int = Field(
        1, ge=0, description="Each class must have at least this many positives in a fraction."
    )
    cache_dir: Path | None = Field(
        None, description="Preprocessed-image cache; default <workdir>/cache."
    )

    @field_validator("label_policy")
    @classmethod
    def _known_classes(cls, policy: dict[str, LabelPolicy]) -> dict[str, LabelPolicy]:
        unknown = sorted(set(policy) - set(EVAL_CLASSES))
        if unknown:
            raise ValueError(f"unknown class {unknown}; expected some of {list(EVAL_CLASSES)}")
        return {**DEFAULT_POLICY, **policy}


class ModelConfig(_Section):
    """The timm backbone and how it is initialised."""

    name: str = Field("resnet18", description="Any timm model name.")
    pretrained: bool = Field(False, description="Load timm hub weights (needs the hub or a cache).")
    init_checkpoint: Path | None = Field(
        None, description="Local .safetensors or .pt state dict to initialise the backbone from."
    )
    include_normal: bool = Field(False, description="Add a No Finding output to the head.")
    linear_probe: bool = Field(False, description="Freeze the backbone; train the head only.")
    drop_rate: float = Field(0.0, ge=0, lt=1)


class TrainConfig(_Section):
    """Optimisation and evaluation of one fine-tuning run."""

    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, lt=10)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="Share of steps for LR warm-up.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; null disables.")
    pos_weight: bool = Field(False, description="Weight positives by the negative/positive ratio.")
    early_stopping_patience: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field("auto")
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    channels_last: bool = Field(True, description="channels-last memory format on CUDA.")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    bootstrap: int = Field(200, ge=0, le=100_000, description="Bootstrap resamples for AUROC CIs.")


class AnalysisConfig(_Section):
    """Projection and cluster metrics on the evaluation embeddings."""

    tsne_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    perplexities: list[float] = Field(default_factory=lambda: [30.0], min_length=1)
    pca_dims: int = Field(50, ge=2)
    early_exaggeration: float = Field(12.0, gt=0)
    knn_k: int = Field(15, ge=1, le=500)
    kmeans_seeds: int = Field(5, ge=1, le=100)
    bootstrap: int = Field(200, ge=0, le=100_000)
    max_faithfulness_points: int = Field(5000, ge=100)
    umap: bool = Field(False, description="Also compute UMAP (needs the umap extra).")


class TrackingConfig(_Section):
    """Where runs are recorded."""

    experiment: str = Field("chexpert-label-fractions", min_length=1)
    registered_model: str = Field("chexpert-finetune", min_length=1)
    register_models: bool = Field(True, description="Register each fine-tuned model version.")


class ChexflowConfig(_Section):
    """Everything one fine-tuning run, sweep or comparison needs."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    return f"{where}: {first['msg']}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and a YAML-parsed value."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc.problem})") from exc
    return key.strip().split("."), value


def _apply(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> ChexflowConfig:
    """Read an optional YAML file, apply ``key=value`` overrides, and validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {path}{line}: malformed YAML") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections at top level")
        tree = loaded or {}
    for item in overrides or []:
        key_path, value = parse_override(item)
        _apply(tree, key_path, value)
    try:
        return ChexflowConfig.model_validate(tree)
    except ValidationError as exc:
        source = f"config file {path}" if path else "config"
        raise ConfigError(f"{source}: {_describe(exc)}") from exc


def config_to_yaml(config: BaseModel) -> str:
    """The config as YAML text (paths as strings), round-trippable by load_config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def fingerprint(*parts: BaseModel | dict[str, Any] | str | float | int | None) -> str:
    """A short stable digest of configs and values, for cache keys and run names."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(config: BaseModel) -> dict[str, str]:
    """``section.key -> value`` strings, for MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[prefix] = json.dumps(node) if isinstance(node, list) else str(node)

    walk("", config.model_dump(mode="json"))
    return out


def check_fractions(fractions: list[float]) -> list[float]:
    """Label fractions in (0, 1], none repeated, sorted ascending."""
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ConfigError(f"fractions must lie in (0, 1]: got {bad}")
    if len(set(fractions)) != len(fractions):
        raise ConfigError(f"fractions are repeated: {fractions}")
    return sorted(fractions)


def check_seeds(seeds: list[int]) -> list[int]:
    """Seeds, none repeated."""
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds are repeated: {seeds}")
    return list(seeds)
