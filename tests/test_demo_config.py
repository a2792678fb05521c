from pathlib import Path

from chexflow.config import load_config
from chexflow.demo import demo_settings

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_configs_directory_files_validate() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        load_config(path)


def test_demo_yaml_matches_what_the_demo_runs() -> None:
    assert load_config(CONFIGS / "demo.yaml") == demo_settings(quick=False).config
