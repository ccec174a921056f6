"""TensorRT toolchain: everything up to the engine build runs here; the build itself needs a GPU."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from evaluation.pipelines.tensorrt_runner import tensorrt_unavailable_reason
from quantization.TensorRT.qdq_check import check_qdq_model, require_valid_qdq
from tests.conftest import run_script
from utils.errors import SuiteError


def _conv_model(path: Path, *, act_qdq=True, weight_axis=0, zp_dtype=np.int8, shape_qdq=False) -> Path:
    """x -> [Q/DQ] -> Conv(W via DQ, per-channel on weight_axis) -> y (-> Reshape with a quantized shape)."""
    w = np.random.default_rng(0).normal(size=(8, 4, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.int8(np.clip(np.round(w * 20), -127, 127)), "w_q"),
             numpy_helper.from_array(np.full(w.shape[weight_axis], 0.05, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(w.shape[weight_axis], np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, zp_dtype), "x_zp")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="w_dq", axis=weight_axis)]
    conv_in = "x"
    if act_qdq:
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_q"),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_dq")]
        conv_in = "x_dq"
    nodes.append(helper.make_node("Conv", [conv_in, "w_dq"], ["y"], name="conv0", pads=[1, 1, 1, 1]))
    out = "y"
    if shape_qdq:
        inits += [numpy_helper.from_array(np.array([1, -1], np.float32), "shape_f")]
        nodes += [helper.make_node("QuantizeLinear", ["shape_f", "x_scale", "x_zp"], ["shape_q"], name="shape_q"),
                  helper.make_node("DequantizeLinear", ["shape_q", "x_scale", "x_zp"], ["shape_dq"], name="shape_dq"),
                  helper.make_node("Reshape", ["y", "shape_dq"], ["z"], name="reshape0")]
        out = "z"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    return path


def test_qdq_check_accepts_a_tensorrt_style_model(tmp_path: Path):
    report = check_qdq_model(_conv_model(tmp_path / "ok.onnx"))
    assert report.ok and report.quantized_layers == ["conv0"]


@pytest.mark.parametrize("kwargs, message", [
    ({"zp_dtype": np.uint8}, "TensorRT needs signed INT8"),
    ({"weight_axis": 1}, "TensorRT needs the output-channel axis 0"),
    ({"act_qdq": False}, "no Q/DQ on its activation"),
    ({"shape_qdq": True}, "Q/DQ on the shape input of Reshape"),
])
def test_qdq_check_rejects_what_tensorrt_rejects(tmp_path: Path, kwargs, message):
    path = _conv_model(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(SuiteError, match=message):
        require_valid_qdq(path)


def test_qdq_check_allows_deliberate_exclusions(tmp_path: Path):
    path = _conv_model(tmp_path / "excl.onnx", act_qdq=False)
    report = require_valid_qdq(path, allowed_float=["conv0"])
    assert report.float_layers == ["conv0"]


@pytest.mark.slow
def test_script_writes_the_qdq_onnx_then_says_what_is_missing(tmp_path: Path):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is available here: the missing-TensorRT path cannot be shown")
    models = tmp_path / "models"
    result = run_script("quantization/TensorRT/tensorrt_PTQ_pth2trt_int8.py", "--calib-size", "32",
                        "--models-dir", str(models))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("no CUDA device" in errors[0] or "needs package tensorrt" in errors[0])
    qdq = list((models / "tensorrt").glob("*_modelopt_int8_max_fp16_bc.onnx"))  # bias correction: a default
    assert len(qdq) == 1
    manifest = json.loads(qdq[0].with_name(qdq[0].name + ".manifest.json").read_text())
    assert manifest["bias_correction"] == "applied (fast)"
    assert manifest["settings"]["high_precision_dtype"] == "fp16"
    assert require_valid_qdq(qdq[0], manifest["settings"]["nodes_excluded"]).ok
    assert not list(models.rglob("*.plan"))


@pytest.mark.slow
def test_resnet_run_lists_tensorrt_as_skipped_with_the_reason(tmp_path: Path):
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here")
    result = run_script("-m", "resnet.run", "--toolchains", "torch_fx,tensorrt", "--limit", "40", "--calib-size", "16",
                        "--rounds", "1", "--warmup", "0", "--bench-batch-sizes", "1", "--models-dir",
                        str(tmp_path / "m"), "--results-dir", str(tmp_path / "r"), "--run-name", "x")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "x" / "report.json").read_text())
    assert {"what": "toolchain tensorrt", "reason": reason} in report["skipped"]
    assert f"toolchain tensorrt: {reason}" in (tmp_path / "r" / "x" / "report.md").read_text()


def test_trt_ptq_subcommand_help():
    result = run_script("-m", "resnet.run", "trt-ptq", "--help")
    assert result.returncode == 0 and "--calibrator" in result.stdout and "--precisions" in result.stdout
    assert "--calibration-method" in result.stdout and "--exclude-nodes" in result.stdout  # its ModelOpt step's


def test_tensorrt_derives_its_qdq_settings_without_rewriting_the_modelopt_section():
    """The Q/DQ step is ModelOpt's (calibration from cfg.modelopt) with fp16 and the tensorrt target derived in
    the TensorRT class: the modelopt section it reads still says fp32, and the user's config is untouched."""
    from quantization.run_config import RunConfig
    from quantization.TensorRT.trt_quantizer import TensorRTQuantizer

    cfg = RunConfig()
    cfg.modelopt.calibration_method, cfg.target = "entropy", "x86-avx2"
    trt = TensorRTQuantizer(cfg)
    assert trt.section == "tensorrt" and trt.qdq.section == "modelopt"
    assert trt.qdq.high_precision_dtype() == "fp16" and trt.qdq.options.high_precision_dtype == "fp32"
    assert trt.qdq.tag() == "modelopt_int8_entropy_fp16"  # 8-bit weights: tensorrt target, not x86-avx2's 7
    assert trt.settings()["calibration_method"] == "entropy"
    assert (cfg.target, cfg.modelopt.high_precision_dtype) == ("x86-avx2", "fp32")


@pytest.mark.skipif(tensorrt_unavailable_reason() is not None,
                    reason=f"needs an NVIDIA GPU with TensorRT: {tensorrt_unavailable_reason()}")
@pytest.mark.slow
@pytest.mark.gpu
def test_engine_build_and_run_on_gpu(tmp_path: Path):
    from evaluation.pipelines.tensorrt_runner import TensorRTRunner
    from quantization.run_config import RunConfig
    from quantization.workflow import prepare, run_toolchain

    cfg = RunConfig()
    cfg.models_dir = str(tmp_path)
    cfg.calibration.size = 64
    prepared = prepare(cfg)
    artifacts = run_toolchain("tensorrt", cfg, prepared)
    x = np.stack([prepared.splits.evaluation[i][0].numpy() for i in range(64)])
    y = np.array([prepared.splits.evaluation[i][1] for i in range(64)])
    for artifact in artifacts:
        assert artifact.kind == "trt_plan" and artifact.manifest["tensorrt_version"]
        assert np.mean(TensorRTRunner(artifact).predict(x).argmax(1) == y) > 0.9
