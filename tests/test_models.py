"""Model factory: names, hub failures, local checkpoints, unsafe pickles, linear probe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import load_file, save_file

from chexflow import models
from chexflow.config import ModelConfig, TrainConfig
from chexflow.data.labels import NORMAL, PATHOLOGIES
from chexflow.errors import ChexflowError, ConfigError
from chexflow.models import create_model, head_classes, load_backbone_weights, set_train_mode
from chexflow.train import TrainStep

TINY = "test_resnet"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _cfg(**kwargs: object) -> ModelConfig:
    return ModelConfig(name=TINY, **kwargs)


def test_head_classes_follow_include_normal() -> None:
    assert head_classes(_cfg()) == PATHOLOGIES
    assert head_classes(_cfg(include_normal=True)) == (*PATHOLOGIES, NORMAL)


def test_create_model_is_single_channel_with_one_output_per_class() -> None:
    model = create_model(_cfg(include_normal=True))
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 6)
    assert create_model(_cfg(), num_classes=3)(torch.zeros(2, 1, 32, 32)).shape == (2, 3)


def test_unknown_model_name_names_close_matches() -> None:
    with pytest.raises(ConfigError, match="test_resnet"):
        create_model(ModelConfig(name="test_resnett"))


def test_unreachable_hub_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if pretrained:
            raise LocalEntryNotFoundError("no connection")
        return real(name, **kwargs)

    monkeypatch.setattr(models.timm, "create_model", offline)
    with pytest.raises(ConfigError, match=r"unreachable.*init_checkpoint.*pretrained=false"):
        create_model(_cfg(pretrained=True))


def _rgb_source() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    source = timm.create_model(TINY, in_chans=3, num_classes=10)
    return {k: v.clone() for k, v in source.state_dict().items()}


def _write(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:  # a DDP-style training checkpoint: nested and prefixed
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_checkpoint_loads_backbone_and_reinitialises_head(
    tmp_path: Path, suffix: str
) -> None:
    source = _rgb_source()
    path = _write(source, tmp_path / f"backbone{suffix}")
    model = create_model(_cfg())
    fresh_head = model.fc.weight.detach().clone()

    report = load_backbone_weights(model, path)

    state = model.state_dict()
    assert torch.equal(state["conv1.0.weight"], source["conv1.0.weight"].sum(1, keepdim=True))
    assert torch.equal(state["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
    assert torch.equal(state["bn1.running_var"], source["bn1.running_var"])
    assert torch.equal(model.fc.weight, fresh_head)
    assert set(report.dropped_head) == {"fc.weight", "fc.bias"}
    assert report.adapted_input == ("conv1.0.weight",)
    assert report.loaded == len(source) - 2
    assert set(report.missing) == {"fc.weight", "fc.bias"}
    assert report.unexpected == ()


def test_create_model_uses_init_checkpoint(tmp_path: Path) -> None:
    source = _rgb_source()
    path = _write(source, tmp_path / "backbone.safetensors")
    model = create_model(_cfg(init_checkpoint=path))
    assert torch.equal(model.state_dict()["layer2.0.conv1.weight"], source["layer2.0.conv1.weight"])


def test_checkpoint_of_another_architecture_is_a_config_error(tmp_path: Path) -> None:
    other = timm.create_model("resnet10t", in_chans=3, num_classes=10).state_dict()
    path = _write(dict(other), tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match=r"check model\.name"):
        load_backbone_weights(create_model(_cfg()), path)


def test_unrelated_keys_are_a_config_error(tmp_path: Path) -> None:
    path = _write({"decoder.weight": torch.zeros(3)}, tmp_path / "unrelated.safetensors")
    with pytest.raises(ConfigError, match="no tensor"):
        load_backbone_weights(create_model(_cfg()), path)


def test_missing_checkpoint_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone_weights(create_model(_cfg()), tmp_path / "nope.pt")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"x")
    with pytest.raises(ConfigError, match="suffix"):
        load_backbone_weights(create_model(_cfg()), odd)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_evil_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.0.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    with pytest.raises(ChexflowError, match="refused"):
        load_backbone_weights(create_model(_cfg()), path)
    assert not marker.exists()


def test_linear_probe_trains_only_the_head_and_keeps_bn_statistics() -> None:
    torch.manual_seed(0)
    model = create_model(_cfg(linear_probe=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    before = {k: v.clone() for k, v in model.state_dict().items()}

    set_train_mode(model)
    assert model.training and not model.bn1.training
    step = TrainStep(model, TrainConfig(lr=1e-2), total_steps=3, device=torch.device("cpu"))
    for _ in range(3):
        step(torch.randn(8, 1, 32, 32), torch.ones(8, 5), torch.ones(8, 5))

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}


# --- issue 16: a checkpoint must cover the backbone ---------------------------------------------


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet-shaped resnet18 weights (random values): 3 channels, 1000 classes."""
    state = timm.create_model("resnet18", in_chans=3, num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_weights_of_a_smaller_model_are_refused(resnet18_weights: Path) -> None:
    # Before: 80 of resnet34's backbone tensors stayed random, exit 0, nothing recorded.
    with pytest.raises(ConfigError) as err:
        create_model(ModelConfig(name="resnet34", init_checkpoint=resnet18_weights))
    message = str(err.value)
    assert "covers 100 of 180 backbone tensors of resnet34" in message
    assert "model.init_strict=false" in message and "\n" not in message


def test_weights_of_a_larger_model_are_refused(tmp_path: Path) -> None:
    state = timm.create_model("resnet34", in_chans=1, num_classes=5).state_dict()
    path = _write(dict(state), tmp_path / "resnet34.safetensors")
    with pytest.raises(ConfigError, match=r"holds 80 it does not have \(unexpected e\.g\. "):
        create_model(ModelConfig(name="resnet18", init_checkpoint=path))


def test_init_strict_false_loads_and_counts_what_is_missing(resnet18_weights: Path) -> None:
    model = create_model(ModelConfig(name="resnet34"))
    report = load_backbone_weights(model, resnet18_weights, strict=False)
    assert report.tags() == {
        "chexflow.init_loaded": "100/180",
        "chexflow.init_missing": "80",
        "chexflow.init_unexpected": "0",
    }
    source = load_file(str(resnet18_weights))
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
    strict_off = ModelConfig(name="resnet34", init_checkpoint=resnet18_weights, init_strict=False)
    assert create_model(strict_off) is not None


def test_a_torch_compile_checkpoint_loads(tmp_path: Path) -> None:
    # Before: refused with "is it a checkpoint of this architecture?" (the _orig_mod. prefix).
    source = create_model(_cfg())
    compiled = torch.compile(source)  # compiles on first call only: the keys are what matter
    state = compiled.state_dict()
    assert next(iter(state)).startswith("_orig_mod.")
    path = tmp_path / "compiled.pt"
    torch.save(state, path)
    model = create_model(_cfg())
    report = load_backbone_weights(model, path)
    assert report.complete and report.missing == ()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
