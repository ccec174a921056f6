from pathlib import Path

import pytest

from utils.config import load_config
from utils.errors import SuiteError


def test_precedence_defaults_yaml_cli(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {arch: resnet20}\ncalibration: {size: 64, seed: 3}\ntorch: {observer: minmax}\n")
    cfg = load_config(recipe, {"calibration.size": 32, "torch.backend": None})
    assert cfg.model.arch == "resnet20"
    assert cfg.calibration.size == 32  # CLI wins
    assert cfg.calibration.seed == 3  # YAML wins over default
    assert cfg.torch.observer == "minmax"
    assert cfg.torch.backend == "x86"  # None override leaves the default


def test_unknown_key_is_a_clear_error(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("calibration: {sise: 3}\n")
    with pytest.raises(SuiteError, match="unknown config key 'calibration.sise'"):
        load_config(recipe)


def test_bad_yaml_and_missing_file(tmp_path: Path):
    with pytest.raises(SuiteError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_config(bad)


def test_every_recipe_in_configs_loads():
    recipes = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert recipes, "configs/ holds the recipes"
    for recipe in recipes:
        load_config(recipe)
