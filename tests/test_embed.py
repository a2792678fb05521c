"""Embeddings: extraction, files on disk, round trip, malformed directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from chexflow.config import ModelConfig
from chexflow.embed import extract_embeddings, load_embeddings, save_embeddings
from chexflow.errors import DataError
from chexflow.models import create_model

N = 10


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(name="test_resnet", drop_rate=0.5)).train()


def eval_loader() -> DataLoader:
    images = torch.randn(N, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(images, torch.zeros(N, 5), torch.ones(N, 5)), batch_size=4)


def eval_table() -> pd.DataFrame:
    positives = [("Edema",), ("Edema", "Consolidation"), (), *[("Normal",)] * (N - 3)]
    return pd.DataFrame(
        {
            "path": [f"train/patient{i:05d}/study1/view1_frontal.jpg" for i in range(N)],
            "patient": [f"patient{i:05d}" for i in range(N)],
            "view": "Frontal",
            "positives": positives,
            "exclusive": ["Edema", None, None, *["Normal"] * (N - 3)],
            "age": range(50, 50 + N),
        }
    )


def test_extract_embeddings_are_pre_logits_float16(model: torch.nn.Module) -> None:
    features = extract_embeddings(model, eval_loader(), torch.device("cpu"), progress=False)
    assert features.shape == (N, model.num_features) and features.dtype == np.float16
    assert model.training  # mode restored
    with torch.inference_mode():
        model.eval()
        images = eval_loader().dataset.tensors[0]
        expected = model.forward_head(model.forward_features(images), pre_logits=True)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-2, atol=1e-3)


def test_round_trip(tmp_path: Path) -> None:
    features = np.random.default_rng(0).standard_normal((N, 7)).astype(np.float16)
    out = tmp_path / "embeddings"
    save_embeddings(out, features, eval_table(), {"eval_digest": "abc123", "model": "test_resnet"})
    assert sorted(p.name for p in out.iterdir()) == ["features.npy", "index.csv", "meta.json"]

    loaded, table, meta = load_embeddings(out)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, features.astype(np.float32))
    assert list(table.columns[:5]) == ["path", "patient", "view", "positives", "exclusive"]
    assert table["positives"].tolist()[:3] == ["Edema", "Edema|Consolidation", ""]
    assert table["exclusive"].tolist()[:3] == ["Edema", "", ""]
    assert table["patient"].iloc[0] == "patient00000" and table["age"].iloc[-1] == 50 + N - 1
    assert meta == {
        "eval_digest": "abc123",
        "model": "test_resnet",
        "n": N,
        "dim": 7,
        "dtype": "float16",
    }
    assert not [p for p in tmp_path.iterdir() if p.name != "embeddings"]


def test_save_replaces_an_existing_directory(tmp_path: Path) -> None:
    out = tmp_path / "embeddings"
    save_embeddings(out, np.zeros((N, 3), np.float16), eval_table(), {})
    save_embeddings(out, np.ones((N, 4), np.float16), eval_table(), {})
    assert load_embeddings(out)[0].shape == (N, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["embeddings"]


def test_row_count_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"index\.csv"):
        save_embeddings(tmp_path / "e", np.zeros((N + 1, 3), np.float16), eval_table(), {})
    assert not (tmp_path / "e").exists()
    with pytest.raises(DataError, match="exclusive"):
        save_embeddings(
            tmp_path / "e", np.zeros((N, 3)), eval_table().drop(columns="exclusive"), {}
        )


def test_load_names_the_bad_file(tmp_path: Path) -> None:
    out = tmp_path / "embeddings"
    save_embeddings(out, np.zeros((N, 3), np.float16), eval_table(), {})
    (out / "meta.json").write_text(json.dumps({"n": N + 1, "dim": 3}))
    with pytest.raises(DataError, match=r"meta\.json"):
        load_embeddings(out)
    pd.read_csv(out / "index.csv").iloc[:-1].to_csv(out / "index.csv", index=False)
    with pytest.raises(DataError, match=r"index\.csv"):
        load_embeddings(out)
    (out / "features.npy").unlink()
    with pytest.raises(DataError, match=r"features\.npy"):
        load_embeddings(out)


def test_pickled_features_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "embeddings"
    save_embeddings(out, np.zeros((N, 3), np.float16), eval_table(), {})
    np.save(out / "features.npy", np.array([{"x": 1}] * N, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"features\.npy"):
        load_embeddings(out)
