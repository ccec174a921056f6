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


def _leaf_fields():
    import dataclasses

    from utils.config import RunConfig

    def walk(obj, where):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{where}{f.name}.")
            else:
                yield f"{where}{f.name}", str(f.type)
    return list(walk(RunConfig(), ""))


def _wrong_type(annotation: str):
    if "list[" in annotation:
        return {"a": 1}
    if "str" in annotation:
        return [1, 2]
    return "thirty-two"


def test_every_config_field_refuses_a_wrong_type_and_a_non_positive_value():
    """Property-style: each field, fed a value of the wrong type (and each numeric field a value out of
    range), fails when the config is built, with one line naming the key."""
    from utils.config import NON_NEGATIVE

    fields = _leaf_fields()
    assert len(fields) > 60
    numeric = 0
    for dotted, annotation in fields:
        with pytest.raises(SuiteError, match=f"config key '{dotted}' must be") as info:
            load_config(None, {dotted: _wrong_type(annotation)})
        assert "\n" not in str(info.value)
        if any(t in annotation for t in ("int", "float")):
            numeric += 1
            bad = -1 if dotted in NON_NEGATIVE else 0
            value = [bad] if annotation.startswith("list[") else bad
            with pytest.raises(SuiteError, match=f"config key '{dotted}' must be (positive|non-negative)"):
                load_config(None, {dotted: value})
    assert numeric > 20


def test_yaml_values_of_the_wrong_type_are_one_line(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    for text, key in (('calibration: {size: "thirty-two"}', "calibration.size"),
                      ("benchmark: {batch_sizes: [1, 0]}", "benchmark.batch_sizes"),
                      ('model: {num_classes: "10"}', "model.num_classes")):
        recipe.write_text(text + "\n")
        with pytest.raises(SuiteError, match=f"config key '{key}' must be"):
            load_config(recipe)
    recipe.write_text("torch: {weight_bits: 7}\n")  # a number where the flag takes a string still works
    assert load_config(recipe).torch.weight_bits == 7
