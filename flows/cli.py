"""The `chexflow` command: synthesise data, fine-tune fractions, compare, run the demo.

Errors a user can fix print one line and exit with code 2. Flows are imported lazily,
after the environment (offline switches, Prefect home) is set for the workdir.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer

from chexflow import records
from chexflow.environment import apply_environment_defaults
from chexflow.errors import ChexflowError
from chexflow.files import missing_file
from chexflow.results import SweepResult
from flows.cli_common import (
    DEFAULT_WORKDIR,
    ConfigOpt,
    SetOpt,
    WorkdirOpt,
    configure_environment,
    parse_list,
    user_errors,
)
from flows.cli_stack import register as register_stack_commands

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])
data_app = typer.Typer(no_args_is_help=True, help="Inspect a CheXpert-format dataset.")
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        names = ("chexflow", "torch", "timm", "prefect", "mlflow")
        typer.echo("  ".join(f"{name} {version(name)}" for name in names))
        raise typer.Exit()


@app.callback()
def _entry(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of chexflow, torch, timm, Prefect and MLflow, and exit.",
        ),
    ] = False,
) -> None:
    """Environment defaults for every command, before any of them imports MLflow."""
    apply_environment_defaults()


def _load_config(config: Path | None, overrides: list[str] | None):
    from chexflow.config import load_config

    return load_config(config, overrides or [])


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Dataset root to create (must not exist).")],
    patients: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Training patients (default 2000, at least 10; with --labels-from: all of the "
            "CSV's, "
            "or a random sample of this many).",
        ),
    ] = None,
    image_size: Annotated[int, typer.Option(min=16, max=1024, help="Image size, px.")] = 128,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    labels_from: Annotated[
        Path | None,
        typer.Option(
            "--labels-from",
            help="A CheXpert-format CSV (e.g. the release's train.csv, .gz allowed): keep its "
            "rows value for value and render an image for each.",
        ),
    ] = None,
) -> None:
    """Write a synthetic dataset in the exact CheXpert-v1.0-small format."""
    if labels_from is not None:
        from chexflow.data.relabel import write_synthetic_from_labels

        root = write_synthetic_from_labels(
            labels_from, out, patients=patients, seed=seed, image_size=image_size
        )
    else:
        from chexflow.data.synthetic import write_synthetic

        if patients is not None and patients < 10:
            raise ChexflowError(f"--patients {patients}: the generator needs at least 10")
        root = write_synthetic(out, patients=patients or 2000, image_size=image_size, seed=seed)
    typer.echo(f"wrote {root}")


@data_app.command("summary")
@user_errors
def data_summary(
    data: Annotated[Path, typer.Option("--data", help="Dataset root (holds train.csv).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    fractions: Annotated[str, typer.Option(help="Fractions to size.")] = "0.01,0.1",
    seed: int = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Counts by split, view and class, and the fraction subsets a sweep would draw."""
    from chexflow.data.summary import format_summary, summarise

    cfg = _load_config(config, set_)
    from chexflow.config import check_fractions

    wanted = check_fractions(parse_list(fractions, float, "--fractions"))
    summary = summarise(data, cfg.data, wanted, seed)
    typer.echo(
        json.dumps(summary, indent=2, ensure_ascii=False) if as_json else format_summary(summary)
    )


@app.command()
@user_errors
def finetune(
    data: Annotated[Path, typer.Option("--data", help="Dataset root (holds train.csv).")],
    fraction: Annotated[float, typer.Option(help="Share of training patients, (0, 1].")],
    seed: Annotated[int, typer.Option(help="Seed of the fraction draw and the training.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workdir: WorkdirOpt = DEFAULT_WORKDIR,
    force: Annotated[bool, typer.Option(help="Retrain even if a finished run is cached.")] = False,
) -> None:
    """Fine-tune one label fraction and log it to MLflow."""
    if not 0 < fraction <= 1:
        raise ChexflowError(f"--fraction {fraction}: must lie in (0, 1]")
    cfg, api_started = _prepare_training(config, set_, data, workdir, [fraction], [seed])
    from flows.finetune import finetune as finetune_flow

    result = _run_flow(
        finetune_flow, api_started, str(data), fraction, seed, cfg, str(workdir), force=force
    )
    typer.echo(json.dumps(result.model_dump(), indent=2, ensure_ascii=False))


@app.command()
@user_errors
def pretrain(
    data: Annotated[Path, typer.Option("--data", help="Dataset root (holds train.csv).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workdir: WorkdirOpt = DEFAULT_WORKDIR,
    force: Annotated[bool, typer.Option(help="Pretrain again even if it is cached.")] = False,
) -> None:
    """Pretrain the backbone (SimCLR, no labels) on the training pool; log and register it."""
    cfg, api_started = _prepare_training(config, set_, data, workdir)
    from flows.pretrain import pretrain as pretrain_flow

    result = _run_flow(pretrain_flow, api_started, str(data), cfg, str(workdir), force=force)
    typer.echo(json.dumps(result.model_dump(), indent=2, ensure_ascii=False))
    typer.echo(f"fine-tune from it: --set model.init_checkpoint={result.checkpoint}")


@app.command()
@user_errors
def sweep(
    data: Annotated[Path, typer.Option("--data", help="Dataset root (holds train.csv).")],
    fractions: Annotated[str, typer.Option(help="Comma-separated, each in (0, 1].")] = "0.01,0.1",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workdir: WorkdirOpt = DEFAULT_WORKDIR,
    dispatch: Annotated[str, typer.Option(help="local, or deployment (work pools).")] = "local",
    force: Annotated[
        bool, typer.Option(help="Train again from scratch: no cached training, no resume.")
    ] = False,
    overlap: Annotated[
        bool | None,
        typer.Option(
            "--overlap/--no-overlap",
            help="Local fine-tunes: train the next while the last one is analysed "
            "(default: when training on CUDA).",
        ),
    ] = None,
) -> None:
    """Fine-tune every fraction × seed under one MLflow parent run, then compare them."""
    from chexflow.config import check_fractions, check_seeds

    fraction_list = check_fractions(parse_list(fractions, float, "--fractions"))
    seed_list = check_seeds(parse_list(seeds, int, "--seeds"))
    if dispatch not in ("local", "deployment"):
        raise ChexflowError(f"--dispatch {dispatch!r}: expected local or deployment")
    if dispatch == "deployment" and not os.environ.get("PREFECT_API_URL"):
        raise ChexflowError(
            "--dispatch deployment needs a Prefect server with the deployments: PREFECT_API_URL "
            "is not set (start one with `chexflow up`, then `chexflow deploy`)"
        )
    cfg, api_started = _prepare_training(config, set_, data, workdir, fraction_list, seed_list)
    from flows.sweep import sweep as sweep_flow

    result = _run_flow(
        sweep_flow,
        api_started,
        str(data),
        fraction_list,
        seed_list,
        cfg,
        str(workdir),
        dispatch_to=dispatch,
        force=force,
        overlap_analysis=overlap,
    )
    _print_sweep(result, workdir)


@app.command()
@user_errors
def compare(
    sweep_id: Annotated[str | None, typer.Option("--sweep", help="Sweep run id.")] = None,
    runs: Annotated[str | None, typer.Option(help="Comma-separated fine-tune run ids.")] = None,
    aliases: Annotated[str | None, typer.Option(help="Registry aliases, comma-separated.")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Registered model of the aliases (default: tracking.registered_model)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="The runs' dataset folder: thumbnails and full labels in explorer.html.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workdir: WorkdirOpt = DEFAULT_WORKDIR,
) -> None:
    """Write the differential analysis of finished runs, from MLflow alone."""
    chosen = [x for x in (sweep_id, runs, aliases) if x]
    if len(chosen) != 1:
        raise ChexflowError("give exactly one of --sweep ID, --runs ID,ID or --aliases A,B")
    _prelaunch_api()
    cfg = _load_config(config, set_)
    if data is not None and not data.is_dir():
        raise ChexflowError(f"--data {data}: not a directory")
    run_ids = parse_list(runs, str, "--runs") if runs else None
    alias_list = parse_list(aliases, str, "--aliases") if aliases else None
    if alias_list and not model:
        model = cfg.tracking.registered_model  # where the fine-tunes register their versions
    _check_compared_runs(cfg.tracking.experiment, workdir, sweep_id, run_ids, model, alias_list)
    from chexflow.pipeline import check_workdir

    check_workdir(workdir)  # creates it: Prefect's local API keeps its database there
    configure_environment(workdir)
    api_started = _start_prefect_api()
    from flows.compare import compare as compare_flow

    result = _run_flow(
        compare_flow,
        api_started,
        sweep_id=sweep_id,
        run_ids=run_ids,
        model_name=model,
        aliases=alias_list,
        config=cfg,
        workdir=str(workdir),
        data_dir=str(data) if data is not None else None,
    )
    typer.echo(f"report: {result.html}")
    typer.echo(f"explorer: {Path(result.html).with_name(records.EXPLORER_FILE)}")


def _check_compared_runs(
    experiment: str,
    workdir: Path,
    sweep_id: str | None,
    run_ids: list[str] | None,
    model: str | None,
    aliases: list[str] | None,
) -> None:
    """At the door: with the workdir's SQLite store (no ``MLFLOW_TRACKING_URI``), the runs
    named must exist and be finished chexflow runs before a Prefect API or file exists.
    A tracking server is left to the flow's retrying task (it may be restarting)."""
    from chexflow.tracking import default_tracking_uri, make_tracker, select_compared_runs

    if not default_tracking_uri(workdir).startswith("sqlite:"):
        return
    store = workdir / "mlflow.db"
    if not store.is_file():
        raise ChexflowError(
            f"no MLflow runs in {workdir} ({store} does not exist): pass the --workdir of "
            "your sweep, or set MLFLOW_TRACKING_URI"
        )
    select_compared_runs(make_tracker(experiment, workdir), sweep_id, run_ids, model, aliases)


@app.command()
@user_errors
def demo(
    quick: Annotated[bool, typer.Option(help="A smaller, faster demo (CI smoke test).")] = False,
    workdir: WorkdirOpt = DEFAULT_WORKDIR,
    labels_from: Annotated[
        Path | None,
        typer.Option(
            "--labels-from",
            help="A CheXpert-format CSV: the demo's patients are sampled from its rows "
            "(real label structure, synthetic pixels).",
        ),
    ] = None,
) -> None:
    """The embedded default: synthetic CheXpert, sweep 1% and 10%, compare, report."""
    from chexflow.demo import demo_settings, ensure_demo_data

    if labels_from is not None and (problem := missing_file(labels_from)) is not None:
        raise ChexflowError(f"--labels-from {labels_from} {problem}")
    _prelaunch_api()
    if labels_from is not None:  # at the door: before, a bad CSV was found after 27 s
        from chexflow.data.relabel import read_label_rows

        read_label_rows(labels_from)
    settings = demo_settings(quick, labels_from)
    _check_run_inputs(settings.config, workdir)
    configure_environment(workdir)
    api_started = _start_run_services(settings.config, workdir)  # boots while the data is written
    import chexflow.data.relabel
    import chexflow.data.synthetic  # noqa: F401 - imported here, not from two threads at once

    # Worker processes render the images while this thread imports the flows.
    with ThreadPoolExecutor(1, thread_name_prefix="chexflow-demo-data") as pool:
        writing = pool.submit(ensure_demo_data, workdir, settings)
        from flows.sweep import sweep as sweep_flow

        data = writing.result()

    result = _run_flow(
        sweep_flow,
        api_started,
        str(data),
        settings.fractions,
        settings.seeds,
        settings.config,
        str(workdir),
    )
    _print_sweep(result, workdir)


def _prepare_training(
    config: Path | None,
    overrides: list[str] | None,
    data: Path,
    workdir: Path,
    fractions: list[float] | None = None,
    seeds: list[int] | None = None,
) -> tuple[Any, Callable[[], None]]:
    """Check a training command's input, then start the local API: (config, api_started).

    With ``fractions`` and ``seeds`` everything the runs read is checked
    (``preflight.check_run_inputs``); without (pretraining), the workdir and the model.
    """
    _prelaunch_api()
    cfg = _load_config(config, overrides)
    _require_dir(data, "--data")
    _check_run_inputs(cfg, workdir, data, fractions, seeds)
    configure_environment(workdir)
    return cfg, _start_run_services(cfg, workdir)


def _start_run_services(cfg: Any, workdir: Path) -> Callable[[], None]:
    """Once the input is checked: the threads, the local API and the workdir's MLflow
    database; call the result before running a flow.

    The load of other work is sampled before the API's start-up adds its own
    (``chexflow.runtime``); a new workdir's Prefect and MLflow databases start from
    templates of migrated, empty ones (``flows.databases``)."""
    from chexflow.runtime import configure, other_busy_cores
    from flows.databases import seed_mlflow_database, seed_prefect_home
    from flows.temporary_api import pids

    busy = other_busy_cores(exclude=pids())  # the API's process imports meanwhile
    keep_prefect_template = seed_prefect_home()
    api_started = _start_prefect_api()
    mlflow_ready = seed_mlflow_database(workdir)
    configure(cfg.train.threads, cfg.train.num_workers, cfg.train.device, busy=busy)

    def ready() -> None:
        mlflow_ready()
        api_started()
        keep_prefect_template()

    return ready


def _check_run_inputs(
    cfg: Any,
    workdir: Path,
    data: Path | None = None,
    fractions: list[float] | None = None,
    seeds: list[int] | None = None,
) -> None:
    """Before any Prefect API, flow run or MLflow run exists: a writable workdir with room,
    then the config, model, checkpoint, data and every image the runs read (the images go
    into the run's image cache); without ``fractions``, the model only."""
    from chexflow.pipeline import check_model_input, check_workdir, image_cache_dir

    created = _outermost_new_dir(workdir)
    try:
        check_workdir(workdir)
        if data is None or fractions is None:
            check_model_input(cfg.model, cfg.data.image_size)
            return
        from chexflow.preflight import check_run_inputs

        cache = image_cache_dir(cfg.data, workdir)
        check_run_inputs(cfg, data, fractions, seeds or [0], cache_dir=cache)
    except BaseException:
        if created is not None:  # a refused command leaves no workdir it made behind
            shutil.rmtree(created, ignore_errors=True)
        raise


def _outermost_new_dir(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None: ``path`` exists)."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _prelaunch_api() -> None:
    """Start the temporary Prefect API's process now: it imports Prefect's server while
    the command checks its input, and writes nothing until it is served
    (``flows.temporary_api``). With ``PREFECT_API_URL`` set, check that it answers.

    Raises:
        ChexflowError: ``PREFECT_API_URL`` is set and nothing answers there (before: 438
            lines of retries and exit 1 after 20 s, with a workdir left behind).
    """
    from flows.temporary_api import answers, prelaunch

    url = os.environ.get("PREFECT_API_URL")
    if url and not answers(url, timeout_s=10.0, healthy_only=False):
        raise ChexflowError(
            f"no Prefect server answers at PREFECT_API_URL={url}: start it (chexflow up) or "
            "unset PREFECT_API_URL to run against a temporary local API"
        )
    prelaunch()


def _start_prefect_api() -> Callable[[], None]:
    """Once the input is checked: start Prefect's temporary local API (if no server is
    configured) while the flows are imported; call the result before running one."""
    from flows.embedded import start_temporary_api

    return start_temporary_api()


def _run_flow(
    flow: Callable[..., Any], api_started: Callable[[], None], *args: Any, **kwargs: Any
) -> Any:
    """Call a flow in-process with the embedded-mode run settings (no heartbeats without a
    server: ~1 s per flow run, see flows.embedded.embedded_run_settings)."""
    from flows.embedded import embedded_run_settings

    _quiet_user_error_tracebacks()
    _freeze_startup_heap()
    api_started()
    with embedded_run_settings():
        return flow(*args, **kwargs)


def _freeze_startup_heap() -> None:
    """Keep the objects the imports made (torch, Prefect, MLflow: ~0.5M) out of the cyclic
    garbage collector: they live as long as the process, yet every full collection
    re-scanned them (0.27 s each on this project's 2-core machine, bench/
    bench_orchestration.py). New objects are collected as before."""
    gc.freeze()


class _UserErrorWithoutTraceback(logging.Filter):
    """Prefect logs a failed task's traceback; for a user error the message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ChexflowError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_error_tracebacks() -> None:
    """Drop the traceback from log records of user errors, on every handler Prefect set up."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {id(h): h for lg in loggers for h in getattr(lg, "handlers", [])}
    for handler in handlers.values():
        if not any(isinstance(f, _UserErrorWithoutTraceback) for f in handler.filters):
            handler.addFilter(_UserErrorWithoutTraceback())


def _require_dir(path: Path, option: str) -> None:
    if not path.is_dir():
        raise ChexflowError(f"{option} {path}: no such directory")


def _print_sweep(result: SweepResult, workdir: Path) -> None:
    """The sweep's runs, one line each, the report and how to browse MLflow."""
    from chexflow.tracking import default_tracking_uri

    typer.echo(f"sweep {result.sweep_id}: {len(result.runs)} fine-tune runs")
    for run in result.runs:
        auroc = run.val_auroc_mean
        score = f"mean AUROC {auroc:.3f}" if auroc is not None else "mean AUROC undefined"
        typer.echo(f"  fraction {run.fraction:g} seed {run.seed}: run {run.run_id}, {score}")
    if result.pretraining:
        p = result.pretraining
        how = "reused" if p.reused else f"{p.cpu_seconds:.0f} s CPU on {p.images} images"
        typer.echo(f"  pretrained backbone: run {p.run_id} ({how})")
    if result.reference:
        typer.echo(f"  initial backbone (0%): run {result.reference.run_id}")
    if result.comparison:
        typer.echo(f"report: {result.comparison.html}")
        typer.echo(f"explorer: {Path(result.comparison.html).with_name(records.EXPLORER_FILE)}")
    uri = default_tracking_uri(workdir)
    if uri.startswith("sqlite:"):  # a server has its own UI; a local store needs one
        typer.echo(f"browse: chexflow ui --workdir {shlex.quote(str(workdir))}")


register_stack_commands(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
