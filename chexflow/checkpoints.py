"""Atomic checkpoint files and random-number-generator state that `weights_only` can load.

A training directory holds `last.pt` (everything needed to resume), `best.pt` (the model
state dict of the best epoch) and a `.json` beside each with its epoch, score and sha256.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chexflow.errors import ChexflowError
from chexflow.files import atomic_file, atomic_write_json

log = logging.getLogger("chexflow.train")

LAST = "last.pt"
BEST = "best.pt"
LAST_KEYS = frozenset(
    {"model", "optimizer", "scheduler", "epoch", "best_score", "best_epoch", "history", "rng"}
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> str:
    """`torch.save` into a temporary file beside `path`, synced, then renamed; returns the
    file's sha256."""
    with atomic_file(path, fsync=True) as handle:
        torch.save(obj, handle)
    return sha256_file(path)


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as detached CPU tensors."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(py_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng`; CUDA states are restored when the device count matches."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    directory: Path, name: str, payload: Mapping[str, Any], meta: Mapping[str, Any]
) -> Path:
    """Write `name` (.pt) atomically, then its `.json` metadata with the file's sha256."""
    path = directory / name
    try:
        digest = atomic_torch_save(dict(payload), path)
        info = {**meta, "file": name, "sha256": digest}
        atomic_write_json(path.with_suffix(".json"), info, indent=2, sort_keys=True)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A full disk is the operator's to fix, not a bug: one line, never retried. The
        # atomic writes leave the previous epoch's checkpoint whole: a rerun resumes there.
        raise ChexflowError(
            f"no space left on the device of {directory} while writing {name} "
            f"({exc.strerror or 'ENOSPC'}): free some space, then rerun to resume from "
            "the last complete epoch"
        ) from exc
    return path


def digest_problem(path: Path) -> str | None:
    """Why the checkpoint `path` cannot be trusted, or None when it matches its `.json`.

    A checkpoint is trusted only when its sha256 equals the one `save_checkpoint` recorded
    beside it: a damaged, truncated or replaced file (or a missing `.json`) is not.
    """
    path = Path(path)
    if not path.is_file():
        return f"{path} does not exist"
    meta_path = path.with_suffix(".json")
    try:
        recorded = json.loads(meta_path.read_text()).get("sha256")
    except FileNotFoundError:
        return f"{path} has no {meta_path.name} recording its sha256"
    except (OSError, ValueError, AttributeError):
        return f"{meta_path} is unreadable"
    if recorded != sha256_file(path):
        return f"{path} does not match the sha256 recorded in {meta_path.name} (damaged?)"
    return None


def load_best(path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of a `best.pt`, after checking its recorded sha256.

    Raises:
        ChexflowError: the file does not match its digest or is not a state dict; the
            message says to retrain (rerun with ``--force``).
    """
    problem = digest_problem(Path(path))
    if problem is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # digest matched but unreadable: written by something else
            problem = f"{path} is unreadable ({type(exc).__name__})"
        else:
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
            if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
                return state
            problem = f"{path} is not a model state dict"
    raise ChexflowError(f"checkpoint {problem}; retrain it (rerun with --force)")


def load_last(directory: Path) -> dict[str, Any] | None:
    """The resumable state in `directory/last.pt`, or None when absent or unusable.

    Unusable includes a file that does not match its recorded sha256 (`digest_problem`):
    training then starts over rather than resume from damaged state. (A crash between
    the two atomic renames of `save_checkpoint` also leaves a mismatch; that case, a
    window of milliseconds per epoch, costs a restart too.)
    """
    path = directory / LAST
    if not path.is_file():
        return None
    problem = digest_problem(path)
    if problem is not None:
        log.warning("%s; training from scratch", problem)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file means: start over, never crash on it
        log.warning("%s is unreadable (%s); training from scratch", path, type(exc).__name__)
        return None
    if not isinstance(state, dict) or not state.keys() >= LAST_KEYS:
        log.warning("%s is incomplete; training from scratch", path)
        return None
    return state
