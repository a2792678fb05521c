"""The work of ``chexflow sweep`` as a plain script: chexflow.pipeline, no Prefect, no MLflow.

    python -m bench.plain_sweep --data DIR --fractions 0.05,0.25 --workdir W [--set k=v ...]

For each fraction × seed: prepare the split, train, evaluate + embed, analyse; the initial
backbone's "0%" reference (evaluate + embed + analyse, no training); then the comparison
report over the runs' local outputs — the steps of ``flows.sweep`` in the same order. It is
the baseline the orchestration benchmark holds the Prefect + MLflow sweep against.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chexflow import pipeline, records
from chexflow.config import ChexflowConfig, load_config


def _as_run_directory(
    evaluated: pipeline.Evaluated, analysed: pipeline.Analysed, dst: Path
) -> Path:
    """Lay a run's outputs out the way ``compare`` downloads them from MLflow
    (``records.COMPARED_ARTIFACTS``; the tasks log the same files)."""
    analysis = Path(analysed.output_dir)
    shutil.copytree(evaluated.embeddings_dir, dst / records.EMBEDDINGS_DIR)
    shutil.copytree(analysis / records.METRICS_DIR, dst / records.METRICS_DIR)
    shutil.copytree(analysis / records.MAPS_DIR, dst / records.MAPS_DIR)
    evaluation = Path(evaluated.output_dir) / records.EVALUATION_FILE
    shutil.copy2(evaluation, dst / records.METRICS_DIR / records.EVALUATION_FILE)
    return dst


def run_plain_sweep(
    data_dir: Path,
    fractions: Sequence[float],
    seeds: Sequence[int],
    config: ChexflowConfig,
    workdir: Path,
    compare: bool = True,
    include_reference: bool = True,
    callbacks: Sequence[Any] = (),
) -> dict[str, str]:
    """Fine-tune, embed and analyse every fraction × seed (and the 0% reference), then
    write the comparison report."""
    from chexflow.comparison import load_run_record
    from chexflow.report import write_report

    workdir = Path(workdir).resolve()
    runs: list[tuple[str, float, int, Path]] = []
    for fraction in fractions:
        for seed in seeds:
            name = records.finetune_run_name(fraction, seed)
            prepared = pipeline.prepare_data(data_dir, config.data, fraction, seed, workdir)
            trained = pipeline.train_model(
                prepared,
                config.data,
                config.model,
                config.train,
                workdir,
                callbacks=callbacks,
                progress=False,
            )
            evaluated = pipeline.evaluate_and_embed(
                prepared,
                trained,
                config.data,
                config.model,
                config.train,
                workdir,
                progress=False,
            )
            analysed = pipeline.analyse_run(
                Path(evaluated.embeddings_dir),
                config.analysis,
                Path(evaluated.output_dir) / "analysis",
                name,
                seed,
            )
            directory = _as_run_directory(evaluated, analysed, workdir / "runs" / name)
            runs.append((name, fraction, seed, directory))
    if include_reference:
        prepared = pipeline.prepare_data(data_dir, config.data, 0.0, 0, workdir)
        evaluated = pipeline.evaluate_and_embed(
            prepared, None, config.data, config.model, config.train, workdir, progress=False
        )
        analysed = pipeline.analyse_run(
            Path(evaluated.embeddings_dir),
            config.analysis,
            Path(evaluated.output_dir) / "analysis",
            "initial backbone (0%)",
            0,
        )
        directory = _as_run_directory(
            evaluated, analysed, workdir / "runs" / records.REFERENCE_RUN_NAME
        )
        runs.append((records.REFERENCE_RUN_NAME, 0.0, 0, directory))
    if not compare:
        return {}
    loaded = [
        load_run_record(name, _tags(name, f, s, config.model.name), directory)
        for name, f, s, directory in runs
    ]
    return {k: str(v) for k, v in write_report(loaded, workdir / records.REPORT_DIR).items()}


def _tags(name: str, fraction: float, seed: int, model: str) -> dict[str, str]:
    """The tags the flows would have given the run (what ``load_run_record`` reads)."""
    if name == records.REFERENCE_RUN_NAME:
        return {records.KIND_TAG: "reference", **records.reference_tags(model, "", "")}
    tags = records.finetune_tags(fraction, seed, model, "", "", "")
    return {records.KIND_TAG: "finetune", **tags}


class FirstStep:
    """Training callback: the wall-clock time (``time.time()``) of the first optimiser step."""

    def __init__(self) -> None:
        self.at: float | None = None

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if self.at is None:
            self.at = time.time()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--fractions", default="0.01,0.1")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workdir", type=Path, default=Path(".chexflow-plain"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = load_config(None, args.overrides)
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    first_step = FirstStep()
    paths = run_plain_sweep(
        args.data, fractions, seeds, config, args.workdir, callbacks=[first_step]
    )
    print(f"report: {paths.get('html')}")
    print(f"first training step at {first_step.at}")


if __name__ == "__main__":
    main()
