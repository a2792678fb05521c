"""What every benchmark shares: the machine record, timing, medians, ratios and the JSON file.

A result document (one JSON file per benchmark under ``bench/results/``) holds:

- ``benchmark``, ``command`` (the exact command that reproduces it), ``date`` (UTC, ISO 8601)
- ``machine``: CPU model, cores usable, torch threads, library versions, GPU name if any
- ``load_average``: ``before`` and ``after`` (1, 5, 15 min) — the cores may be shared
- ``settings``: sizes, repeats, what warm-up was excluded
- ``results``: raw samples (``runs_s`` …) and their medians, per measurement
- ``figures``: the headline numbers, each ``{name, value, unit, target, met}``; run_all
  tabulates these in docs/BENCHMARKS.md

Timing rules: wall clock (``time.perf_counter``) after the device is synchronised; warm-up
runs are excluded and say so in ``settings``; figures are medians of ``repeats`` runs;
ratios compare two loops measured in adjacent pairs in alternating order (so load from
other processes, which drifts, hits both alike) and are the median of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("bench/results")
_VERSIONED = (
    "numpy",
    "torch",
    "timm",
    "scikit-learn",
    "openTSNE",
    "prefect",
    "mlflow",
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (affinity masks and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def memory_gib() -> float | None:
    """Total RAM in GiB from /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def gpu_name() -> str | None:
    """The first CUDA device's name, or None without CUDA (torch is only imported here)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def versions() -> dict[str, str]:
    """Installed versions of the libraries the figures depend on."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    found = versions()
    found["torch"] = torch.__version__
    found["torch_cuda"] = torch.version.cuda
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "versions": found,
    }


def command_line(module: str, argv: Sequence[str]) -> str:
    """``python -m <module> <argv>`` quoted for a shell."""
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in argv)])


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def start_document(benchmark: str, module: str, argv: Sequence[str]) -> dict[str, Any]:
    """The common head of a result document, load average taken now."""
    return {
        "benchmark": benchmark,
        "command": command_line(module, argv),
        "date": now_utc(),
        "machine": machine_info(),
        "load_average": {"before": load_average()},
    }


def finish_document(doc: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Record the closing load average, write the document (strict JSON) to ``out`` and
    print its headline figures."""
    doc["load_average"]["after"] = load_average()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n")
    print_figures(doc)
    return doc


def run_in_tempdir(
    benchmark: str,
    module: str,
    argv: Sequence[str],
    out: Path | None,
    body: Callable[[Path], dict[str, Any]],
) -> dict[str, Any]:
    """Start the document, merge in what ``body(tmp)`` returns, finish and print it."""
    doc = start_document(benchmark, module, argv)
    with tempfile.TemporaryDirectory(prefix=f"chexflow-bench-{benchmark}-") as tmp:
        doc.update(body(Path(tmp)))
    return finish_document(doc, out)


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def stats(samples: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, min, max and the raw samples."""
    values = [float(s) for s in samples]
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "samples": [round(v, digits) for v in values],
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(repeats)]


def paired(
    first: Callable[[], float], second: Callable[[], float], repeats: int
) -> tuple[list[float], list[float]]:
    """Run two measurements ``repeats`` times in adjacent pairs, alternating which goes first.

    Each callable returns its own measurement (seconds, or any per-run figure).
    """
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """The median of per-pair ratios, with the pairs' ratios."""
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return {"median": round(statistics.median(ratios), 4), "pairs": [round(r, 4) for r in ratios]}


def loglog_slope(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Least-squares slope of log(seconds) on log(size): the observed exponent k in t ∝ n^k."""
    points = [(math.log(x), math.log(y)) for x, y in zip(sizes, seconds, strict=True) if y > 0]
    if len(points) < 2:
        return None
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return round(sum((p[0] - mx) * (p[1] - my) for p in points) / sxx, 3)


def figure(
    name: str,
    value: float | None,
    unit: str,
    target: str | None = None,
    met: bool | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One headline number for the BENCHMARKS.md table."""
    entry: dict[str, Any] = {"name": name, "value": value, "unit": unit}
    if target is not None:
        entry["target"] = target
        entry["met"] = met
    if note:
        entry["note"] = note
    return entry


def print_figures(doc: dict[str, Any]) -> None:
    """One line per headline figure, to stdout."""
    for fig in doc.get("figures", []):
        value = fig["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        target = ""
        if "target" in fig:
            target = f"  (target {fig['target']}: {'met' if fig['met'] else 'MISSED'})"
        print(f"[{doc['benchmark']}] {fig['name']}: {shown} {fig['unit']}{target}", flush=True)


def add_sweep_workload(parser: argparse.ArgumentParser, fractions: str) -> None:
    """The options of a sweep workload on synthetic data: ``--patients``, ``--image-size``,
    ``--model``, ``--epochs``, ``--fractions`` (default ``fractions``) and repeated ``--set``
    config overrides (``args.overrides``)."""
    parser.add_argument("--patients", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fractions", default=fractions)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
