"""Deployment targets, the ONNX weight fold / overflow fix, the static saturation check, the reference runtime.

Every expectation here names its target explicitly, so the tests mean the same on a VNNI and an AVX2 machine.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from evaluation.pipelines.onnxruntime_runner import make_session
from evaluation.saturation_check import LayerWeights, check_layers, onnx_int8_layers, worst_pair_sum
from quantization.onnx_weights import fold_weight_quantizers
from utils.errors import SuiteError
from utils.hardware import has_amx_int8, has_int8_dot_product
from utils.targets import TARGETS, resolve_target


def test_auto_target_is_this_cpu_and_names_are_checked():
    import platform

    expected = "arm64" if platform.machine().lower() in ("aarch64", "arm64") else (
        "x86-amx" if has_amx_int8() else "x86-vnni" if has_int8_dot_product() else "x86-avx2")
    assert resolve_target("auto").name == expected == resolve_target(None).name
    assert resolve_target("x86-avx2").pair_sums_saturate and not resolve_target("x86-vnni").pair_sums_saturate
    assert not resolve_target("x86-amx").pair_sums_saturate
    assert not TARGETS["tensorrt"].cpu
    with pytest.raises(SuiteError, match="unknown --target 'x86-sse'"):
        resolve_target("x86-sse")


def test_the_weight_bit_policy_is_the_targets_and_every_toolchain_reads_it():
    """One policy per target (7-bit weights where u8 x s8 pair sums saturate in 16 bits), read by the ONNX,
    PT2E and FX toolchains alike; an explicit 7 or 8 always wins."""
    from quantization.run_config import load_config
    from quantization.Torch.qconfig import depthwise_weight_bits, weight_bits
    from quantization.workflow import make_quantizer

    assert {name: t.weight_bits() for name, t in TARGETS.items()} == {
        "x86-amx": 8, "x86-vnni": 8, "x86-avx2": 7, "arm64": 8, "tensorrt": 8}
    assert TARGETS["x86-vnni"].weight_bits(fbgemm_depthwise=True) == 7  # FBGEMM's depthwise kernel: 16-bit sums
    assert TARGETS["arm64"].weight_bits(fbgemm_depthwise=True) == 8
    assert TARGETS["x86-avx2"].weight_bits("8") == 8 and TARGETS["x86-vnni"].weight_bits(7) == 7
    for name in ("x86-vnni", "x86-avx2", "arm64"):
        cfg = load_config(None, {"target": name})
        expected = TARGETS[name].weight_bits()
        assert make_quantizer("ort", cfg).weight_bits() == expected
        assert make_quantizer("modelopt", cfg).weight_bits() == expected
        assert make_quantizer("torch_pt2e", cfg).weight_bits() == expected
        fx = make_quantizer("torch_fx", cfg).cfg.torch  # --backend auto, resolved for the target
        assert weight_bits(fx, TARGETS[name]) == expected  # 8-bit activations
        on_fbgemm = fx.backend in ("x86", "fbgemm")  # oneDNN on x86-vnni: its depthwise kernel sums in 32 bits
        assert on_fbgemm == (name != "x86-vnni")
        assert depthwise_weight_bits(fx, TARGETS[name]) == TARGETS[name].weight_bits(fbgemm_depthwise=on_fbgemm)
    qnnpack = load_config(None, {"target": "x86-avx2", "torch.backend": "qnnpack"}).torch
    assert weight_bits(qnnpack, TARGETS["x86-avx2"]) == 8  # not FBGEMM's kernels: the fix does not apply


def _qdq_conv(int32_bias: bool, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """x -> Q/DQ (u8) -> Conv(DQ(Q(float W)), bias) -> y, weights symmetric per channel as ModelOpt writes them."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    w_scale = (np.abs(weight).reshape(8, -1).max(1) / 127).astype(np.float32)
    x_scale, x_zp = np.float32(4.0 / 255), np.uint8(0)
    bias = rng.normal(size=8).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(w_scale, "w_scale"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_zp"), numpy_helper.from_array(np.array(x_scale), "x_scale"),
             numpy_helper.from_array(np.array(x_zp), "x_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"]),
             helper.make_node("QuantizeLinear", ["W", "w_scale", "w_zp"], ["Wq"], axis=0),
             helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["Wd"], axis=0)]
    if int32_bias:
        b_scale = (x_scale * w_scale).astype(np.float32)
        inits += [numpy_helper.from_array(np.rint(bias / b_scale).astype(np.int32), "b_q"),
                  numpy_helper.from_array(b_scale, "b_scale"), numpy_helper.from_array(np.zeros(8, np.int32), "b_zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["B"], axis=0))
    else:
        inits.append(numpy_helper.from_array(bias, "B"))
    nodes += [helper.make_node("Conv", ["xd", "Wd", "B"], ["conv"], pads=[1, 1, 1, 1]),
              helper.make_node("QuantizeLinear", ["conv", "x_scale", "x_zp"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "x_scale", "x_zp"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.uniform(0, 4, size=(16, 4, 8, 8)).astype(np.float32)
    return model, x


def _run(model: onnx.ModelProto, x: np.ndarray, tmp_path, name: str, optimize: bool) -> np.ndarray:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    session = make_session(str(path), 1, ["CPUExecutionProvider"], optimize=optimize)
    return session.run(None, {"x": x})[0]


def test_eight_bit_fold_stores_int8_weights_with_the_same_math(tmp_path):
    model, x = _qdq_conv(int32_bias=False)
    before = _run(model, x, tmp_path, "before", optimize=False)
    size_before = model.ByteSize()
    result = fold_weight_quantizers(model, 8)
    assert result.weights_folded == 1
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "W" for n in model.graph.node)
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert "W" not in stored and stored["W_int8"].dtype == np.int8
    assert model.ByteSize() < 0.5 * size_before  # 288 float weights -> 288 bytes
    np.testing.assert_array_equal(_run(model, x, tmp_path, "after", optimize=False), before)


@pytest.mark.parametrize("int32_bias", [False, True])
def test_seven_bit_fold_doubles_the_scale_and_keeps_fused_kernels_right(tmp_path, int32_bias):
    """The overflow fix: |q| <= 64 on twice the scale. An int32 bias must follow its weight's scale, or the
    fused kernels (which assume bias scale = input scale x weight scale) compute garbage."""
    model, x = _qdq_conv(int32_bias)
    exact_8bit = _run(model, x, tmp_path, "before", optimize=False)
    w_scale = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w_scale"))
    result = fold_weight_quantizers(model, 7)
    assert result.biases_rescaled == int(int32_bias)
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert np.abs(stored["W_int7"]).max() <= 64
    np.testing.assert_allclose(stored["w_scale_x2"], 2 * w_scale)
    reference = _run(model, x, tmp_path, "ref", optimize=False)
    fused = _run(model, x, tmp_path, "fused", optimize=True)
    step = 4.0 / 255
    assert np.mean(np.abs(reference - exact_8bit)) < 2 * step  # one coarser weight grid, same function
    assert np.mean(np.abs(fused - reference) > 1.5 * step) < 0.01  # fused INT8 kernels agree with the Q/DQ math


def test_worst_pair_sum_and_the_verdict_per_target():
    full = np.array([[127, 120, -3, 5]], np.int8)
    seven = np.array([[64, 64, -64, -64]], np.int8)
    assert worst_pair_sum(full, 255) == 255 * 247
    assert worst_pair_sum(seven, 255) == 255 * 128 <= 32767
    dense = LayerWeights("dense", full, depthwise=False)
    depthwise = LayerWeights("dw", full, depthwise=True)
    avx2, vnni = TARGETS["x86-avx2"], TARGETS["x86-vnni"]
    assert check_layers([dense, depthwise], avx2, 255, "onnx").at_risk == ["dense", "dw"]
    assert check_layers([dense, depthwise], vnni, 255, "onnx").at_risk == []
    assert check_layers([dense, depthwise], vnni, 255, "fbgemm").at_risk == ["dw"]  # FBGEMM's depthwise kernel
    assert check_layers([dense], avx2, 127, "fbgemm").safe  # 7-bit activations (reduce_range)
    verdict = check_layers([dense, LayerWeights("ok", seven, False)], avx2, 255, "onnx")
    assert verdict.summary() == "1 of 2 layers can saturate on x86-avx2 (worst pair sum 62985 > 32767)"


def test_static_check_reads_onnx_weights_before_and_after_the_fix(tmp_path):
    model, _ = _qdq_conv(int32_bias=False)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    (layer,) = onnx_int8_layers(path)  # a QuantizeLinear of a float constant is read as the int8 it computes
    assert np.abs(layer.weight).max() == 127
    assert not check_layers([layer], TARGETS["x86-avx2"], 255, "onnx").safe
    fold_weight_quantizers(model, 7)
    onnx.save(model, str(path))
    (layer,) = onnx_int8_layers(path)
    assert check_layers([layer], TARGETS["x86-avx2"], 255, "onnx").safe


@pytest.mark.slow
def test_the_report_shows_target_verdict_reference_and_kernel_error(tmp_path):
    """An ORT artifact built for x86-vnni (8-bit weights), evaluated here: the report names its target, both
    static verdicts, its reference accuracy and the kernel error; it warns exactly where this CPU's kernels
    can saturate it (keyed to utils.hardware: on a VNNI machine there is no warning to give)."""
    import json

    from tests.conftest import run_script

    result = run_script("-m", "resnet.run", "--toolchains", "ort", "--target", "x86-vnni", "--limit", "100",
                        "--calib-size", "64", "--rounds", "1", "--warmup", "0", "--bench-batch-sizes", "1",
                        "--runtimes", "onnxruntime,onnxruntime_reference", "--models-dir", str(tmp_path / "m"),
                        "--results-dir", str(tmp_path / "r"), "--run-name", "t")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "t" / "report.json").read_text())
    (check,) = report["int8_checks"]
    assert check["target"] == "x86-vnni" and check["this_cpu"] == resolve_target("auto").name
    assert check["verdict_target"]["safe"] and check["verdict_target"]["summary"].startswith("0 of 20 layers")
    assert check["reference_top1"] is not None
    (ort,) = check["runtimes"]
    assert ort["runtime"] == "onnxruntime" and ort["recommended"] and ort["kernel_error_pp"] is not None
    row = next(r for r in report["rows"] if r["precision"] == "int8" and r["runtime"] == "onnxruntime")
    assert row["kernel_error_pp"] == pytest.approx(100 * (check["reference_top1"] - row["top1"]))
    saturation_warned = any("can saturate" in w for w in report["warnings"])
    assert saturation_warned == resolve_target("auto").pair_sums_saturate
    assert not any("onnxruntime_reference at batch" in w for w in report["warnings"])  # not an INT8 speed
    markdown = (tmp_path / "r" / "t" / "report.md").read_text()
    assert "## INT8 artifacts: target, saturation check, quantization vs kernel error" in markdown
