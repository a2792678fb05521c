"""Threads and loader workers: the automatic rules, the config fields, and what apply sets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chexflow.config import load_config
from chexflow.errors import ConfigError
from chexflow.runtime import (
    automatic_threads,
    automatic_workers,
    loader_workers,
    other_busy_cores,
    resolve,
    usable_cores,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("cores", "busy", "workers", "expected"),
    [
        (2, 0.0, 0, 2),  # idle: every usable core
        (2, 0.4, 0, 2),  # under half a core of other work: still free
        (2, 0.6, 0, 1),  # the shared 2-core case: one thread, not two
        (2, 4.0, 0, 1),  # overloaded: never below one
        (8, 3.4, 0, 5),
        (8, 0.0, 3, 5),  # each loader worker takes a core
        (8, None, 0, 8),  # unmeasured load counts as none
    ],
)
def test_automatic_threads(cores: int, busy: float | None, workers: int, expected: int) -> None:
    assert automatic_threads(cores, busy, workers) == expected


def test_automatic_workers() -> None:
    assert automatic_workers("cpu", 16) == 0
    assert automatic_workers("cuda", 16) == 4
    assert automatic_workers("cuda", 3) == 1
    assert automatic_workers("cuda", 1) == 0


def test_resolve_keeps_configured_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    chosen = resolve(3, 2, "cuda", cores=16, busy=10.0)
    assert (chosen.threads, chosen.num_workers, chosen.automatic) == (3, 2, ())
    auto = resolve(None, None, "cuda", cores=16, busy=10.0)
    assert (auto.threads, auto.num_workers) == (2, 4)  # 16 - 10 busy - 4 workers
    assert set(auto.automatic) == {"threads", "num_workers"}
    assert "2 torch/BLAS thread(s), 4 loader worker(s)" in auto.describe()


def test_resolve_honours_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve(None, 0, "cpu", cores=2, busy=2.0).threads == 3


def test_other_busy_cores_is_a_share_of_the_machine() -> None:
    busy = other_busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1) + 0.5
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_config_fields_default_to_automatic_and_are_bounded() -> None:
    cfg = load_config(None, [])
    assert cfg.train.threads is None and cfg.train.num_workers is None
    set_ = load_config(None, ["train.threads=2", "train.num_workers=0"])
    assert (set_.train.threads, set_.train.num_workers) == (2, 0)
    with pytest.raises(ConfigError):
        load_config(None, ["train.threads=0"])
    assert loader_workers(0, "cpu") == 0
    assert loader_workers(None, "cpu") == 0
    assert loader_workers(3, "cpu") == 3


def test_configure_sets_torch_and_blas_threads() -> None:
    """In a fresh process (inter-op threads can be set once): torch, the BLAS libraries
    loaded already and the variables for later ones all get the configured count."""
    code = """
import os, torch, numpy
from threadpoolctl import threadpool_info
from chexflow.runtime import configure
s = configure(1, 0, "cpu")
assert torch.get_num_threads() == 1, torch.get_num_threads()
assert torch.get_num_interop_threads() == 1, torch.get_num_interop_threads()
assert all(i["num_threads"] == 1 for i in threadpool_info()), threadpool_info()
assert os.environ["OMP_NUM_THREADS"] == "1"
assert configure(1, 0, "cpu") is s  # decided once per process and configuration
print(s.describe())
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 torch/BLAS thread(s), 0 loader worker(s)" in done.stdout
