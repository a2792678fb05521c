"""One typed configuration tree for the CLI, the flow parameters and the deployments.

YAML files and ``--set key=value`` overrides are validated by the same pydantic models,
which Prefect also renders as the parameter form of a deployment.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from chexflow.data.labels import DEFAULT_POLICY, EVAL_CLASSES, LabelPolicy
from chexflow.errors import ConfigError
from chexflow.files import missing_file

SEED_MAX = 2**32 - 1  # numpy's RandomState (openTSNE, scikit-learn) takes seeds below 2**32


def _no_bool(value: Any) -> Any:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read 1.0/0.0)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


# Strict types: a YAML or --set value is never coerced (``train.epochs=true`` is not 1,
# ``"3"`` is not 3). Floats still accept ints and numeric strings (YAML reads ``1e-3``
# as a string), but never booleans, NaN or infinities. Bounds sit in the item types so
# that the JSON schema (Prefect's parameter form) carries them.
Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Float = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_no_bool)]
Seed = Annotated[int, Field(strict=True, ge=0, le=SEED_MAX)]
Perplexity = Annotated[
    float, Field(gt=0, le=10_000, allow_inf_nan=False), BeforeValidator(_no_bool)
]


def _unique(name: str, values: list[Any]) -> list[Any]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} repeated: {repeated}; list each value once")
    return values


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which images are used and how they are labelled and split."""

    image_size: Int = Field(128, ge=16, le=1024, description="Square input size in pixels.")
    frontal_only: Bool = Field(True, description="Keep frontal views only.")
    view: Literal["any", "AP", "PA"] = Field("any", description="AP/PA filter on frontal views.")
    label_policy: dict[str, LabelPolicy] = Field(
        default_factory=lambda: dict(DEFAULT_POLICY),
        description="Uncertain-label (-1) policy per evaluation class: ones, zeros or ignore.",
        json_schema_extra={"propertyNames": {"enum": list(EVAL_CLASSES)}},
    )
    eval_source: Literal["holdout", "valid", "both"] = Field(
        "holdout", description="Evaluation set: patients held out of train.csv, valid.csv, or both."
    )
    holdout_fraction: Float = Field(
        0.15, gt=0, lt=0.5, description="Share of train.csv patients held out for evaluation."
    )
    val_fraction: Float = Field(
        0.05, gt=0, lt=0.5, description="Share of train.csv patients held out for epoch selection."
    )
    split_seed: Int = Field(
        0, ge=0, le=SEED_MAX, description="Seed of the fixed hold-out split (same for all runs)."
    )
    min_class_count: Int = Field(
        1,
        ge=0,
        le=100_000,
        description="Each class must have at least this many positives in a fraction.",
    )
    cache_dir: Path | None = Field(
        None, description="Preprocessed-image cache; default: the workdir's cache folder."
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
    pretrained: Bool = Field(False, description="Load timm hub weights (needs the hub or a cache).")
    init_checkpoint: Path | None = Field(
        None, description="Local .safetensors or .pt state dict to initialise the backbone from."
    )
    init_from_pretraining: Bool = Field(
        False,
        description="Start from the backbone of the pretraining flow (section pretrain), run "
        "or reused first by the sweep; ignored when init_checkpoint is set.",
    )
    init_strict: Bool = Field(
        True,
        description="Refuse an init_checkpoint that leaves backbone tensors missing or has "
        "unexpected ones; false loads it anyway and records the counts as run tags.",
    )
    include_normal: Bool = Field(False, description="Add a No Finding output to the head.")
    linear_probe: Bool = Field(False, description="Freeze the backbone; train the head only.")
    drop_rate: Float = Field(
        0.0, ge=0, lt=1, description="Dropout before the classifier head, [0, 1)."
    )


class TrainConfig(_Section):
    """Optimisation and evaluation of one fine-tuning run."""

    epochs: Int = Field(
        5, ge=1, le=1000, description="Training epochs (the best by mean validation AUROC is kept)."
    )
    batch_size: Int = Field(32, ge=1, le=4096, description="Images per training step.")
    lr: Float = Field(
        1e-3, gt=0, lt=10, description="Peak AdamW learning rate (warm-up, then cosine decay)."
    )
    weight_decay: Float = Field(1e-4, ge=0, le=1, description="AdamW weight decay.")
    warmup_fraction: Float = Field(0.1, ge=0, lt=1, description="Share of steps for LR warm-up.")
    grad_clip: Float | None = Field(
        1.0, gt=0, le=1e6, description="Max gradient norm; null disables."
    )
    pos_weight: Bool = Field(False, description="Weight positives by the negative/positive ratio.")
    augment: Bool = Field(
        False,
        description="Jitter training images (rotation, scale, shift, contrast, brightness; "
        "never a flip): chexflow.data.dataset.augment_batch.",
    )
    early_stopping_patience: Int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Stop after this many epochs without a better validation AUROC; null: never.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train: auto picks CUDA when available."
    )
    amp: Bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    channels_last: Bool = Field(True, description="channels-last memory format on CUDA.")
    threads: Int | None = Field(
        None,
        ge=1,
        le=1024,
        description="torch and BLAS threads; null: automatic, the usable cores that other "
        "work leaves free, less one per loader worker (chexflow.runtime).",
    )
    num_workers: Int | None = Field(
        None,
        ge=0,
        le=64,
        description="DataLoader worker processes (0: in the main process); null: automatic, "
        "0 on CPU, min(4, cores // 2) on CUDA (chexflow.runtime).",
    )
    bootstrap: Int = Field(
        200,
        ge=1,
        le=100_000,
        description="Bootstrap resamples (by patient) for the AUROC 95% intervals; at least 1.",
    )


class PretrainConfig(_Section):
    """Self-supervised (SimCLR) pretraining of the backbone on the training pool's images."""

    epochs: Int = Field(2, ge=1, le=1000, description="Passes over the pretraining images.")
    batch_size: Int = Field(
        64, ge=2, le=4096, description="Images per step (each seen in two augmented views)."
    )
    max_images: Int | None = Field(
        1000,
        ge=2,
        le=10_000_000,
        description="Pretrain on a seeded random subset of this many pool images; null: all.",
    )
    lr: Float = Field(1e-3, gt=0, lt=10, description="AdamW learning rate (constant).")
    weight_decay: Float = Field(1e-4, ge=0, le=1, description="AdamW weight decay.")
    temperature: Float = Field(
        0.2, gt=0, le=10, description="NT-Xent temperature of the cosine similarities."
    )
    projection_dim: Int = Field(
        64, ge=2, le=4096, description="Output size of the projection MLP (discarded after)."
    )
    min_crop: Float = Field(
        0.5, gt=0, le=1, description="Smallest share of the image area a random crop keeps."
    )
    seed: Seed = Field(0, description="Seed of the subset, the views and the initialisation.")
    registered_model: str = Field(
        "chexpert-pretrain",
        min_length=1,
        description="Registered model of the pretrained backbones.",
    )

    @field_validator("registered_model")
    @classmethod
    def _mlflow_model_name(cls, name: str) -> str:
        return _mlflow_check("_validate_model_name", name)


class AnalysisConfig(_Section):
    """Projection and cluster metrics on the evaluation embeddings."""

    tsne_seeds: list[Seed] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=100,
        description="One t-SNE map per seed (their spread measures map stability).",
        json_schema_extra={"uniqueItems": True},
    )
    perplexities: list[Perplexity] = Field(
        default_factory=lambda: [30.0],
        min_length=1,
        max_length=100,
        description="t-SNE perplexities (above 0; openTSNE lowers one above (n - 1) / 3).",
        json_schema_extra={"uniqueItems": True},
    )
    pca_dims: Int = Field(50, ge=2, le=4096, description="PCA dimensions before t-SNE.")
    early_exaggeration: Float = Field(
        12.0, gt=0, le=1000, description="t-SNE early exaggeration (openTSNE)."
    )
    knn_k: Int = Field(15, ge=1, le=500, description="Neighbours of the kNN label agreement.")
    kmeans_seeds: Int = Field(
        5, ge=1, le=100, description="k-means runs, one seed each: purity, NMI, ARI as mean ± std."
    )
    bootstrap: Int = Field(200, ge=0, le=100_000, description="Resamples; 0: no intervals.")
    max_faithfulness_points: Int = Field(
        5000, ge=100, le=1_000_000, description="Points sampled to measure map faithfulness."
    )
    umap: Bool = Field(False, description="Also compute UMAP (needs the umap extra).")
    min_patients: Int = Field(
        10,
        ge=2,
        le=100_000,
        description="Patients a class needs before the report gives it a verdict or a call.",
    )
    fdr: Float = Field(
        0.05, gt=0, lt=1, description="False discovery rate of the report's secondary calls."
    )

    @field_validator("tsne_seeds", "perplexities")
    @classmethod
    def _each_once(cls, values: list[Any], info: Any) -> list[Any]:
        return _unique(info.field_name, values)


class TrackingConfig(_Section):
    """Where runs are recorded."""

    experiment: str = Field(
        "chexpert-label-fractions", min_length=1, description="MLflow experiment of the runs."
    )
    registered_model: str = Field(
        "chexpert-finetune",
        min_length=1,
        description="Registered model of the fine-tuned versions.",
    )
    register_models: Bool = Field(True, description="Register each fine-tuned model version.")

    @field_validator("experiment")
    @classmethod
    def _mlflow_experiment_name(cls, name: str) -> str:
        return _mlflow_check("_validate_experiment_name", name)

    @field_validator("registered_model")
    @classmethod
    def _mlflow_model_name(cls, name: str) -> str:
        return _mlflow_check("_validate_model_name", name)


_DEFAULT_NAMES = frozenset({"chexpert-label-fractions", "chexpert-finetune", "chexpert-pretrain"})


def _mlflow_check(validator: str, name: str) -> str:
    """Run MLflow's own name validator (``mlflow.utils.validation``) on ``name``.

    Imported here, not at module level: the config must load without importing MLflow,
    and only non-default names are validated (pydantic skips defaults).
    """
    if name in _DEFAULT_NAMES:  # valid, and validating it would import MLflow (seconds)
        return name
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.utils import validation
    except ImportError:  # the library without MLflow: names are checked by the server
        return name
    check = getattr(validation, validator, None)
    if check is None:  # renamed in another MLflow version: the server still checks
        return name
    try:
        check(name)
    except MlflowException as exc:
        shown = name if len(name) <= 60 else f"{name[:57]}..."
        raise ValueError(f"MLflow refuses {shown!r}: {exc.message}") from None
    return name


class ChexflowConfig(_Section):
    """Everything one fine-tuning run, sweep or comparison needs."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)


def describe(error: ValidationError) -> str:
    """The first error of a validation as ``section.key: message`` (one line)."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    return f"{where}: {first['msg']}"


class RepeatedKeyError(yaml.MarkedYAMLError):
    """A mapping names the same key twice (PyYAML would keep the last silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping, at any depth."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise RepeatedKeyError(
                    problem=f"key {key!r} is repeated (first on line "
                    f"{seen[key].start_mark.line + 1})",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also refuses repeated keys (raises ``yaml.YAMLError``)."""
    loader = UniqueKeyLoader(text)  # what yaml.load does, with a SafeLoader subclass
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and a YAML-parsed value."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({problem})") from exc
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
        if (problem := missing_file(path)) is not None:
            raise ConfigError(f"config file {path} {problem}")
        try:
            loaded = read_yaml(path.read_text())
        except RepeatedKeyError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
            raise ConfigError(
                f"config file {path} line {line}: {exc.problem}; write each key once"
            ) from exc
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
        raise ConfigError(f"{source}: {describe(exc)}") from exc


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
    """Seeds in [0, 2**32), none repeated (numpy's seed sequences refuse negative seeds)."""
    bad = [s for s in seeds if isinstance(s, bool) or not 0 <= s <= SEED_MAX]
    if bad:
        raise ConfigError(f"seeds must be whole numbers in [0, {SEED_MAX}]: got {bad}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds are repeated: {seeds}")
    return list(seeds)
