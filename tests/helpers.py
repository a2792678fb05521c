"""Values several test modules share (pytest puts tests/ on sys.path)."""

from __future__ import annotations

# One epoch of a tiny timm model on 32 px images: the fastest real run of every flow.
TINY = [
    "data.image_size=32",
    "model.name=test_resnet",
    "train.epochs=1",
    "train.batch_size=16",
    "train.bootstrap=20",
    "analysis.bootstrap=20",
    "analysis.kmeans_seeds=2",
    "analysis.max_faithfulness_points=300",
]


def set_args(*overrides: str) -> list[str]:
    """``--set`` arguments for the CLI: TINY followed by ``overrides``."""
    return [arg for item in [*TINY, *overrides] for arg in ("--set", item)]
