"""docs/BENCHMARKS.md parts for whole commands, threads and the scale on paper.

Every measured number is read from ``bench/results/*.json``; the constants below are the
workload's (CheXpert and ``configs/chexpert-gpu.yaml``) and the one published throughput
the GPU estimate starts from, each named where it is used.
"""

from __future__ import annotations

from typing import Any

# The workload on paper: CheXpert v1.0 training set, frontal images only, and
# configs/chexpert-gpu.yaml (holdout 5% / validation 2% of patients, 10 epochs,
# t-SNE seeds 0,1,2 x perplexities 30,100), swept over 1/10/100% x 3 seeds.
CHEXPERT_FRONTAL = 191_027
HOLDOUT, VALIDATION = 0.05, 0.02
EPOCHS = 10
FRACTIONS = (0.01, 0.10, 1.00)
SEEDS = 3
TSNE_MAPS = 6
IMAGE_SIZE = 320
FORWARD_SHARE = 1 / 3  # a forward pass ~ a third of a training step (forward + backward)
# timm's published DenseNet-121 training throughput (bench_gpu.PUBLISHED_TRAIN: RTX 3090,
# fp16, channels-last, 224 px), scaled to 320 px by the pixel count.
PUBLISHED_224 = 913.65


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _s(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def commands_tables(doc: dict[str, Any]) -> list[str]:
    """The start-up breakdown and the imports before the first step, as tables."""
    results = doc.get("results", {})
    startup = results.get("startup")
    lines: list[str] = []
    sweep = results.get("sweep", {})
    if sweep:
        lines += [
            "| whole process (medians) | start to exit, s | CPU, s | start to first step, s |",
            "|---|---|---|---|",
        ]
        before = results.get("before_commit")
        for key, label in (
            ("plain", "`python -m bench.plain_sweep`"),
            ("warm", "`chexflow sweep`, warm PREFECT_HOME"),
            ("cold", "`chexflow sweep`, cold PREFECT_HOME"),
            ("before_warm", f"`chexflow sweep` at {before}, warm PREFECT_HOME"),
            ("before_cold", f"`chexflow sweep` at {before}, cold PREFECT_HOME"),
        ):
            row = sweep.get(key)
            if row is None:
                continue
            lines.append(
                f"| {label} | {_s(_get(row, 's', 'median'))} | {_s(_get(row, 'cpu_s', 'median'))} "
                f"| {_s(_get(row, 'first_step_s', 'median'))} |"
            )
        lines.append("")
    if startup:
        lines += [
            "Where the time before the first step goes (one warm `chexflow sweep` under "
            "`bench.startup_probe`, `python -X importtime`; the probe's own import hook and "
            "importtime's bookkeeping add a little):",
            "",
            "| phase | s | ends at s |",
            "|---|---|---|",
        ]
        lines += [
            f"| {p['phase']} | {p['s']:.2f} | {p['ends_at_s']:.2f} |" for p in startup["phases"]
        ]
        imports = startup["imports_before_first_step"]
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in imports["by_package_s"].items())
        lines += [
            "",
            f"Imports in the main thread before the first step: {imports['total_s']:.1f} s "
            f"({ranked} s).",
            "",
        ]
    lines += startup_findings(results)
    threads = results.get("threads")
    if threads:
        lines += ["| `chexflow sweep`, train.threads | start to exit (median s) | runs |"]
        lines.append("|---|---|---|")
        for key in (k for k in threads if k != "runs"):
            samples = _get(threads, key, "s", "samples") or []
            lines.append(
                f"| {key} | {_s(_get(threads, key, 's', 'median'))} "
                f"| {', '.join(f'{x:.1f}' for x in samples)} |"
            )
        lines.append("")
    return lines


def threads_section(results: dict[str, dict[str, Any] | None]) -> list[str]:
    """How chexflow sets its threads and loader workers, with the figures behind it."""
    training = results.get("training") or {}
    resnet18 = results.get("training_resnet18") or {}

    def two_over_one(doc: dict[str, Any]) -> str:
        for fig in doc.get("figures", []):
            if fig["name"].startswith("compute-only, 2 threads"):
                return _s(fig["value"], 2)
        return "—"

    threads = _get(results.get("commands"), "results", "threads") or {}
    pinned = [k for k in threads if k not in ("automatic", "runs")]
    measured = (
        f"In section 9, `chexflow sweep` took {_s(_get(threads, 'automatic', 's', 'median'))} "
        "s with the automatic setting, "
        + ", ".join(
            f"{_s(_get(threads, k, 's', 'median'))} s pinned to train.threads={k}" for k in pinned
        )
        + " (whole processes, rotating order, at the load in that section's machine line)."
        if threads
        else "Section 9's threads comparison has not been run yet (`--threads`)."
    )
    return [
        "## Threads and loader workers",
        "",
        "`chexflow.runtime.configure` sets torch's intra-op and inter-op threads, the "
        "BLAS/OpenMP libraries already loaded (threadpoolctl) and `OMP_NUM_THREADS`, "
        "`OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS` (libraries loaded later, child "
        "processes) from `train.threads`, and the DataLoader's workers from "
        "`train.num_workers`. Both default to null, automatic:",
        "",
        "- **threads**: `OMP_NUM_THREADS` when the user set it; otherwise the usable cores "
        "(`os.sched_getaffinity`) minus those other processes keep busy (all cores' busy "
        "time in /proc/stat over 0.1 s, less this process's own CPU time; a core counts "
        "from half a core of load) minus one per loader worker, at least 1. Inter-op "
        "threads: the same, at most 4.",
        "- **num_workers**: 0 on CPU (a batch is one gather and normalisation from the "
        "in-memory uint8 cache: the real loader ran at "
        f"{_s(_get(training, 'results', 'ratio_real_to_compute', 'median'), 3)}× the "
        "compute-only throughput with 0 workers), min(4, cores // 2) on CUDA (the step "
        "leaves the CPU idle; workers prepare and augment the next batches).",
        "",
        "Why: torch starts one thread per core whether or not the cores are free. On this "
        "2-core machine shared with other work, two threads ran compute-only training "
        f"steps at {two_over_one(training)}× the images/s of one (section 1); in the "
        f"quieter resnet18 run two threads were {two_over_one(resnet18)}× as fast as one "
        "(section 1b). Neither fixed value is right on both, so the automatic value looks "
        f"at the load when the command starts. {measured} The CPU benchmarks of sections "
        "1-7 pin one thread so that their ratios compare like with like.",
        "",
    ]


def scale_section(results: dict[str, dict[str, Any] | None]) -> list[str]:
    """Full CheXpert on one 8-GPU node and on a pool of GPU hosts, from per-image costs."""
    scaling = results.get("scaling") or {}
    per_size = _get(scaling, "results", "analysis", "per_size") or {}
    at_10k = per_size.get("10000", {})
    tsne_10k = _get(at_10k, "stages_s", "tsne", "median")
    total_10k = _get(at_10k, "total_s", "median")
    training = results.get("training") or {}
    decode = _get(training, "results", "image_cache", "decode_images_per_s")
    decode_size = _get(training, "settings", "image_size") or 64

    pool = round(CHEXPERT_FRONTAL * (1 - HOLDOUT - VALIDATION))
    eval_n = round(CHEXPERT_FRONTAL * HOLDOUT)
    val_n = round(CHEXPERT_FRONTAL * VALIDATION)
    per_fraction = {f: round(f * pool) for f in FRACTIONS}
    train_passes = {f: n * EPOCHS for f, n in per_fraction.items()}
    sweep_train = SEEDS * sum(train_passes.values())
    runs = SEEDS * len(FRACTIONS)
    val_equiv = runs * EPOCHS * val_n * FORWARD_SHARE
    eval_equiv = (runs + 1) * eval_n * FORWARD_SHARE
    sweep_total = sweep_train + val_equiv + eval_equiv
    rate = PUBLISHED_224 * (224 / IMAGE_SIZE) ** 2
    gpu_h = sweep_total / rate / 3600
    run_s = {
        f: (p + EPOCHS * val_n * FORWARD_SHARE + eval_n * FORWARD_SHARE) / rate
        for f, p in train_passes.items()
    }
    longest_min = run_s[1.0] / 60
    node_util = gpu_h / (8 * longest_min / 60)
    analysis_run = (total_10k - tsne_10k) + TSNE_MAPS * tsne_10k if tsne_10k and total_10k else None
    cache_gb = CHEXPERT_FRONTAL * IMAGE_SIZE**2 / 1e9
    full_run_gb = (per_fraction[1.0] + val_n) * IMAGE_SIZE**2 / 1e9
    decode_320 = decode * (decode_size / IMAGE_SIZE) ** 2 if decode else None

    lines = [
        "## Scale on paper: full CheXpert",
        "",
        "An extrapolation, not a measurement: **the GPU figure is still unmeasured** (no "
        "GPU was lent to the session that wrote this; `python -m bench.bench_gpu --quick` "
        "on a CUDA machine replaces the assumed rate below with a measured one). Workload: "
        f"{CHEXPERT_FRONTAL:,} frontal images, `configs/chexpert-gpu.yaml` (DenseNet-121 at "
        f"{IMAGE_SIZE} px, {EPOCHS} epochs, holdout {HOLDOUT:.0%} and validation "
        f"{VALIDATION:.0%} of patients, {TSNE_MAPS} t-SNE maps per run), fractions 1/10/100% "
        f"× {SEEDS} seeds = {runs} fine-tunes + the 0% reference.",
        "",
        "| quantity | arithmetic | value |",
        "|---|---|---|",
        f"| training pool | {CHEXPERT_FRONTAL:,} × (1 − {HOLDOUT} − {VALIDATION}) | "
        f"{pool:,} images |",
        f"| evaluation / validation sets | {CHEXPERT_FRONTAL:,} × {HOLDOUT} / × {VALIDATION} "
        f"| {eval_n:,} / {val_n:,} images |",
        "| training images per run, 1 / 10 / 100% | fraction × pool | "
        + " / ".join(f"{n:,}" for n in per_fraction.values())
        + " |",
        f"| training passes per sweep | {SEEDS} seeds × {EPOCHS} epochs × "
        f"{sum(per_fraction.values()):,} | {sweep_train / 1e6:.2f} M |",
        f"| + validation and evaluation, as training-step equivalents (a forward pass ≈ "
        f"{FORWARD_SHARE:.2f} step) | {runs} × {EPOCHS} × {val_n:,} × ⅓ + {runs + 1} × "
        f"{eval_n:,} × ⅓ | {(val_equiv + eval_equiv) / 1e6:.2f} M |",
        f"| assumed GPU rate, DenseNet-121 {IMAGE_SIZE} px bf16 | timm's published "
        f"{PUBLISHED_224} img/s at 224 px (RTX 3090) × (224/{IMAGE_SIZE})² | "
        f"{rate:.0f} img/s per GPU |",
        f"| GPU time per sweep | {sweep_total / 1e6:.2f} M / {rate:.0f} img/s | "
        f"{gpu_h:.1f} GPU-hours |",
        "| one run, 1 / 10 / 100% | its passes / rate | "
        + " / ".join(f"{s / 60:.1f}" for s in run_s.values())
        + " min |",
        f"| CPU analysis per run (t-SNE maps, metrics) | measured at 10k points on 2 cores "
        f"(section 7): {_s(total_10k)} s with one map of {_s(tsne_10k)} s; "
        f"{TSNE_MAPS} maps | {_s(analysis_run, 0)} s on 2 cores |",
        f"| preprocessed-image cache | {CHEXPERT_FRONTAL:,} × {IMAGE_SIZE}² bytes | "
        f"{cache_gb:.1f} GB (decoded once, shared by the runs of a workdir) |",
        f"| decoding it | measured {_s(decode, 0)} img/s at {decode_size} px on 2 cores "
        f"(section 1), × ({decode_size}/{IMAGE_SIZE})² for the pixels | ~{_s(decode_320, 0)} "
        f"img/s on 2 cores: {_s(CHEXPERT_FRONTAL / decode_320 / 60 if decode_320 else None, 0)} "
        "min once (unmeasured on real 390×320 JPEGs) |",
        f"| a 100% run's images in RAM | ({per_fraction[1.0]:,} + {val_n:,}) × {IMAGE_SIZE}² "
        f"bytes | {full_run_gb:.1f} GB per run process |",
        "",
        f"**One 8-GPU node.** {runs} runs on 8 GPUs, one run per GPU (a run does not use "
        "several GPUs): the sweep takes as long as its longest run, a 100% fine-tune "
        f"(~{longest_min:.0f} min at the assumed rate), while the GPUs are busy for "
        f"{gpu_h:.1f} of the {8 * longest_min / 60:.1f} GPU-hours the node is held "
        f"({node_util:.0%}). The bottleneck is the single 100% run: "
        "without data-parallel training of one run, more GPUs do not shorten it. Next in "
        f"line are host RAM (three 100% runs hold {3 * full_run_gb:.0f} GB of images, "
        "each process its own copy) and the CPU: each run's analysis "
        f"(~{_s(analysis_run, 0)} s on 2 cores, less on a node's cores) follows its "
        "training while its GPU idles, and 8 GPUs at the assumed rate need "
        f"{8 * rate:,.0f} augmented images/s from the loader workers.",
        "",
        "**A pool of GPU hosts** (Prefect work pool, `--dispatch deployment`, one flow run "
        "per fine-tune). The 9 runs spread over 9 hosts finish in the time of a 100% run "
        f"plus its analysis; the sweep is then ~{longest_min:.0f} min from 4 hosts on "
        "(three for the 100% runs, one for the six others: "
        f"{SEEDS * (run_s[0.01] + run_s[0.1]) / 60:.0f} min), and more seeds or fractions "
        "add runs without lengthening it while hosts are free. Each host needs the "
        "dataset (11 GB for "
        "CheXpert-v1.0-small) and decodes its own image cache unless the workdir is on "
        "shared storage; the MLflow server receives each run's checkpoint and embeddings "
        f"({eval_n:,} × 1,024 float32 ≈ {eval_n * 1024 * 4 / 1e6:.0f} MB) — small against "
        "the hour of training. The bottleneck stays the longest run; with fewer hosts it is "
        "the GPU-hours themselves.",
        "",
    ]
    return lines


def startup_findings(results: dict[str, Any]) -> list[str]:
    """What the breakdown says about the goals (ratio <= 1.3, first step <= 10 s)."""
    startup, sweep = results.get("startup"), results.get("sweep", {})
    if not startup:
        return []
    phases = {p["phase"]: p["s"] for p in startup["phases"]}
    first = next((p["ends_at_s"] for p in startup["phases"] if p["phase"] == "first step"), None)
    before_first: list[tuple[str, float]] = []
    for p in startup["phases"]:
        before_first.append((p["phase"], p["s"]))
        if p["phase"] == "first step":
            break
    ranked = sorted(before_first, key=lambda kv: -kv[1])[:4]
    imports = startup["imports_before_first_step"]["by_package_s"]
    plain_first = _get(sweep, "plain", "first_step_s", "median")
    before_first_step = _get(sweep, "before_warm", "first_step_s", "median")
    warm_first_step = _get(sweep, "warm", "first_step_s", "median")
    before_commit = results.get("before_commit")
    against_before = (
        f" In the same rounds the CLI at {before_commit} (warm home) reached its first step "
        f"at {_s(before_first_step)} s and this one at {_s(warm_first_step)} s (medians)."
        if before_commit and before_first_step and warm_first_step
        else ""
    )
    return [
        "- **Before the first step.** In the probed run the first step ended "
        f"{_s(first)} s after the command started (the plain script's: {_s(plain_first)} s, "
        "median). The largest phases: "
        + "; ".join(f"{name} {sec:.1f} s" for name, sec in ranked)
        + ". Of the imports in the command's process, torch took "
        f"{_s(imports.get('torch'), 2)} s of its own time, timm {_s(imports.get('timm'), 2)} s "
        "(timm's layers import torchvision's operators, which import torch._dynamo), "
        f"MLflow {_s(imports.get('mlflow'), 2)} s, Prefect {_s(imports.get('prefect'), 2)} s; "
        f"Prefect's server package {_s(imports.get('prefect.server', 0.0), 2)} s. Every phase "
        "grows with the machine's load (the figures above were measured at the load "
        "averages in the machine line).",
        "- **What the commands do about it.** The temporary API's process starts with the "
        "command (`flows/temporary_api.py`, `flows/api_process.py`): it imports Prefect's "
        "server (FastAPI, SQLAlchemy, the API's models: ~8 s of user CPU, below) while "
        "the command checks its input, in a home it cannot create, so bad input still "
        "starts nothing that lasts (`tests/test_faults.py::"
        "test_a_refused_command_stops_the_api_process_it_started`). Once the input is "
        "checked the command sends it the environment Prefect's `SubprocessASGIServer` "
        "would give it and reaches it by `PREFECT_API_URL`, so the command no longer "
        "imports Prefect's server itself (before, it did, and the API's process imported it "
        "again after the checks); heartbeats stay off and task-run records batched (the "
        "embedded mode). The comparison imports scikit-learn, SciPy and Matplotlib when it "
        "writes its report, not before the first step." + against_before + " A new "
        "workdir's Prefect and MLflow databases start from templates of migrated, empty "
        "ones kept in the user's cache (`flows/databases.py`, one per library version): "
        "creating an MLflow SQLite database ran its schema migrations one transaction and "
        "disk sync after another, 22-25 s of wall clock for 2.4 s of CPU on this machine at "
        "load ~12, and a copy took 0.9 s (measured by hand, not in a result file). "
        "`chexflow.runtime` sets the threads once the input is checked, not counting the "
        "API process's start-up as other work.",
        "- **What remains, and why.** The goal of 10 s to the first step is not met here. "
        "Before it the command's own process imports torch, timm, MLflow and Prefect and "
        "checks every image: 15.4 and 15.9 s of user CPU in two tries of just that (the "
        "imports and `check_run_inputs`, no Prefect API, no run; `/usr/bin/time` by hand at "
        "load ~0.8), and the API's process spends 7.8-8.3 s of user CPU importing Prefect's "
        "server beside it. The plain script, which imports neither Prefect nor MLflow, "
        f"reached its first step at {_s(plain_first)} s (median) in the same rounds. On 2 "
        "cores that other tenants keep about one core busy (load ~1 when this project runs "
        "nothing) that is more CPU than 10 s of wall clock holds. What is left "
        "to cut is in the libraries (timm needs torchvision, torchvision's operators "
        "import torch._dynamo: ~2.5 s) or would need a resident process, which the "
        "embedded mode does not have; `chexflow up`'s workers start a process per flow run "
        "too. The MLflow set-up, sweep run and fine-tune subflow start took "
        f"{_s(phases.get('MLflow set-up, sweep run, finetune subflow starts'))} s here.",
        "",
    ]
