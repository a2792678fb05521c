import subprocess
import sys
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


# --- issue 16: every number bounded, strict types, repeated keys, MLflow names ---------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # Each of these was accepted and crashed (or silently misbehaved) later in a run.
        ("analysis.perplexities=[0]", "analysis.perplexities.0: Input should be greater than 0"),
        ("analysis.perplexities=[-5]", "analysis.perplexities.0: Input should be greater than 0"),
        ("analysis.perplexities=[.nan]", "analysis.perplexities.0: Input should be a finite"),
        ("analysis.perplexities=[30, 30]", "perplexities repeated: [30.0]"),
        ("analysis.tsne_seeds=[-1]", "analysis.tsne_seeds.0: Input should be greater than or"),
        ("analysis.tsne_seeds=[4294967296]", "analysis.tsne_seeds.0: Input should be less"),
        ("train.bootstrap=0", "train.bootstrap: Input should be greater than or equal to 1"),
        ("train.epochs=true", "train.epochs: Input should be a valid integer"),
        ("train.epochs='3'", "train.epochs: Input should be a valid integer"),
        ("train.epochs=2.0", "train.epochs: Input should be a valid integer"),
        ("train.pos_weight=1", "train.pos_weight: Input should be a valid boolean"),
        ("train.lr=true", "train.lr: Value error, expected a number, not a boolean"),
        ("train.lr=.inf", "train.lr: Input should be a finite number"),
        ("train.weight_decay=.nan", "train.weight_decay: Input should be a finite number"),
        ("train.grad_clip=.inf", "train.grad_clip: Input should be a finite number"),
        ("analysis.early_exaggeration=.inf", "analysis.early_exaggeration: Input should be a"),
        ("data.split_seed=-1", "data.split_seed: Input should be greater than or equal to 0"),
        ("model.init_strict=no_thanks", "model.init_strict: Input should be a valid boolean"),
        ("tracking.registered_model=radiology/chexpert", "Names cannot contain '/' or ':'"),
        ("tracking.registered_model=a:b", "Names cannot contain '/' or ':'"),
        ("tracking.experiment=" + "x" * 501, "exceeds the maximum length of 500"),
    ],
)
def test_every_number_is_bounded_and_typed_strictly(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_numbers_in_usual_spellings_still_load() -> None:
    config = load_config(
        None, ["train.lr=1e-3", "train.lr=0.002", "train.grad_clip=2", "analysis.perplexities=[5]"]
    )
    assert config.train.lr == 0.002 and config.train.grad_clip == 2.0
    assert config.analysis.perplexities == [5.0]
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001  # YAML reads 1e-3 as text


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("train:\n  epochs: 3\ntrain:\n  epochs: 1\n", 3, "'train'"),
        ("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 1\n", 4, "'epochs'"),
        ("data:\n  label_policy: {Edema: ones, Edema: zeros}\n", 2, "'Edema'"),
    ],
)
def test_a_key_written_twice_is_refused_naming_key_file_and_line(
    tmp_path: Path, text: str, line: int, key: str
) -> None:
    # Before: PyYAML kept the last value and the first section was silently dropped.
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"config file {path} line {line}: key {key} is repeated")
    assert "\n" not in message


def test_a_repeated_key_in_a_set_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="'Edema' is repeated"):
        load_config(None, ["data.label_policy={Edema: ones, Edema: zeros}"])


def test_the_json_schema_carries_the_bounds_of_list_items() -> None:
    # Prefect renders this schema as the deployment's parameter form and validates with it.
    defs = ChexflowConfig.model_json_schema()["$defs"]
    analysis = defs["AnalysisConfig"]["properties"]
    assert analysis["perplexities"]["items"] == {
        "exclusiveMinimum": 0,
        "maximum": 10_000,
        "type": "number",
    }
    assert analysis["tsne_seeds"]["items"] == {
        "maximum": 2**32 - 1,
        "minimum": 0,
        "type": "integer",
    }
    train = defs["TrainConfig"]["properties"]
    assert train["bootstrap"]["minimum"] == 1
    assert train["lr"]["exclusiveMinimum"] == 0 and train["lr"]["exclusiveMaximum"] == 10


def test_loading_a_config_imports_no_mlflow() -> None:
    code = (
        "import sys; from chexflow.config import ChexflowConfig, load_config; "
        "load_config(None, ['train.epochs=2']); "
        "ChexflowConfig.model_validate(ChexflowConfig().model_dump()); "  # defaults validated
        "print('mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
