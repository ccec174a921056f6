from pathlib import Path

import pytest

from quantization.run_config import load_config
from utils.errors import SuiteError


def test_precedence_defaults_yaml_cli(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {arch: resnet20}\ncalibration: {size: 64, seed: 3}\ntorch: {observer: minmax}\n")
    cfg = load_config(recipe, {"calibration.size": 32, "torch.backend": None})
    assert cfg.model.arch == "resnet20"
    assert cfg.calibration.size == 32  # CLI wins
    assert cfg.calibration.seed == 3  # YAML wins over default
    assert cfg.torch.observer == "minmax"
    assert cfg.torch.backend == "auto"  # None override leaves the default


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
    """(key, annotation, may be 0) of every config key, the toolchain sections' included."""
    import dataclasses

    from quantization.run_config import RunConfig
    from utils.config import annotation_text, children, may_be_zero

    def walk(obj, where):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        for name, value in children(obj).items():
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{where}{name}.")
            else:
                yield f"{where}{name}", annotation_text(fields[name]), may_be_zero(f"{where}{name}", fields[name])
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
    fields = _leaf_fields()
    assert len(fields) > 60
    numeric = 0
    for dotted, annotation, zero_ok in fields:
        with pytest.raises(SuiteError, match=f"config key '{dotted}' must be") as info:
            load_config(None, {dotted: _wrong_type(annotation)})
        assert "\n" not in str(info.value)
        if any(t in annotation for t in ("int", "float")):
            numeric += 1
            bad = -1 if zero_ok else 0
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


def _choice_fields():
    from quantization.run_config import config_choices

    return [(dotted, config_choices(dotted)) for dotted, _, _ in _leaf_fields() if config_choices(dotted)]


def test_every_choice_field_takes_its_choices_and_refuses_any_other_value():
    """Property-style, over every choice() field: each listed value builds, anything else is one line naming the
    key and the values (the toolchain sections' calibration methods, granularities, dtypes, weight bits)."""
    fields = dict(_choice_fields())
    for key in ("torch.mode", "torch.backend", "torch.granularity", "torch.observer", "torch.reduce_range",
                "torch.weight_bits", "torch.clamp_observers", "torch.qat_engine",
                "modelopt.calibration_method", "modelopt.high_precision_dtype", "modelopt.weight_bits",
                "ort.calibration_method", "ort.granularity", "ort.activation_type", "ort.weight_bits",
                "tensorrt.calibrator"):
        assert key in fields, key
    for dotted, choices in fields.items():
        section, key = dotted.split(".")
        for value in choices:
            assert str(getattr(getattr(load_config(None, {dotted: value}), section), key)) == value
        with pytest.raises(SuiteError, match=f"config key '{dotted}' must be one of {', '.join(choices)}") as info:
            load_config(None, {dotted: "not-a-choice"})
        assert "\n" not in str(info.value)


def test_each_toolchain_section_holds_only_its_own_settings(tmp_path: Path):
    """ModelOpt's and ORT's calibration methods are different fields with different values; the shared ONNX
    settings live in ``onnx``; the engine switch is no config key any more."""
    cfg = load_config(None, {"modelopt.calibration_method": "entropy", "ort.calibration_method": "percentile",
                             "onnx.opset": 18})
    assert (cfg.modelopt.calibration_method, cfg.ort.calibration_method, cfg.onnx.opset) == ("entropy", "percentile", 18)
    with pytest.raises(SuiteError, match="must be one of max, entropy"):
        load_config(None, {"modelopt.calibration_method": "minmax"})  # ORT's name, not ModelOpt's
    recipe = tmp_path / "r.yaml"
    recipe.write_text("modelopt: {engine: ort}\n")
    with pytest.raises(SuiteError, match="unknown config key 'modelopt.engine'"):
        load_config(recipe)
    with pytest.raises(AttributeError):  # a stale write such as cfg.modelopt.granularity fails, not ignored
        cfg.modelopt.granularity = "per_tensor"


def test_ort_calibration_choices_are_the_ones_its_quantizer_maps():
    from quantization.ORT.ort_quantizer import METHODS
    from quantization.run_config import config_choices

    assert config_choices("ort.calibration_method") == tuple(METHODS)


def test_resnet_run_puts_every_toolchain_flag_into_its_own_section():
    """resnet.run takes every toolchain's flags, TensorRT's included; each flag writes its toolchain's section."""
    from quantization.run_config import config_from_args
    from resnet.run import build_parser

    args = build_parser().parse_args(["--max-batch", "8", "--calibrator", "minmax", "--ort-calibration-method",
                                      "entropy", "--ort-granularity", "per_tensor", "--calibration-method", "entropy",
                                      "--exclude-nodes", "a.*", "--ort-exclude-nodes", "b.*", "--opset", "18"])
    cfg = config_from_args(args)
    assert (cfg.tensorrt.max_batch, cfg.tensorrt.calibrator) == (8, "minmax")
    assert (cfg.ort.calibration_method, cfg.ort.granularity, cfg.ort.exclude_nodes) == ("entropy", "per_tensor", ["b.*"])
    assert (cfg.modelopt.calibration_method, cfg.modelopt.exclude_nodes) == ("entropy", ["a.*"])
    assert cfg.onnx.opset == 18


def test_resnet_run_refuses_mode_in_one_line(capsys):
    """--mode picks torch_PTQ.py's toolchain; resnet.run would ignore it, so it says so and exits 2."""
    from resnet.run import main
    from utils import cli

    with pytest.raises(SystemExit) as info:
        cli.run_cli(main, ["--mode", "pt2e"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--mode is a torch_PTQ.py flag" in err and "--toolchains" in err


@pytest.mark.parametrize("module", ["quantization.Torch.cli", "quantization.ModelOpt.cli", "quantization.TensorRT.cli"])
def test_quantize_only_scripts_offer_only_the_flags_they_use(module):
    """A PTQ script writes artifacts, no report and no evaluation: no --results-dir, --run-name or --limit; its
    toolchains' flag groups come from their registry lines (and no other toolchain's)."""
    import importlib

    flags = {a for action in importlib.import_module(module).build_parser()._actions for a in action.option_strings}
    assert not flags & {"--results-dir", "--run-name", "--limit"}
    assert "--models-dir" in flags
    torch_flags, trt_flags, ort_flags = "--observer" in flags, "--max-batch" in flags, "--ort-granularity" in flags
    assert (torch_flags, trt_flags, ort_flags) == {"quantization.Torch.cli": (True, False, False),
                                                   "quantization.ModelOpt.cli": (False, False, True),
                                                   "quantization.TensorRT.cli": (False, True, False)}[module]


def test_variants_leave_the_config_they_came_from_unchanged():
    """with_overrides and replace_section make copies (dataclasses.replace), never write into their input."""
    from quantization.run_config import load_config
    from utils.config import replace_section, with_overrides

    cfg = load_config(None, {"ort.calibration_method": "entropy"})
    variant = with_overrides(cfg, {"ort": {"granularity": "per_tensor"}, "calibration": {"size": 8}})
    other = replace_section(cfg, "torch", observer="histogram")
    assert (cfg.ort.granularity, cfg.calibration.size, cfg.torch.observer) == ("per_channel", 256, "minmax")
    assert (variant.ort.granularity, variant.ort.calibration_method, variant.calibration.size) == \
        ("per_tensor", "entropy", 8)
    assert other.torch.observer == "histogram" and other.ort is cfg.ort


def test_a_run_config_crosses_process_boundaries_intact():
    """Ray tasks and ModelOpt's spawned child get the config pickled: the toolchain sections travel with it."""
    import pickle

    from quantization.run_config import load_config

    cfg = load_config(None, {"ort.granularity": "per_tensor", "torch.observer": "minmax"})
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and (back.ort.granularity, back.torch.observer) == ("per_tensor", "minmax")
    with pytest.raises(AttributeError, match="no config section 'nope'"):
        back.nope  # noqa: B018
