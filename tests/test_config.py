from pathlib import Path

import pytest

from chexflow.config import (
    ChexflowConfig,
    check_fractions,
    config_to_yaml,
    fingerprint,
    flatten,
    load_config,
)
from chexflow.errors import ConfigError


def test_defaults_validate_and_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_config(None, ["train.epochs=3", "model.name=resnet10t"])
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(config))
    again = load_config(path)
    assert again == config
    assert again.train.epochs == 3
    assert fingerprint(again) == fingerprint(config)


def test_overrides_parse_yaml_values() -> None:
    config = load_config(None, ["analysis.perplexities=[10, 30]", "train.grad_clip=null"])
    assert config.analysis.perplexities == [10.0, 30.0]
    assert config.train.grad_clip is None


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("train: {epochs: [", [], "malformed YAML"),
        ("trian: {epochs: 3}", [], "trian"),
        ("train: {epochs: three}", [], "train.epochs"),
        ("- a\n- b\n", [], "mapping"),
        ("", ["data.label_policy={Edema: maybe}"], "data.label_policy"),
        ("", ["data.label_policy={Pneumonia: ones}"], "unknown class"),
        ("", ["train.epochs"], "key=value"),
        ("", ["train.epochs.x=1"], "train.epochs"),
        ("", ["data.image_size=8"], "data.image_size"),
    ],
)
def test_bad_configs_give_one_line_naming_the_key(
    tmp_path: Path, text: str, overrides: list[str], expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_label_policy_override_keeps_the_other_defaults() -> None:
    config = load_config(None, ["data.label_policy={Edema: ignore}"])
    assert config.data.label_policy["Edema"] == "ignore"
    assert config.data.label_policy["Atelectasis"] == "ones"


def test_fractions_are_checked_and_sorted() -> None:
    assert check_fractions([0.1, 0.01]) == [0.01, 0.1]
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        check_fractions([0.0, 0.1])
    with pytest.raises(ConfigError, match="repeated"):
        check_fractions([0.1, 0.1])


def test_flatten_gives_string_params() -> None:
    flat = flatten(ChexflowConfig())
    assert flat["train.epochs"] == "5"
    assert flat["analysis.perplexities"] == "[30.0]"
    assert all(isinstance(v, str) for v in flat.values())
