"""A toolchain is one class and one registry line: a pass-through "fp32-as-int8" toolchain defined here
shows up in resnet.run, the calibration sweep and the report with no other edit."""
import copy
import json

from quantization.base import TOOLCHAINS
from quantization.Torch.torchscript_quantizer import TorchScriptQuantizer


class PassThroughQuantizer(TorchScriptQuantizer):
    """Writes the FP32 model as its 'INT8' artifact: every figure must equal FP32's."""

    toolchain = "fp32_as_int8"
    mode = "passthrough"
    calibrations = {"minmax": "minmax"}
    unsupported_calibrations = {"entropy": "a pass-through has nothing to calibrate"}
    granularities = ("per_channel",)
    calibration_fields = ("observer", "granularity")

    def _quantized_module(self, model, calibration):
        return copy.deepcopy(model.module).eval(), calibration.ids


def test_a_toolchain_registered_by_one_line_runs_everywhere(tmp_path, monkeypatch):
    from resnet.run import main
    from utils import cli

    monkeypatch.setitem(TOOLCHAINS, "fp32_as_int8", "tests.test_new_toolchain:PassThroughQuantizer")
    args = ["--toolchains", "fp32_as_int8", "--calibration", "minmax,entropy", "--limit", "60", "--calib-size", "32",
            "--rounds", "1", "--warmup", "0", "--bench-batch-sizes", "1", "--models-dir", str(tmp_path / "m"),
            "--results-dir", str(tmp_path / "r"), "--run-name", "t"]
    assert cli.run_cli(main, args) == 0
    report = json.loads((tmp_path / "r" / "t" / "report.json").read_text())
    (row,) = [r for r in report["rows"] if r["toolchain"] == "fp32_as_int8"]
    assert row["runtime"] == "torch" and row["top1_drop_pp"] == 0.0 and row["agreement"] == 1.0
    assert row["calibration"] == "minmax"
    skipped = {s["what"]: s["reason"] for s in report["skipped"]}
    assert skipped["sweep fp32_as_int8 entropy/default"] == "a pass-through has nothing to calibrate"
    (check,) = report["int8_checks"]
    assert check["recommended_runtime"] == "torch" and check["runtimes"][0]["recommended"]
