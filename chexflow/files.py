"""Atomic writes and standard JSON: the one home of both.

A reader never sees a half-written file or directory: everything is written beside its
target under a temporary name, then renamed over it (``os.replace`` is atomic on one file
system). JSON is written standard (no ``NaN``/``Infinity``): ``json_safe`` turns
non-finite floats into ``null``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Plain, standard JSON types, recursively: NaN and ±inf → None, numpy scalars and
    arrays → Python numbers and lists, mapping keys → strings."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if math.isfinite(value) else None
    return value


@contextmanager
def atomic_file(path: Path, mode: int | None = None, fsync: bool = False) -> Iterator[IO[bytes]]:
    """A binary handle on a temporary file beside ``path``, renamed to ``path`` when the
    block ends without error (removed otherwise).

    Args:
        path: the file to (re)place.
        mode: permission bits set before the rename (e.g. ``0o600`` for secrets).
        fsync: flush to disk before the rename (checkpoints: survive a power cut).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # created with its final mode: a secret is never readable by others, not even empty
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sqlite_url(path: Path, scheme: str = "sqlite") -> str:
    """A SQLAlchemy URL of the SQLite file ``path`` (absolute), its characters escaped.

    An f-string URL takes a ``?`` in the path as the start of a query and ``%20`` as a
    space: the database lands elsewhere (a workdir holding ``?`` made Prefect and MLflow
    share one file outside it). SQLAlchemy unquotes the path. Only ``%`` and ``?`` are
    escaped (SQLAlchemy reads spaces and ``#`` as they are), because MLflow creates the
    parent directory of the path as the URL spells it, without unquoting.
    """
    text = str(Path(path).resolve()).replace("%", "%25").replace("?", "%3F")
    return f"{scheme}:///{text}"


def missing_file(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file, in words for an error message (None: it is).

    ``"does not exist"``, ``"is a directory, not a file"`` or ``"is not a regular file"``:
    a user who passes a folder where a file is expected is told so, not that it is missing.
    """
    path = Path(path)
    if path.is_file():
        return None
    if path.is_dir():
        return "is a directory, not a file"
    return "does not exist" if not path.exists() else "is not a regular file"


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with atomic_file(path, mode) as handle:
        handle.write(text.encode())


def atomic_write_json(path: Path, data: Any, mode: int | None = None, **dumps: Any) -> None:
    """Replace ``path`` with ``data`` as standard JSON (``json_safe``), atomically.
    ``dumps`` go to ``json.dumps`` (``indent``, ``sort_keys``, ``default``)."""
    atomic_write_text(path, json.dumps(json_safe(data), **dumps) + "\n", mode)


@contextmanager
def staged_directory(target: Path, replace: bool = True) -> Iterator[Path]:
    """A temporary directory beside ``target`` to fill; published as ``target`` in one
    rename when the block ends without error, and removed otherwise.

    With ``replace`` an existing ``target`` is swapped out (moved aside, then deleted);
    without it the first writer wins: an existing ``target`` (e.g. written meanwhile by a
    concurrent process) is kept and the staged copy dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staged
        _publish(staged, target, replace)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _publish(staged: Path, target: Path, replace: bool) -> None:
    if not target.exists():
        try:
            os.replace(staged, target)
            return
        except OSError:
            if not target.exists():
                raise
    if not replace:
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
