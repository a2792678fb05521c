"""Atomic writes and standard JSON (chexflow.files)."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import pytest

from chexflow.files import atomic_write_json, atomic_write_text, json_safe, staged_directory


def test_json_safe_turns_non_finite_floats_into_null() -> None:
    data = {"a": math.nan, 1: [math.inf, -math.inf, 0.5], "b": (2, "x")}
    assert json_safe(data) == {"a": None, "1": [None, None, 0.5], "b": [2, "x"]}
    assert "NaN" not in json.dumps(json_safe(data), allow_nan=False)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_private_file_is_never_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    atomic_write_text(path, "pw", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "pw"


def test_a_staged_directory_replaces_or_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with staged_directory(target) as staged:
        (staged / "a").write_text("1")
    with staged_directory(target) as staged:
        (staged / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with staged_directory(target, replace=False) as staged:
        (staged / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"], "the first writer wins"
    with pytest.raises(RuntimeError), staged_directory(target) as staged:
        (staged / "d").write_text("4")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "nothing left behind"


def test_missing_file_says_what_is_there_instead(tmp_path: Path) -> None:
    from chexflow.files import missing_file

    (tmp_path / "a.yaml").write_text("x: 1")
    assert missing_file(tmp_path / "a.yaml") is None
    assert missing_file(tmp_path / "nope.yaml") == "does not exist"
    # Before: a folder passed as --config, --labels-from or model.init_checkpoint was
    # reported as missing ("does not exist", "no such file", "not found").
    assert missing_file(tmp_path) == "is a directory, not a file"
