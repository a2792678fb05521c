"""docs/BENCHMARKS.md from the result files in bench/results/ (run by ``bench.run_all``).

Every number in the document is read from a JSON file written by a benchmark; the prose
around them is here. ``python -m bench.run_all --report-only`` rewrites the document
without running anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.bench_orchestration import median_breakdown
from bench.common import load_average, machine_info, now_utc
from bench.report_commands import commands_tables, scale_section, threads_section

SUITE_FILE = "suite.json"
LARGE_ONLY = ("training_resnet18", "orchestration_demo", "analysis_100k")
# Targets whose benchmark may be absent (large-only) or skipped (no GPU): listed anyway.
EXPECTED_TARGETS = [
    ("gpu", "real loader / compute-only (bf16, channels-last)", ">= 0.9"),
    ("analysis_100k", "all cluster metrics, 100000 x 512", "< 120 s"),
]

# (result file stem, title, what it measures)
SECTIONS: list[tuple[str, str, str]] = [
    (
        "training",
        "1. Training input pipeline",
        "End-to-end training throughput (`train_epoch` over the real `ChexpertImages` + "
        "`make_loader` built by `pipeline.build_dataset` from `load_images`) against a "
        "compute-only loop (same model, batch and `TrainStep`, random tensors on the device).",
    ),
    (
        "training_resnet18",
        "1b. Training input pipeline, resnet18 at 128 px (`--large`)",
        "As above with a heavier model and larger images.",
    ),
    (
        "orchestration",
        "2. Orchestration + tracking overhead",
        "`flows.sweep.sweep` (Prefect flows on the temporary local API, MLflow on SQLite) "
        "against `bench/plain_sweep.py` (the same `chexflow.pipeline` steps and report, no "
        "Prefect, no MLflow), fresh workdirs, in paired runs after the API start; plus the "
        "one-time costs (API start cold/warm, `import prefect`, one flow run, a new MLflow DB).",
    ),
    (
        "orchestration_demo",
        "2b. Orchestration overhead at the demo's workload (`--large`)",
        "As above with `chexflow demo`'s data and configuration (3,000 patients at 64 px, "
        "resnet10t, 12 epochs, fractions 1% and 10%).",
    ),
    (
        "tracking",
        "3. Tracking cost per training step",
        "Seconds inside `BatchedMetricLogger` (per-step buffering, `log_batch` flushes) over "
        "the training loop's wall time, against SQLite and a local `mlflow server --workers 1`.",
    ),
    (
        "analysis",
        "4–5. Projection and metrics at scale",
        "openTSNE (`projection.tsne`) against scikit-learn's `TSNE` on the same PCA-50 input "
        "(paired runs); with `--large`, 50k points and `analyse_embeddings` on 100k × 512.",
    ),
    (
        "analysis_100k",
        "4–5b. t-SNE at 50k and the analysis stage at 100k × 512 (`--large`)",
        "The t-SNE race at 50k points, and `analyse_embeddings` on 100k points: its wall "
        "time, and all cluster metrics without the t-SNE map (target under 2 minutes).",
    ),
    (
        "gpu",
        "6. GPU fine-tune (bf16, channels-last)",
        "One fraction fine-tuned on 320 px synthetic CheXpert; real loader (on CUDA uint8 "
        "batches from pinned memory, normalised on the GPU) vs compute-only and vs the previous "
        "float32 path; timm's train-benchmark method on the same machine and timm's published "
        "number.",
    ),
    (
        "scaling",
        "7. Scaling with the evaluation-set size and the training fraction",
        "Each stage's time against its size; the observed complexity is the log-log slope.",
    ),
    (
        "commands",
        "9. Whole commands: start to exit, and the time to the first training step",
        "What a user waits for, as whole processes in fresh workdirs (imports, the Prefect "
        "API, a new MLflow database, the work, the exit): `chexflow sweep` on a small "
        "workload (one fraction, the 0% reference, the comparison) against `python -m "
        "bench.plain_sweep` on the same data and settings, in rounds of three runs in "
        "rotating order (plain, command with a used `PREFECT_HOME`, command with a new one "
        "in the workdir, the CLI's default); `chexflow demo --quick`; the time from the "
        "command's start to its first training step (the timestamp of the run's first "
        "`train_loss_step` metric in MLflow); and where that time goes.",
    ),
    (
        "augment",
        "10. Augmentation and pretraining cost",
        "CPU time per image of `train.augment` (`ChexpertImages(augment=True)` against the "
        "same batch without) and of SimCLR's two views at 64 and 320 px, one thread; one "
        "pretraining step of resnet10t at 64 px; with `--demo-data`, the demo's whole "
        "pretraining (its `pretrain` section, 2 threads) against its 60 s CPU share.",
    ),
    (
        "demo",
        "11. The full demo, start to exit",
        "`chexflow demo` as after a fresh clone: a fresh workdir and user cache, the dataset "
        "written, the backbone pretrained, both fractions fine-tuned, the 0% reference and the "
        "comparison; phases from the MLflow runs' start and end times.",
    ),
    (
        "overlap",
        "12. Overlapped analysis: the device's idle share in a sweep",
        "Whole `chexflow sweep` commands (three fractions, the 0% reference, the comparison), "
        "`--overlap` (fine-tune k+1 trains while k is analysed; the default on CUDA) against "
        "`--no-overlap` (the default on a CPU), alternating; the idle share is the part of "
        "the sweep flow run's wall time in which no `train` or `evaluate-and-embed` task "
        "runs (Prefect's records).",
    ),
]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.4g}"
    return str(value)


def machine_line(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    versions = m.get("versions", {})
    load = doc.get("load_average", {})
    gpu = m.get("gpu") or "no GPU"
    return (
        f"{m.get('cpu_model', '?')}, {m.get('usable_cores', '?')} cores usable "
        f"({m.get('memory_gib', '?')} GiB), {gpu}; torch {versions.get('torch', '?')}, "
        f"numpy {versions.get('numpy', '?')}; load average before {load.get('before')} "
        f"→ after {load.get('after')}; {doc.get('date', '?')}"
    )


def figures_table(doc: dict[str, Any]) -> list[str]:
    rows = ["| figure | value | target | met |", "|---|---|---|---|"]
    for fig in doc.get("figures", []):
        met = fig.get("met")
        mark = "" if "target" not in fig else ("✅ met" if met else "❌ missed")
        value = f"{_fmt(fig['value'])} {fig['unit']}".strip()
        rows.append(f"| {fig['name']} | {value} | {fig.get('target', '')} | {mark} |")
    return rows


def section(doc: dict[str, Any] | None, title: str, about: str) -> list[str]:
    lines = [f"### {title}", "", about, ""]
    if doc is None:
        return [*lines, "_Not run yet._", ""]
    if doc.get("skipped"):
        return [
            *lines,
            f"**Skipped:** {doc.get('reason')}.",
            "",
            f"Command: `{doc['command']}`  ",
            f"Machine: {machine_line(doc)}",
            "",
        ]
    settings = doc.get("settings", {})
    shown = ", ".join(
        f"{k}={v}" for k, v in settings.items() if isinstance(v, int | float | str | bool)
    )
    extra = {"scaling": scaling_tables, "commands": commands_tables}.get(
        doc.get("benchmark", ""), lambda _doc: []
    )(doc)
    return [
        *lines,
        *figures_table(doc),
        "",
        *extra,
        f"Command: `{doc['command']}`  ",
        f"Machine: {machine_line(doc)}  ",
        f"Settings: {shown}",
        "",
    ]


def scaling_tables(doc: dict[str, Any]) -> list[str]:
    """Seconds per stage and size, with each row's log-log slope."""
    results = doc["results"]
    evaluation, analysis = results["evaluation"], results["analysis"]
    sizes = list(analysis["per_size"])
    lines = [
        "| stage (median s) | " + " | ".join(f"n={n}" for n in sizes) + " | slope |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    seconds = evaluation["seconds"]
    lines.append(
        "| evaluate + embed (one pass) | "
        + " | ".join(_fmt(_get(seconds, n, "median")) for n in sizes)
        + f" | {_fmt(evaluation['loglog_slope'])} |"
    )
    for stage in ("total", *analysis["per_size"][sizes[0]]["stages_s"]):
        row = [
            _get(analysis["per_size"], n, "total_s" if stage == "total" else "stages_s")
            for n in sizes
        ]
        values = [r["median"] if stage == "total" else _get(r, stage, "median") for r in row]
        lines.append(
            f"| analysis: {stage} | "
            + " | ".join(_fmt(v) for v in values)
            + f" | {_fmt(analysis['loglog_slope'].get(stage))} |"
        )
    training = results["training_fraction"]
    fractions = list(training["per_fraction"])
    lines += [
        "",
        "| training fraction | " + " | ".join(fractions) + " | slope |",
        "|---|" + "---|" * (len(fractions) + 1),
        "| training images | "
        + " | ".join(str(training["per_fraction"][f]["train_images"]) for f in fractions)
        + " | |",
    ]
    for key, label in (("prepare_s", "prepare"), ("train_1_epoch_s", "train_1_epoch")):
        lines.append(
            f"| {label} (median s) | "
            + " | ".join(_fmt(training["per_fraction"][f][key]["median"]) for f in fractions)
            + f" | {_fmt(training['loglog_slope'].get(label))} |"
        )
    return [*lines, ""]


def _get(doc: dict[str, Any] | None, *keys: str) -> Any:
    node: Any = doc
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def optimised_section(results: dict[str, dict[str, Any] | None]) -> list[str]:
    orch, scaling = results.get("orchestration"), results.get("scaling")
    steady = _get(orch, "results", "steady_state") or {}
    one = _get(orch, "results", "one_time") or {}
    before_after = _get(scaling, "results", "evaluation", "before_after") or {}
    lines = [
        "## What we optimised and why",
        "",
        "Before/after pairs below come from the same run of the same benchmark "
        "(same process, adjacent runs), so machine load affects both alike.",
        "",
        "| change | measure | before | after |",
        "|---|---|---|---|",
        "| flow heartbeats off without a Prefect server "
        "(`flows/embedded.py`, used by `chexflow` commands) "
        f"| one flow run with one task | {_fmt(_get(one, 'flow_run_default_s', 'median'))} s "
        f"| {_fmt(_get(one, 'flow_run_embedded_s', 'median'))} s |",
        "| same | sweep / plain pipeline (orchestration benchmark) "
        f"| {_fmt(_get(steady, 'ratio_before_to_plain', 'median'))} "
        f"| {_fmt(_get(steady, 'ratio_sweep_to_plain', 'median'))} |",
        "| task-run records in batches on the embedded mode's temporary API "
        "(`flows/embedded.py`) "
        "| 3 subflows × 5 tasks, no heartbeats: one run "
        f"({_fmt(one.get('subflows_prefect_default_retries'))} / "
        f"{_fmt(one.get('subflows_embedded_retries'))} API retries) "
        f"| {_fmt(_get(one, 'subflows_prefect_default_s', 'median'))} s "
        f"| {_fmt(_get(one, 'subflows_embedded_s', 'median'))} s |",
        "| comparison downloads by artifact URI (`Tracker.download`, `tasks/compare.py`) "
        f"| download {_fmt(_get(steady, 'compare_download', 'runs'))} runs' artifacts "
        f"| {_fmt(_get(steady, 'compare_download', 'by_run_id_s', 'median'))} s "
        f"| {_fmt(_get(steady, 'compare_download', 'by_uri_s', 'median'))} s |",
        "| start-up heap frozen before a flow runs (`cli._freeze_startup_heap`) "
        "| one full garbage collection after the CLI's imports "
        f"({_fmt(one.get('full_collection_objects'))} objects) "
        f"| {_fmt(_get(one, 'full_collection_s', 'median'))} s "
        f"| {_fmt(_get(one, 'full_collection_frozen_s', 'median'))} s |",
        "| evaluation in one backbone pass (`embed.predict_and_embed`, used by "
        "`pipeline.evaluate_and_embed`) "
        f"| evaluate + embed {before_after.get('n', '?')} images "
        f"| {_fmt(_get(before_after, 'two_passes_s', 'median'))} s "
        f"| {_fmt(_get(before_after, 'one_pass_s', 'median'))} s |",
        "",
        "- **Flow heartbeats.** Prefect 3 starts a heartbeat thread for every flow run and "
        "joins it when the run ends; the thread sleeps in 1 s steps, so each flow run and "
        "subflow waited up to a second for it. A sweep of two fractions is five flow runs "
        "(sweep, two fine-tunes, the 0% reference, compare). Heartbeats serve a server that "
        "outlives the process (crash detection); the embedded mode's temporary API dies "
        "with the process, so the CLI turns them off there and only there (with "
        "`PREFECT_API_URL` set — `chexflow up`, workers — they stay on).",
        "- **Task-run records in batches.** Prefect's task-run recorder (a service of the "
        "API) writes each task-run event in its own SQLite transaction. Those writes collide "
        "with the flow's own API calls (creating flow runs, changing their states); the API "
        "then answers 503 (SQLITE_BUSY) and Prefect's client waits ~2 s before retrying "
        "(exponential back-off, no setting to shorten it). In a sweep this showed up as "
        "0-3 stalls of ~2 s at random, the largest and noisiest part of the overhead "
        "(sweep/plain pairs 1.135, 1.008, 1.734 in the previous run). The embedded "
        "mode's temporary API now records task runs in batches of up to 200, flushed "
        "every 5 s and when it stops: "
        "the figure in section 2 counts the retries per sweep, and `tests/test_embedded.py` "
        "checks that every task run a command logged is in the database when it returns. "
        "`chexflow up`'s server keeps Prefect's settings (its UI shows task runs live), and "
        "so does the tests' shared API: with three processes and a `kill -9` against it, "
        "batched recording stalled runs for 60-80 s in 5 of 8 tries (not understood; not "
        "seen with two embedded commands sharing a workdir, 2 tries).",
        "- **Downloads by artifact URI.** `MlflowClient.download_artifacts(run_id, path)` "
        "reads the run again for every path to find its artifact root; on SQLite a "
        "fine-tune run with a few hundred metrics took ~0.1 s per read, and the comparison "
        "made nine (0.94 s of a 3 s overhead in a profile before the change). `select-runs` "
        "already has each run's `artifact_uri` from `search_runs`, so `download-run` uses it.",
        "- **Frozen start-up heap.** Importing torch, timm, Prefect and MLflow leaves ~0.5M "
        "objects that live as long as the process; each full garbage collection re-scanned "
        "them, and a run's lazy imports (2,700 modules, from sympy via torch to alembic via "
        "MLflow) double the heap. `gc.freeze()` before the flow runs takes the start-up "
        "objects out of the collector (the steady-state sweeps above run frozen too, as the "
        "CLI does); what the run itself allocates is still collected, and the breakdown in "
        "section 2 shows what full collections still cost per sweep.",
        "- **One pass for evaluation.** `evaluate_and_embed` ran the evaluation set through "
        "the model twice (`predict`, then `extract_embeddings`). timm models compute "
        "`model(x)` as `forward_head(forward_features(x))`, so the logits and the pre-logits "
        "embedding come from the same backbone features: half the forward passes, identical "
        "numbers (`tests/test_bench.py` checks equality). Estimate, not measured: at 1% with "
        "`configs/chexpert-gpu.yaml` (5% of CheXpert's patients held out, ~9.5k frontal "
        "images) the second pass was ~8% of the run's forward-pass equivalents (training "
        "counted as 3 per image over 10 epochs, validation included).",
        "",
    ]
    return lines


def complexity_lines(scaling: dict[str, Any] | None) -> list[str]:
    """The complexity each stage shows on the scaling curve, when it reaches 100k."""
    results = _get(scaling, "results") or {}
    per_size = _get(results, "analysis", "per_size") or {}
    if "100000" not in per_size or "50000" not in per_size:
        return []
    import math

    def local(stage: str) -> str:
        a, b = (_get(per_size, n, "stages_s", stage, "median") for n in ("50000", "100000"))
        return _fmt(round(math.log(b / a) / math.log(2), 2)) if a and b else "—"

    tail = _get(results, "analysis", "loglog_slope_from_10k") or {}
    rate = _get(results, "evaluation", "images_per_s") or []
    return [
        "- **Observed complexity, 1k → 100k.** Evaluate + embed is linear (slope "
        f"{_fmt(_get(results, 'evaluation', 'loglog_slope'))}; "
        f"{_fmt(min(rate, default=None))}–{_fmt(max(rate, default=None))} img/s at every "
        "size). From 10k on, the embedding-space metrics are linear "
        f"({_fmt(tail.get('embedding_metrics'))}: blocked distance products), the linear "
        "probe and the map metrics are flat "
        f"({_fmt(tail.get('linear_probe'))}, {_fmt(tail.get('map_metrics'))}: fixed "
        "subsamples), and t-SNE grows with slope "
        f"{_fmt(tail.get('tsne'))} overall but {local('tsne')} between 50k and 100k: "
        "openTSNE's FFT gradient is linear, the exact neighbour search "
        "(`projection.cosine_neighbours`, exact so a seed gives the same map on any machine) is "
        "quadratic and takes over near 100k. The analysis total is "
        f"{_fmt(_get(per_size, '100000', 'total_s', 'median'))} s at 100k, of which the "
        "embedding-space metrics "
        f"{_fmt(_get(per_size, '100000', 'stages_s', 'embedding_metrics', 'median'))} s "
        "(target for all cluster metrics: under 2 minutes). Training one epoch grows "
        "with the training images (slope "
        f"{_fmt(_get(results, 'training_fraction', 'loglog_slope', 'train_1_epoch'))}; the "
        "fixed validation pass keeps it under 1).",
    ]


def findings_section(results: dict[str, dict[str, Any] | None]) -> list[str]:
    training, orch, scaling = (results.get(k) for k in ("training", "orchestration", "scaling"))
    threads = _get(training, "results", "threads") or {}
    many = next((v for k, v in threads.items() if not k.startswith("1_")), {})
    one = threads.get("1_threads_images_per_s", {})
    start = _get(orch, "results", "one_time") or {}
    steady = _get(orch, "results", "steady_state") or {}
    breakdown = median_breakdown(steady.get("sweep_breakdown", []))
    per_size = _get(scaling, "results", "analysis", "per_size") or {}
    quiet = next(
        (
            f["value"]
            for f in (results.get("training_resnet18") or {}).get("figures", [])
            if f["name"].startswith("compute-only,")
        ),
        None,
    )

    large = _get(results.get("analysis_100k"), "results", "analysis_large") or {}

    def tsne_at(n: str, stage: str = "tsne") -> str:
        return _fmt(_get(per_size, n, "stages_s", stage, "median"))

    map_metrics_100k = (
        tsne_at("100000", "map_metrics")
        if "100000" in per_size
        else _fmt(_get(large, "stages_s", "map_metrics", "median"))
    )

    return [
        "## Findings not acted on (and why)",
        "",
        "- **Threads on shared cores.** Compute-only training steps with torch's default "
        f"threads ran at {_fmt(many.get('median'))} img/s (max/min over repeats "
        f"{_fmt(many.get('max_over_min'))}) against {_fmt(one.get('median'))} img/s on one "
        f"thread (max/min {_fmt(one.get('max_over_min'))}): on cores shared with other work "
        "OpenMP threads wait for each other"
        + (
            f" (in the quieter resnet18 run two threads were {_fmt(quiet)}× as fast as one)"
            if quiet
            else ""
        )
        + ". The CPU benchmarks therefore run with one torch "
        "thread (`torch_threads` in each file) and every ratio compares loops with the same "
        "setting. On a dedicated machine torch's default is right, so the library does not "
        "pin threads for training.",
        "- **Prefect API start.** A new `PREFECT_HOME` took "
        f"{_fmt(_get(start, 'api_start_cold_s', 'median'))} s (database migrations), a used "
        f"one {_fmt(_get(start, 'api_start_warm_s', 'median'))} s, of which "
        f"{_fmt(_get(start, 'server_module_import_s', 'median'))} s is importing Prefect's "
        "server modules (in the server process); `import prefect` itself is "
        f"{_fmt(_get(start, 'import_prefect_s', 'median'))} s. "
        "`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` is only an upper bound (the "
        "client polls every 0.1 s) and `PREFECT_API_DATABASE_MIGRATE_ON_START=false` changed "
        "nothing measurable on a used home (checked by hand). The CLI keeps `PREFECT_HOME` in "
        "the workdir, so only a workdir's first run pays the migrations; `chexflow up` avoids "
        "the start. Commands now start it as soon as their input is checked "
        "(`flows.embedded.start_temporary_api`: Prefect's `SubprocessASGIServer` singleton, "
        "in a thread), so it boots while the flows are imported: imports + API ready "
        f"{_fmt(_get(start, 'api_ready_sequential_s', 'median'))} s → "
        f"{_fmt(_get(start, 'api_ready_early_s', 'median'))} s on a used home. The gain is "
        "small because Prefect's server module has to be imported first, in the same "
        "thread (importing Prefect from two threads at once can meet a half-initialised "
        "module), and it is most of what remains to import; launching the server's "
        "process without it would copy Prefect's private uvicorn command line.",
        "- **The remaining sweep overhead** is "
        f"{_fmt(steady.get('overhead_s'))} s for two fractions and the reference. Measured "
        "inside the sweeps (medians): Prefect's engine around "
        f"{_fmt(breakdown.get('flow_runs'))} flow runs "
        f"{_fmt(breakdown.get('prefect_flow_engine_s'))} s (creating each run and two state "
        "changes through the local API, ~20 ms per request on SQLite) and around "
        f"{_fmt(breakdown.get('task_runs'))} task runs "
        f"{_fmt(breakdown.get('prefect_task_engine_s'))} s; "
        f"{_fmt(breakdown.get('mlflow_calls'))} MLflow calls "
        f"{_fmt(breakdown.get('mlflow_s'))} s; full garbage collections "
        f"{_fmt(breakdown.get('gc_full_s'))} s. The rest is spread thin (Prefect's "
        "background log and event threads taking the GIL, result records, run bookkeeping). "
        "Fewer, larger tasks would trade Prefect's per-step retries and UI states for "
        "milliseconds, so the flows keep their shape. It is a fixed cost per run, so the "
        "ratio falls as the work grows: the 10% budget holds for runs whose plain work takes "
        "longer than the figure in section 2 (the `--large` demo workload measures one).",
        *complexity_lines(scaling),
        "- **Scaling regimes.** The t-SNE stage changes regime twice within 1k–10k: "
        "`projection.tsne_threads` uses all cores from 5k points (`PARALLEL_MIN_POINTS`; on "
        "busy shared cores two threads can be slower than one) and openTSNE switches from "
        "Barnes–Hut to FFT interpolation at 10k (measured by hand on one thread: BH faster "
        "at 5k, FFT faster at 8k), so its slope mixes regimes. Map metrics grow faster than "
        f"linearly ({_fmt(_get(scaling, 'results', 'analysis', 'loglog_slope', 'map_metrics'))}) "
        "only until their subsample caps (5k points for trustworthiness, 10k for the 2-D "
        f"silhouette): {tsne_at('10000', 'map_metrics')} s at 10k, "
        f"{map_metrics_100k} s at 100k. Moving the "
        "switch points would change the maps, so they are left to the analysis owners.",
        "- **GPU input path (changed; the GPU figure is unmeasured).** On CUDA the loaders now "
        "yield uint8 batches from pinned memory (6.5 MB instead of 26 MB of float32 a batch at "
        "320 px, batch 64), copied with `non_blocking=True` and normalised on the GPU after the"
        " copy with the same formula (`dataset.input_path` decides, `evaluation.to_device` "
        "normalises through `dataset.normalise_pixels`). Augmented batches are jittered on the "
        "CPU in float as before and rounded back to 8 bits (at most half a grey level). On CPU "
        "batches stay float32, normalised in the loader and unpinned, bit-identical to before "
        "(`tests/test_input_path.py`): the uint8 path there only moves the same work into the "
        "step, and `bench_training --input-check` timed it at 0.98 and 1.05 times the float "
        "path's images per CPU second (two runs on the loaded 2-core machine, 2026-11-30: no "
        "difference beyond noise). No GPU was lent to the session that made the change: "
        "`bench_gpu` records the path it used (`settings.input_path`) and times the previous "
        "float32 path beside the real loader. Still to confirm on a GPU: the finetune flow's "
        "per-step logger makes `train_epoch` call `float(loss)` every step (a device sync per "
        "step), and chexflow leaves `cudnn.benchmark` off (timm's benchmark turns it on); "
        "`bench_gpu` measures the first against the plain loader and reports timm's method, so "
        "a GPU run shows whether any of them costs more than the 10% budget.",
        "",
    ]


def write_report(
    results_dir: Path, doc_path: Path, runtimes: dict[str, float], failed: list[str]
) -> None:
    """Write the Markdown document from every result file in ``results_dir``."""
    results_dir = Path(results_dir)
    suite_file = results_dir / SUITE_FILE
    suite = _load(suite_file) or {}
    if runtimes:
        # A full default run starts the record afresh; partial runs add to it.
        previous = suite.get("runtimes_s", {}) if "total" not in runtimes else {}
        suite = {
            "command": "python -m bench.run_all",
            "date": now_utc(),
            "machine": machine_info(),
            "load_average_end": load_average(),
            "runtimes_s": {**previous, **{k: round(v, 1) for k, v in runtimes.items()}},
            "failed": failed,
        }
        suite_file.write_text(json.dumps(suite, indent=2) + "\n")
    results = {stem: _load(results_dir / f"{stem}.json") for stem, _, _ in SECTIONS}
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run_all`) from `bench/results/*.json`; "
        "`python -m bench.run_all --report-only` rewrites it from the files. Each JSON file "
        "holds the command, the machine (CPU, cores, load average before and after, "
        "library versions, GPU), the date, the settings and repeats, every raw sample and "
        "the medians. Figures are medians after excluded warm-up runs; ratios are medians "
        "of paired runs measured back to back in alternating order. The machine's cores "
        "may be shared with other work: compare numbers within one file.",
        "",
        "Sizes: `make bench` runs the default suite (≤ ~25 min on 2 idle cores, ~10 of them "
        "the whole commands of section 9); "
        "`python -m bench.run_all --large` adds resnet18 at 128 px, the sweep at the demo's "
        "workload, the `chexflow sweep` command-line timings, the t-SNE race at 50k, the "
        "analysis stage at 100k and 20k, 50k and 100k on the scaling curve, and more "
        "rounds of the whole-command figures (section 9). The GPU benchmark "
        "writes `skipped` without CUDA; on a CUDA machine: "
        "`python -m bench.bench_gpu --quick` (< 5 min on one H100).",
        "",
    ]
    if suite.get("runtimes_s"):
        runtimes_row = ", ".join(
            f"{k} {v / 60:.1f} min" if k.startswith("total") else f"{k} {v:.0f} s"
            for k, v in suite["runtimes_s"].items()
        )
        lines += [
            f"Runtimes (last run {suite.get('date')}): {runtimes_row}"
            + (f"; failed: {', '.join(suite['failed'])}" if suite.get("failed") else "")
            + ".",
            "",
        ]
    lines += ["## Targets", "", "| benchmark | figure | value | target | met |"]
    lines.append("|---|---|---|---|---|")
    for stem, _title, _about in SECTIONS:
        doc = results.get(stem)
        for fig in (doc or {}).get("figures", []):
            if "target" in fig:
                mark = "✅ met" if fig.get("met") else "❌ missed"
                value = f"{_fmt(fig['value'])} {fig['unit']}".strip()
                lines.append(f"| {stem} | {fig['name']} | {value} | {fig['target']} | {mark} |")
    for stem, figure_name, target in EXPECTED_TARGETS:
        doc = results.get(stem)
        if doc is None or doc.get("skipped"):
            why = f"skipped: {doc.get('reason')}" if doc else "not run (`--large`)"
            lines.append(f"| {stem} | {figure_name} | — | {target} | {why} |")
    lines += ["", "## Results", ""]
    for stem, title, about in SECTIONS:
        if results.get(stem) is None and stem in LARGE_ONLY:
            continue
        lines += section(results.get(stem), title, about)
    lines += optimised_section(results)
    lines += findings_section(results)
    lines += threads_section(results)
    lines += scale_section(results)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text("\n".join(lines).rstrip() + "\n")
