"""Threads and loader workers of a chexflow process: torch, BLAS/OpenMP and the DataLoader.

torch starts one intra-op thread per core it sees, whether or not other work already
runs there. On cores shared with other processes those threads wait for each other: on
this project's 2-core machine at load ~4, two threads trained at 0.18-0.28× the images/s
of one (``bench/bench_training.py``), while on the same machine idle two threads were
1.8× as fast as one. So the automatic setting counts the usable cores (affinity mask,
container limits) that other work is not using when the process configures itself.

Settings (``TrainConfig``): ``threads`` (null: automatic) and ``num_workers`` (null:
automatic). Entry points (the ``chexflow`` command, the Prefect flows that train) call
``configure`` once, before the training work starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chexflow.procinfo import proc_stat

log = logging.getLogger("chexflow.runtime")

AUTO_MAX_WORKERS = 4  # loader workers on CUDA: enough to keep augmentation off the step
BUSY_SAMPLE_S = 0.1  # how long /proc/stat is watched for other work
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Parallelism:
    """What a process runs with, and why.

    Attributes:
        threads: torch intra-op threads and BLAS/OpenMP threads.
        interop_threads: torch inter-op threads.
        num_workers: DataLoader worker processes (0: batches are made in the main process).
        usable_cores: cores this process may run on.
        busy_cores: cores other processes kept busy when it was decided (None: not measured).
        automatic: which of ``threads`` / ``num_workers`` were chosen automatically.
    """

    threads: int
    interop_threads: int
    num_workers: int
    usable_cores: int
    busy_cores: float | None
    automatic: tuple[str, ...]

    def describe(self) -> str:
        """One line for the log: the settings and where the automatic ones came from."""
        busy = "" if self.busy_cores is None else f", {self.busy_cores:.1f} busy with other work"
        chosen = f" (automatic: {', '.join(self.automatic)})" if self.automatic else ""
        return (
            f"{self.threads} torch/BLAS thread(s), {self.num_workers} loader worker(s); "
            f"{self.usable_cores} usable core(s){busy}{chosen}"
        )


def usable_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def other_busy_cores(window_s: float = BUSY_SAMPLE_S, exclude: Sequence[int] = ()) -> float | None:
    """Cores kept busy by other processes over the next ``window_s`` seconds.

    All cores' busy time from /proc/stat minus this process's own CPU time and that of
    the processes in ``exclude`` (pids: work of this command's own, such as its Prefect
    API's start-up), in cores (machine-wide: on a machine with more cores than the
    affinity mask, work outside the mask counts too, which errs towards fewer threads).
    None where /proc/stat is absent.
    """
    before, own_before = _cpu_ticks(), time.process_time()
    excluded_before = _process_ticks(exclude)
    if before is None:
        return None
    time.sleep(window_s)
    after, own_after = _cpu_ticks(), time.process_time()
    excluded = _process_ticks(exclude) - excluded_before
    if after is None or after[1] == before[1]:
        return None
    cores = os.cpu_count() or 1
    busy = (after[0] - before[0] - excluded) / (after[1] - before[1]) * cores
    own = (own_after - own_before) / window_s
    return max(0.0, busy - own)


def _process_ticks(pids: Sequence[int]) -> int:
    """User + system jiffies of the processes ``pids`` (0 for one that has ended)."""
    total = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total


def automatic_threads(cores: int, busy: float | None, num_workers: int) -> int:
    """The usable cores that other work leaves free, less one per loader worker; at least 1.

    Args:
        cores: usable cores (``usable_cores``).
        busy: cores busy with other work (``other_busy_cores``); None counts as 0.
        num_workers: loader worker processes, each of which takes a core of its own.

    A core counts as taken from half a core's load up: 2 cores with 0.4 busy keep 2
    threads, with 0.6 busy 1.
    """
    taken = int((busy or 0.0) + 0.5)
    return max(1, min(cores, cores - taken) - num_workers)


def automatic_workers(device_type: str, cores: int) -> int:
    """Loader worker processes: 0 on CPU, ``min(AUTO_MAX_WORKERS, cores // 2)`` on CUDA.

    A batch is a gather and a normalisation from the in-memory uint8 cache
    (``ChexpertImages``): on CPU, the main process makes it at 1.00× the compute-only
    throughput (``bench/bench_training.py``) and a worker would take a core from the
    step. On CUDA the step leaves the CPU idle, so workers prepare (and augment) the
    next batches meanwhile; up to half the cores, leaving the rest to the main process.
    """
    if device_type != "cuda":
        return 0
    return min(AUTO_MAX_WORKERS, cores // 2)


def resolve(
    threads: int | None,
    num_workers: int | None,
    device_type: str,
    cores: int | None = None,
    busy: float | None = None,
) -> Parallelism:
    """The settings for ``device_type`` ("cpu" or "cuda"): configured values, else automatic.

    ``threads`` None honours ``OMP_NUM_THREADS`` when set (the usual knob), else
    ``automatic_threads``; ``num_workers`` None is ``automatic_workers``. Pure apart from
    reading that variable: ``cores`` and ``busy`` default to what this machine shows now.
    """
    cores = usable_cores() if cores is None else cores
    automatic: list[str] = []
    if num_workers is None:
        num_workers = automatic_workers(device_type, cores)
        automatic.append("num_workers")
    if threads is None:
        from_env = os.environ.get("OMP_NUM_THREADS", "")
        if from_env.isdigit() and int(from_env) > 0:
            threads = int(from_env)
        else:
            busy = other_busy_cores() if busy is None else busy
            threads = automatic_threads(cores, busy, num_workers)
            automatic.append("threads")
    return Parallelism(
        threads=threads,
        interop_threads=max(1, min(threads, 4)),
        num_workers=num_workers,
        usable_cores=cores,
        busy_cores=None if busy is None else round(busy, 2),
        automatic=tuple(automatic),
    )


def apply(settings: Parallelism) -> Parallelism:
    """Set torch's intra-op (and, if still possible, inter-op) threads and limit the
    BLAS/OpenMP libraries loaded so far; the thread variables cover those loaded later
    and child processes. Returns ``settings``."""
    import torch
    from threadpoolctl import threadpool_limits

    for name in THREAD_VARIABLES:
        os.environ[name] = str(settings.threads)
    torch.set_num_threads(settings.threads)
    # possible only before the first inter-op work; after it torch keeps its count
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(settings.interop_threads)
    threadpool_limits(limits=settings.threads)
    return settings


def device_type(device: str) -> str:
    """ "cuda" or "cpu" for a ``TrainConfig.device`` value ("auto" asks torch)."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


_CONFIGURED: dict[tuple[int | None, int | None, str], Parallelism] = {}


def configure(
    threads: int | None, num_workers: int | None, device: str, busy: float | None = None
) -> Parallelism:
    """Decide and apply this process's settings (``resolve`` + ``apply``); logs one line.

    A process decides once per configuration: the ``chexflow`` command decides before it
    starts the Prefect API (whose start-up would count as other work), and the flows it
    then runs in-process get the same answer; a worker's flow run decides for itself.

    Args:
        threads: ``TrainConfig.threads`` (None: automatic).
        num_workers: ``TrainConfig.num_workers`` (None: automatic).
        device: ``TrainConfig.device`` ("auto", "cpu" or "cuda").
        busy: cores busy with other work, sampled earlier (``other_busy_cores``); None
            samples now when ``threads`` is automatic.
    """
    key = (threads, num_workers, device)
    if key not in _CONFIGURED:
        _CONFIGURED[key] = apply(resolve(threads, num_workers, device_type(device), busy=busy))
        log.info("parallelism: %s", _CONFIGURED[key].describe())
    return _CONFIGURED[key]


def loader_workers(num_workers: int | None, device: str) -> int:
    """``TrainConfig.num_workers`` with None resolved (``automatic_workers``)."""
    if num_workers is not None:
        return num_workers
    return automatic_workers(device_type(device), usable_cores())
