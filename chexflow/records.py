"""The MLflow run record: the one place that names what a chexflow run writes and reads.

Tag names, metric keys, params, artifact paths, the registered model and its aliases, and
the text forms of a label fraction live here. The tasks (``tasks/tracking.py``) write a run
with the builders below; the comparison (``chexflow/comparison.py``) and the benchmarks read
it back with ``read_run_tags``. DESIGN.md describes the layout; ``tests/test_records.py``
pins it.

A fraction has two text forms: ``fraction_text`` (``0.01`` -> ``"0.01"``) in tags and params,
where it is read back as a number, and ``fraction_label`` (``0.01`` -> ``"1pct"``) in run
names and registry aliases; ``fraction_percent`` (``"1%"``) is the one for people (reports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from chexflow.data.labels import metric_key

RunKind = Literal["finetune", "reference", "sweep", "comparison", "pretrain"]
COMPARED_KINDS: tuple[RunKind, ...] = ("finetune", "reference")

# --- tags -------------------------------------------------------------------------------------
KIND_TAG = "chexflow.kind"
FRACTION_TAG = "chexflow.fraction"
SEED_TAG = "chexflow.seed"
MODEL_TAG = "chexflow.model"
SWEEP_TAG = "chexflow.sweep_id"
PARENT_TAG = "mlflow.parentRunId"
FAILURE_TAG = "chexflow.failure"
EVAL_DIGEST_TAG = "chexflow.eval_digest"
PREFECT_RUN_TAG = "prefect.flow_run_id"
TRAINING_FP_TAG = "chexflow.training_fingerprint"
PREVIOUS_ATTEMPTS_TAG = "chexflow.previous_attempts"
REUSED_TRAINING_TAG = "chexflow.reused_training"
RESUMED_FROM_EPOCH_TAG = "chexflow.resumed_from_epoch"
COMPARED_RUNS_TAG = "chexflow.compared_runs"
FRACTIONS_TAG = "chexflow.fractions"
SEEDS_TAG = "chexflow.seeds"
HOST_TAG = "chexflow.host"
PROCESS_TAG = "chexflow.process"
NAMESPACE_TAG = "chexflow.pid_namespace"
VERSION_RUN_TAG = "run_id"  # on a registered model version: the run it came from
# A run's starting point (`init_tag_value`): scratch, pretrain:<run id>, hub:<model name> or
# checkpoint:<sha256 prefix>. The comparison never pools runs of different starting points.
INIT_TAG = "chexflow.init"
PRETRAIN_KEY_TAG = "chexflow.pretrain_key"  # on a pretrain run: its cache key
# How much of the backbone `model.init_checkpoint` covered, recorded when
# `model.init_strict=false` let an incomplete checkpoint through (`init_coverage_tags`).
INIT_LOADED_TAG = "chexflow.init_loaded"  # "<loaded>/<backbone tensors>"
INIT_MISSING_TAG = "chexflow.init_missing"
INIT_UNEXPECTED_TAG = "chexflow.init_unexpected"
MAX_FAILURE_LENGTH = 5000
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI (Markdown)
MAX_NOTE_LENGTH = 7500  # MLflow keeps tag values up to 8000 characters
# The experiment's kind: MLflow 3's UI opens an experiment of this kind on its runs (model
# training), not on the GenAI traces view; "custom_model_development" is the UI's value.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# --- metric keys ------------------------------------------------------------------------------
MEAN_AUROC = "val_auroc_mean"
MEAN_AUROC_CI_LOW = "val_auroc_mean_ci_low"
MEAN_AUROC_CI_HIGH = "val_auroc_mean_ci_high"
TRAIN_LOSS_STEP = "train_loss_step"
LEARNING_RATE = "lr"
BEST_EPOCH = "best_epoch"

# --- artifact paths (relative to the run's artifact root) -------------------------------------
EMBEDDINGS_DIR = "embeddings"
METRICS_DIR = "metrics"
MAPS_DIR = "maps"
PLOTS_DIR = "plots"
CHECKPOINTS_DIR = "checkpoints"
DATA_DIR = "data"
REPORT_DIR = "report"
EXPLORER_FILE = "explorer.html"  # in REPORT_DIR: the interactive page of the aligned maps
EVALUATION_FILE = "evaluation.json"  # in METRICS_DIR
CLUSTER_METRICS_FILE = "cluster_metrics.json"  # in METRICS_DIR
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILES = ("best.pt", "best.json", "last.json")
BACKBONE_DIR = "backbone"  # a pretrain run's safetensors backbone and its record
PRETRAIN_LOSS = "pretrain_loss"  # a pretrain run's mean NT-Xent loss, one step per epoch
ANALYSIS_DIRS = (PLOTS_DIR, METRICS_DIR, MAPS_DIR)  # logged from the analysis output
COMPARED_ARTIFACTS = (METRICS_DIR, EMBEDDINGS_DIR, MAPS_DIR)  # what a comparison downloads

# --- registry ---------------------------------------------------------------------------------
DEFAULT_REGISTERED_MODEL = "chexpert-finetune"
DEFAULT_PRETRAIN_MODEL = "chexpert-pretrain"


def fraction_text(fraction: float) -> str:
    """The fraction as tags and params hold it: ``0.01 -> '0.01'``, ``0 -> '0.0'``."""
    return str(float(fraction))


def fraction_label(fraction: float) -> str:
    """``0.01 -> '1pct'``, ``0.005 -> '0.5pct'``: run names and aliases."""
    text = f"{fraction * 100:.4f}".rstrip("0").rstrip(".")
    return f"{text}pct"


def fraction_percent(fraction: float) -> str:
    """``0.01 -> '1%'``: the fraction as a report shows it."""
    return f"{fraction * 100:g}%"


def model_alias(fraction: float, seed: int) -> str:
    """Registry alias of a fine-tuned version: ``frac-<pct>pct-seed<seed>``, a decimal point
    written as ``_`` (aliases allow no dots): ``frac-1pct-seed0``, ``frac-0_5pct-seed2``."""
    return f"frac-{fraction_label(fraction).replace('.', '_')}-seed{seed}"


def finetune_run_name(fraction: float, seed: int) -> str:
    """``finetune-1pct-seed0``."""
    return f"finetune-{fraction_label(fraction)}-seed{seed}"


REFERENCE_RUN_NAME = "reference-initial-backbone"
PRETRAIN_RUN_NAME = "pretrain-simclr"


def sweep_run_name(fractions: Sequence[float]) -> str:
    """``sweep-0.01-0.1``: the fractions in the order given."""
    return "sweep-" + "-".join(f"{f:g}" for f in fractions)


def class_auroc_key(name: str) -> str:
    """``val_auroc/<class>``, the class name made a metric key (``Pleural Effusion`` ->
    ``pleural_effusion``)."""
    return f"val_auroc/{metric_key(name)}"


def class_ci_low_key(name: str) -> str:
    """``val_auroc_ci_low/<class>``."""
    return f"val_auroc_ci_low/{metric_key(name)}"


def class_ci_high_key(name: str) -> str:
    """``val_auroc_ci_high/<class>``."""
    return f"val_auroc_ci_high/{metric_key(name)}"


def epoch_key(name: str) -> str:
    """A training-history value logged per epoch: ``epoch/<name>`` (step = epoch)."""
    return f"epoch/{name}"


def evaluation_metrics(auroc: Mapping[str, Any]) -> dict[str, float | None]:
    """The evaluation metrics of a run from an AUROC table (``chexflow.evaluation``):
    ``val_auroc_mean`` (+ ``_ci_low``/``_ci_high``) and per class ``val_auroc/<class>``,
    ``val_auroc_ci_low/<class>``, ``val_auroc_ci_high/<class>``. ``None`` = undefined."""
    metrics: dict[str, float | None] = {
        MEAN_AUROC: auroc.get("mean"),
        MEAN_AUROC_CI_LOW: auroc.get("mean_ci_low"),
        MEAN_AUROC_CI_HIGH: auroc.get("mean_ci_high"),
    }
    for name, row in auroc["classes"].items():
        metrics[class_auroc_key(name)] = row.get("auroc")
        metrics[class_ci_low_key(name)] = row.get("ci_low")
        metrics[class_ci_high_key(name)] = row.get("ci_high")
    return metrics


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """One training-history row as ``epoch/<name>`` metrics (numbers only, not ``epoch``)."""
    return {epoch_key(k): v for k, v in row.items() if k != "epoch" and isinstance(v, int | float)}


def embedding_params(
    config_params: Mapping[str, str],
    fraction: float,
    seed: int,
    data_fingerprint: str,
    n_train_images: int,
    n_train_patients: int,
    n_eval_images: int,
    training_fingerprint: str | None = None,
) -> dict[str, str]:
    """The params of a run that embedded the evaluation set: the flattened configuration,
    the fraction and seed, the data's fingerprint and sizes (and the training's)."""
    params = {
        **config_params,
        "fraction": str(fraction),
        "seed": str(seed),
        "data_fingerprint": data_fingerprint,
        "n_train_images": str(n_train_images),
        "n_train_patients": str(n_train_patients),
        "n_eval_images": str(n_eval_images),
    }
    if training_fingerprint is not None:
        params["training_fingerprint"] = training_fingerprint
    return params


# --- writing: the tags of each run kind -------------------------------------------------------


def finetune_tags(
    fraction: float,
    seed: int,
    model: str,
    eval_digest: str,
    prefect_run_id: str,
    training_fingerprint: str,
    sweep_id: str | None = None,
    previous_attempts: Sequence[str] = (),
) -> dict[str, str]:
    """Tags a fine-tune run starts with (``chexflow.kind`` is added by ``Tracker.start_run``).

    ``previous_attempts``: killed or failed runs of the same training that this one resumes.
    """
    tags = {
        FRACTION_TAG: fraction_text(fraction),
        SEED_TAG: str(seed),
        EVAL_DIGEST_TAG: eval_digest,
        PREFECT_RUN_TAG: prefect_run_id,
        TRAINING_FP_TAG: training_fingerprint,
        MODEL_TAG: model,
    }
    if sweep_id:
        tags[SWEEP_TAG] = sweep_id
    if previous_attempts:
        tags[PREVIOUS_ATTEMPTS_TAG] = ",".join(previous_attempts)
    return tags


def training_outcome_tags(reused: bool, resumed_from_epoch: int | None) -> dict[str, str]:
    """Whether the training was reused from the cache, and the epoch it resumed from."""
    tags = {REUSED_TRAINING_TAG: str(reused).lower()}
    if resumed_from_epoch is not None and not reused:
        tags[RESUMED_FROM_EPOCH_TAG] = str(resumed_from_epoch)
    return tags


def reference_tags(
    model: str, eval_digest: str, prefect_run_id: str, sweep_id: str | None = None
) -> dict[str, str]:
    """Tags of the initial backbone's run: fraction 0, seed 0."""
    tags = {
        FRACTION_TAG: fraction_text(0.0),
        SEED_TAG: "0",
        EVAL_DIGEST_TAG: eval_digest,
        PREFECT_RUN_TAG: prefect_run_id,
        MODEL_TAG: model,
    }
    if sweep_id:
        tags[SWEEP_TAG] = sweep_id
    return tags


def init_tags(start: str) -> dict[str, str]:
    """The starting point of a fine-tune or reference run (``INIT_TAG``)."""
    return {INIT_TAG: start}


def init_coverage_tags(backbone_tensors: int, missing: int, unexpected: int) -> dict[str, str]:
    """Checkpoint coverage: loaded / backbone tensors, how many missing and unexpected."""
    return {
        INIT_LOADED_TAG: f"{backbone_tensors - missing}/{backbone_tensors}",
        INIT_MISSING_TAG: str(missing),
        INIT_UNEXPECTED_TAG: str(unexpected),
    }


def init_tag_value(
    init_checkpoint_sha256: str | None, pretrain_run_id: str | None, hub_model: str | None
) -> str:
    """``pretrain:<run id>`` / ``checkpoint:<sha256[:12]>`` / ``hub:<name>`` / ``scratch``.

    A local checkpoint wins over hub weights (it is loaded last, over them); a checkpoint
    written by the pretraining flow is named by its run.
    """
    if pretrain_run_id:
        return f"pretrain:{pretrain_run_id}"
    if init_checkpoint_sha256:
        return f"checkpoint:{init_checkpoint_sha256[:12]}"
    if hub_model:
        return f"hub:{hub_model}"
    return "scratch"


def pretrain_tags(model: str, key: str, prefect_run_id: str, images: int) -> dict[str, str]:
    """Tags of a pretraining run: its backbone, cache key and number of images."""
    return {
        MODEL_TAG: model,
        PRETRAIN_KEY_TAG: key,
        PREFECT_RUN_TAG: prefect_run_id,
        "chexflow.pretrain_images": str(images),
    }


def sweep_tags(
    prefect_run_id: str, fractions: Sequence[float], seeds: Sequence[int]
) -> dict[str, str]:
    """Tags of a sweep's parent run: the grid it runs."""
    return {
        PREFECT_RUN_TAG: prefect_run_id,
        FRACTIONS_TAG: ",".join(map(str, fractions)),
        SEEDS_TAG: ",".join(map(str, seeds)),
    }


def comparison_tags(
    prefect_run_id: str, compared_runs: Sequence[str], sweep_id: str | None = None
) -> dict[str, str]:
    """Tags of a comparison run: the runs it compared (and their sweep)."""
    tags = {PREFECT_RUN_TAG: prefect_run_id, COMPARED_RUNS_TAG: ",".join(compared_runs)}
    if sweep_id:
        tags[SWEEP_TAG] = sweep_id
    return tags


# The headline contrasts of a comparison (smallest labelled fraction -> largest), as metrics:
# ``contrast/<measure>`` is the change, ``contrast/<measure>_ci_low|_ci_high`` its interval.
CONTRAST_MEASURES: Mapping[str, tuple[str, str]] = {
    "auroc_mean": ("downstream", "mean"),
    "silhouette": ("representation", "silhouette"),
    "knn_accuracy": ("representation", "knn_accuracy"),
    "davies_bouldin": ("representation", "davies_bouldin"),
}


def contrast_key(measure: str, bound: Literal["", "ci_low", "ci_high"] = "") -> str:
    """``contrast/silhouette``, ``contrast/silhouette_ci_low``: a headline contrast metric."""
    return f"contrast/{measure}" + (f"_{bound}" if bound else "")


def contrast_metrics(conclusion: Mapping[str, Any]) -> dict[str, float]:
    """The headline contrasts of ``comparison.json``'s ``conclusion`` as metrics.

    Each measure gives its change (``delta``) and the bounds of its interval; a measure or
    bound the comparison did not compute (one fraction, no resamples) is left out.
    """
    out: dict[str, float] = {}
    for measure, (section, name) in CONTRAST_MEASURES.items():
        change = (conclusion.get(section) or {}).get(name) or {}
        for bound, field_name in (("", "delta"), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
            value = change.get(field_name)
            if isinstance(value, int | float) and value == value:  # not None, not NaN
                out[contrast_key(measure, bound)] = float(value)  # type: ignore[arg-type]
    return out


def comparison_note(
    conclusion_markdown: str, experiment_id: str, run_id: str, report_path: str
) -> str:
    """The comparison run's description: the conclusion, then links to its report.html.

    The links are relative to the MLflow UI (they work on any host it is served from): the
    run's artifact view, which renders the HTML, and the raw file (a download).

    Args:
        conclusion_markdown: The report's conclusion (Markdown), cut to fit MLflow's limit.
        experiment_id: The comparison run's experiment.
        run_id: The comparison run.
        report_path: Where the comparison wrote report.html on the machine that ran it.
    """
    html = f"{REPORT_DIR}/report.html"
    tail = (
        f"\n\n**Full report**: [open report.html]"
        f"(#/experiments/{experiment_id}/runs/{run_id}/artifacts/{html}) · "
        f"[download](get-artifact?path={html}&run_uuid={run_id}) · written to `{report_path}`"
    )
    room = MAX_NOTE_LENGTH - len(tail)
    body = conclusion_markdown.strip()
    if len(body) > room:
        body = body[: room - 40].rsplit(" ", 1)[0] + " … (continued in the report)"
    return body + tail


def model_version_tags(fraction: float, seed: int, run_id: str) -> dict[str, str]:
    """Tags of a registered model version."""
    return {FRACTION_TAG: fraction_text(fraction), SEED_TAG: str(seed), VERSION_RUN_TAG: run_id}


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTags:
    """A run's chexflow tags, typed. ``None`` where the run has no such tag."""

    kind: str | None
    fraction: float | None
    seed: int | None
    model: str | None
    eval_digest: str | None
    sweep_id: str | None
    parent_run_id: str | None
    training_fingerprint: str | None
    previous_attempts: tuple[str, ...]
    reused_training: bool | None
    failure: str | None
    init: str | None = None

    @property
    def is_compared(self) -> bool:
        """A fine-tune or reference run: what a comparison takes."""
        return self.kind in COMPARED_KINDS


def read_run_tags(tags: Mapping[str, str]) -> RunTags:
    """Parse a run's tags (``run.data.tags``) back into a ``RunTags``."""

    def number(key: str, kind: type) -> Any:
        text = tags.get(key)
        return None if text is None else kind(text)

    fraction = number(FRACTION_TAG, float)
    reused = tags.get(REUSED_TRAINING_TAG)
    attempts = tags.get(PREVIOUS_ATTEMPTS_TAG, "")
    return RunTags(
        kind=tags.get(KIND_TAG),
        fraction=fraction,
        seed=number(SEED_TAG, int),
        model=tags.get(MODEL_TAG),
        eval_digest=tags.get(EVAL_DIGEST_TAG),
        sweep_id=tags.get(SWEEP_TAG),
        parent_run_id=tags.get(PARENT_TAG),
        training_fingerprint=tags.get(TRAINING_FP_TAG),
        previous_attempts=tuple(a for a in attempts.split(",") if a),
        reused_training=None if reused is None else reused == "true",
        failure=tags.get(FAILURE_TAG),
        init=tags.get(INIT_TAG),
    )
