"""Tracking cost per training step: MLflow logging through ``BatchedMetricLogger``.

    python -m bench.bench_tracking                 # SQLite and a local `mlflow server --workers 1`
    python -m bench.bench_tracking --no-server     # SQLite only

The training loop is ``chexflow.train.train_epoch`` over the real loader (as in
``bench_training``: synthetic CheXpert → ``prepare_data`` → ``build_dataset`` →
``make_loader``) with the demo's model, and ``BatchedMetricLogger`` attached the way the
finetune flow attaches it (one MLflow run, ``flush_every=50``). Each timed loop is one
"epoch" of ``--steps`` steps that ends with ``on_epoch_end`` (which flushes), so there is
at least one ``log_batch`` per ``--steps`` steps — more often than in a real epoch.

Two measures per backend:

- direct: the time spent inside the logger's callbacks (``on_step``, ``on_epoch_end`` and
  the flushes they trigger) over the loop's wall time — the share of step time tracking
  takes. This is the figure held to the ≤ 2% target; it does not depend on how much
  the step itself is disturbed by other processes.
- end to end: the loop with the logger against the same loop without it, in adjacent
  pairs, alternating order (noisier: a 2% effect is near the noise of a shared machine).

Also the raw request costs: one ``log_metric`` call, and one ``log_batch`` of 100 metrics
(what a flush sends after 50 steps). Warm-up: one untimed loop per variant.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bench.bench_training import prepare_real_data
from bench.common import figure, paired_ratio, run_in_tempdir, stats
from chexflow.config import ModelConfig, TrainConfig
from chexflow.data.dataset import make_loader
from chexflow.models import create_model, head_classes
from chexflow.tracking import BatchedMetricLogger, Tracker
from chexflow.train import TrainStep, prepare_model, select_device, train_epoch

MODULE = "bench.bench_tracking"
TARGET = 0.02
SERVER_START_TIMEOUT_S = 120


class TimedLogger:
    """Wraps a ``BatchedMetricLogger`` and adds up the seconds spent in its callbacks."""

    def __init__(self, inner: BatchedMetricLogger) -> None:
        self.inner = inner
        self.seconds = 0.0

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        start = time.perf_counter()
        self.inner.on_step(step, epoch, loss, lr)
        self.seconds += time.perf_counter() - start

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        start = time.perf_counter()
        self.inner.on_epoch_end(epoch, metrics)
        self.seconds += time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mlflow_server(workdir: Path) -> Iterator[tuple[str, float]]:
    """A local ``mlflow server --workers 1`` on SQLite; yields (URI, seconds to healthy)."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [
        str(mlflow),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'server.db'}",
        "--artifacts-destination",
        str(workdir / "server-artifacts"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(workdir / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    start = time.perf_counter()
    uri = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: see {workdir / 'mlflow-server.log'}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - start > SERVER_START_TIMEOUT_S:
                raise RuntimeError("mlflow server did not become healthy in time")
            time.sleep(0.2)
        yield uri, time.perf_counter() - start
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def request_costs(tracker: Tracker, run_id: str, repeats: int) -> dict[str, Any]:
    """Seconds of one ``log_metric`` and of one 100-metric ``log_batch`` (after one warm-up)."""
    from mlflow.entities import Metric

    client = tracker.client

    def one_metric(i: int) -> None:
        client.log_metric(run_id, "bench_single", float(i), step=i)

    def one_batch(i: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric("bench_loss", 0.5, now, 100 * i + j) for j in range(50)]
        metrics += [Metric("bench_lr", 1e-3, now, 100 * i + j) for j in range(50)]
        client.log_batch(run_id, metrics=metrics)

    out = {}
    for name, call in (("log_metric_s", one_metric), ("log_batch_100_s", one_batch)):
        call(0)
        samples = []
        for i in range(1, repeats + 1):
            start = time.perf_counter()
            call(i)
            samples.append(time.perf_counter() - start)
        out[name] = stats(samples, 5)
    return out


def measure_backend(
    name: str,
    tracker: Tracker,
    loop: Callable[[Sequence[Any], int], float],
    repeats: int,
    request_repeats: int,
) -> dict[str, Any]:
    """Paired loops with/without the logger, and the direct callback share."""
    run_id = tracker.start_run("bench", f"bench-tracking-{name}")
    epoch = itertools.count(1)

    def with_logger() -> tuple[float, float]:
        logger = TimedLogger(BatchedMetricLogger(tracker, run_id))
        seconds = loop([logger], next(epoch))
        return seconds, logger.seconds

    with_logger()  # warm-up: the first requests open the connection / SQLite engine
    loop([], 0)
    plain: list[float] = []
    tracked: list[tuple[float, float]] = []
    for i in range(repeats):
        order = [lambda: tracked.append(with_logger()), lambda: plain.append(loop([], 0))]
        for measure in order if i % 2 == 0 else order[::-1]:
            measure()
    shares = [inside / total for total, inside in tracked]
    result = {
        "direct_share_of_step_time": stats(shares, 5),
        "callback_ms_per_step": None,  # filled by the caller (needs steps)
        "loop_with_logger_s": stats([t for t, _ in tracked], 3),
        "loop_without_logger_s": stats(plain, 3),
        "end_to_end_ratio": paired_ratio([t for t, _ in tracked], plain),
        "callback_s": stats([inside for _, inside in tracked], 5),
        "requests": request_costs(tracker, run_id, request_repeats),
    }
    tracker.finish(run_id)
    return result


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Measure; returns the ``settings``, ``results`` and ``figures`` of the document."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    cfg = TrainConfig(batch_size=args.batch_size, device=args.device, warmup_fraction=0.0)
    data = prepare_real_data(workdir, args.patients, args.image_size)
    classes = len(head_classes(ModelConfig()))
    torch.manual_seed(0)
    model = prepare_model(create_model(ModelConfig(name=args.model), classes), cfg, device)
    step = TrainStep(model, cfg, total_steps=10**9, device=device)
    loader = make_loader(data.dataset, cfg.batch_size, shuffle=True, seed=0)
    first_step = itertools.count(1, args.steps)

    def loop(callbacks: Sequence[Any], epoch: int) -> float:
        """One "epoch" of ``args.steps`` steps; the logger sees on_step and on_epoch_end."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        stats_ = train_epoch(
            step, itertools.islice(loader, args.steps), epoch, next(first_step), callbacks
        )
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"train_loss": stats_.loss, "lr": stats_.lr})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    loop([], 0)  # warm-up
    backends: dict[str, Any] = {}
    sqlite_tracker = Tracker(
        f"sqlite:///{workdir / 'mlflow.db'}",
        "bench-tracking",
        (workdir / "mlartifacts").as_uri(),
    )
    backends["sqlite"] = measure_backend(
        "sqlite", sqlite_tracker, loop, args.repeats, args.request_repeats
    )
    server_start_s = None
    if args.server:
        with mlflow_server(workdir) as (uri, server_start_s):
            backends["server"] = measure_backend(
                "server", Tracker(uri, "bench-tracking"), loop, args.repeats, args.request_repeats
            )
    figures = []
    for name, result in backends.items():
        per_step = [s / args.steps * 1000 for s in result["callback_s"]["samples"]]
        result["callback_ms_per_step"] = stats(per_step, 4)
        share = result["direct_share_of_step_time"]["median"]
        label = "SQLite" if name == "sqlite" else "mlflow server --workers 1"
        figures.append(
            figure(
                f"MLflow logging share of step time ({label})",
                round(100 * share, 3),
                "%",
                f"<= {100 * TARGET:g}%",
                share <= TARGET,
            )
        )
        figures.append(
            figure(
                f"end-to-end loop time with / without logger ({label})",
                result["end_to_end_ratio"]["median"],
                "ratio",
            )
        )
        figures.append(
            figure(
                f"one log_metric request ({label})",
                round(1000 * result["requests"]["log_metric_s"]["median"], 2),
                "ms",
            )
        )
    step_s = statistics.median(backends["sqlite"]["loop_without_logger_s"]["samples"])
    settings = {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps_per_loop": args.steps,
        "step_ms_without_logger": round(1000 * step_s / args.steps, 2),
        "repeats": args.repeats,
        "warmup": "one untimed loop per variant, one untimed request per kind",
        "flush_every": 50,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "mlflow_server_start_s": None if server_start_s is None else round(server_start_s, 2),
    }
    return {"settings": settings, "results": backends, "figures": figures}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--steps", type=int, default=25, help="steps per timed loop (an epoch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--request-repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--server", action=argparse.BooleanOptionalAction, default=True, help="also a server"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/tracking.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return run_in_tempdir("tracking", MODULE, argv, args.out, lambda tmp: run(args, tmp))


if __name__ == "__main__":
    main()
