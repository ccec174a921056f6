"""A toolchain is one module and one registry line, its own settings included: a pass-through "fp32-as-int8"
toolchain, written into a fresh module here, with a settings section and a flag of its own, shows up in
resnet.run's flags, the calibration sweep, its artifact's manifest and the report with no other edit."""
import json
import textwrap

import pytest

from quantization.registry import TOOLCHAINS, Toolchain

TOOLCHAIN_MODULE = '''
"""The whole toolchain: its settings section, its flag, its quantizer."""
import copy
from dataclasses import dataclass

from quantization.Torch.torchscript_quantizer import TorchScriptQuantizer
from utils.cli import option, section_group
from utils.config import Section, choice


@dataclass(slots=True)
class PassThroughConfig:
    calibration_method: str = choice("minmax")
    label: str = "plain"  # written into the settings, so the manifest shows the flag reached the quantizer


def add_flags(parser):
    group = section_group(parser, "pass-through toolchain", SECTION)
    option(group, "--passthrough-label", "passthrough.label", "a label recorded in the settings")


SECTION = Section("passthrough", PassThroughConfig, add_flags)


class PassThroughQuantizer(TorchScriptQuantizer):
    """Writes the FP32 model as its 'INT8' artifact: every figure must equal FP32's."""

    toolchain = "fp32_as_int8"
    folder = "passthrough"
    section = "passthrough"
    mode = "passthrough"
    calibrations = {"minmax": "minmax"}
    unsupported_calibrations = {"entropy": "a pass-through has nothing to calibrate"}
    granularities = ("per_tensor",)
    calibration_fields = ("calibration_method", None)

    def settings(self):
        return {"mode": self.mode, "calibration_method": self.options.calibration_method, "label": self.options.label}

    def tag(self):
        return f"passthrough_{self.options.label}"

    def ranges_depend_on_batching(self):
        return False

    def _quantized_module(self, model, calibration):
        return copy.deepcopy(model.module).eval(), calibration.ids
'''


@pytest.mark.slow
def test_a_toolchain_with_its_own_settings_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    from resnet.run import build_parser, main
    from utils import cli

    (tmp_path / "passthrough_toolchain.py").write_text(textwrap.dedent(TOOLCHAIN_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(TOOLCHAINS, "fp32_as_int8", Toolchain("passthrough_toolchain:PassThroughQuantizer",
                                                              ("passthrough_toolchain:SECTION",)))

    help_text = build_parser().format_help()
    assert "--passthrough-label" in help_text and "(default: plain)" in help_text

    args = ["--toolchains", "fp32_as_int8", "--passthrough-label", "from-the-flag", "--calibration", "minmax,entropy",
            "--limit", "60", "--calib-size", "32", "--rounds", "1", "--warmup", "0", "--bench-batch-sizes", "1",
            "--models-dir", str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"), "--run-name", "t"]
    assert cli.run_cli(main, args) == 0

    manifests = [json.loads(p.read_text()) for p in (tmp_path / "m" / "passthrough").glob("*.manifest.json")]
    (int8,) = [m for m in manifests if m["precision"] == "int8"]
    assert int8["toolchain"] == "fp32_as_int8"
    assert int8["settings"]["label"] == "from-the-flag" and int8["settings"]["calibration_method"] == "minmax"

    report = json.loads((tmp_path / "r" / "t" / "report.json").read_text())
    (row,) = [r for r in report["rows"] if r["toolchain"] == "fp32_as_int8"]
    assert row["runtime"] == "torch" and row["top1_drop_pp"] == 0.0 and row["agreement"] == 1.0
    assert row["calibration"] == "minmax"
    skipped = {s["what"]: s["reason"] for s in report["skipped"]}
    assert skipped["sweep fp32_as_int8 entropy/default"] == "a pass-through has nothing to calibrate"
    (check,) = report["int8_checks"]
    assert check["recommended_runtime"] == "torch" and check["runtimes"][0]["recommended"]


def test_a_registered_section_loads_from_yaml_with_its_unknown_key_errors(tmp_path, monkeypatch):
    """The new section is a YAML key like any other: precedence defaults < YAML < flags, unknown keys refused."""
    from quantization.run_config import load_config
    from utils.errors import SuiteError

    (tmp_path / "passthrough_toolchain.py").write_text(textwrap.dedent(TOOLCHAIN_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(TOOLCHAINS, "fp32_as_int8", Toolchain("passthrough_toolchain:PassThroughQuantizer",
                                                              ("passthrough_toolchain:SECTION",)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passthrough: {label: from-yaml}\n")
    assert load_config(recipe).passthrough.label == "from-yaml"
    assert load_config(recipe, {"passthrough.label": "from-flag"}).passthrough.label == "from-flag"
    recipe.write_text("passthrough: {lable: typo}\n")
    with pytest.raises(SuiteError, match="unknown config key 'passthrough.lable'"):
        load_config(recipe)
    with pytest.raises(SuiteError, match="must be one of minmax"):
        load_config(None, {"passthrough.calibration_method": "entropy"})
