"""What the flows return, typed: the records that cross from a flow to its caller.

Pydantic models, so that Prefect persists them as JSON (``result_serializer="json"``) and
a sweep dispatched to a deployment gets the same type back from the fine-tune's flow run.
"""

from __future__ import annotations

from pydantic import BaseModel


class FinetuneResult(BaseModel):
    """One fine-tuned fraction × seed: its MLflow run and headline numbers.

    ``val_auroc_mean`` is None when no evaluation class had both outcomes;
    ``silhouette`` is the embedding's cosine silhouette over exclusive labels.
    """

    run_id: str
    fraction: float
    seed: int
    model_version: str | None = None
    val_auroc_mean: float | None = None
    silhouette: float | None = None
    reused_training: bool = False
    output_dir: str = ""


class ReferenceResult(BaseModel):
    """The initial backbone's "0%" run (fraction 0, seed 0)."""

    run_id: str
    fraction: float = 0.0
    seed: int = 0
    val_auroc_mean: float | None = None
    silhouette: float | None = None


class PretrainingResult(BaseModel):
    """A pretrained backbone: the run that trained it, its checkpoint and what it cost.

    ``reused`` is true when the cache held it (no training, no new run); ``cpu_seconds``
    and ``wall_seconds`` are those of the run that trained it.
    """

    run_id: str | None
    checkpoint: str
    key: str
    model_version: str | None = None
    reused: bool = False
    images: int = 0
    losses: list[float] = []
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


class ComparisonResult(BaseModel):
    """A comparison run and the report files it wrote (absolute paths)."""

    run_id: str
    runs: list[str]
    markdown: str
    html: str
    comparison_json: str


class SweepResult(BaseModel):
    """A sweep's parent run, its fine-tunes (grid order), reference and comparison."""

    sweep_id: str
    runs: list[FinetuneResult]
    reference: ReferenceResult | None = None
    comparison: ComparisonResult | None = None
    pretraining: PretrainingResult | None = None
