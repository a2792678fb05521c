"""The configs/ files validate and say what they mean; demo.yaml is what the demo runs."""

from pathlib import Path

import pytest
import yaml

from chexflow.config import load_config
from chexflow.demo import demo_settings

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_sets_what_it_says(path: Path) -> None:
    written = yaml.safe_load(path.read_text())
    loaded = load_config(path).model_dump(mode="json")
    for section, values in written.items():
        for key, value in values.items():
            assert loaded[section][key] == value, f"{path.name}: {section}.{key}"


def test_demo_yaml_matches_what_the_demo_runs() -> None:
    assert load_config(CONFIGS / "demo.yaml") == demo_settings(quick=False).config
