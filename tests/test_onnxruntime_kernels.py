"""The report's reason why a Q/DQ file runs slower than FP32 on ONNX Runtime: counted from ONNX Runtime's own
optimised graph, the causes read from the file."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from evaluation.pipelines.onnxruntime_kernels import (
    CLIP_KEPT,
    NO_OUTPUT_Q,
    SIGNED_SHARED,
    float_causes,
    int8_activations_fuse,
    integer_op_count,
    kernel_note,
)
from evaluation.pipelines.onnxruntime_runner import make_session
from evaluation.report.tables import warnings_for


def _qdq_conv(activation: int, output_q: bool, relu_first: bool = False) -> onnx.ModelProto:
    """x -> Q/DQ (``activation`` type, zero point 0) -> Conv (int8 per-channel weights) [-> Q/DQ] -> Relu -> y;
    ``relu_first``: Conv -> Relu -> Q/DQ -> y."""
    rng = np.random.default_rng(0)
    zero = np.array(0, np.int8 if activation == TensorProto.INT8 else np.uint8)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(zero, "zp"),
             numpy_helper.from_array(rng.integers(-127, 128, (8, 3, 3, 3)).astype(np.int8), "w_q"),
             numpy_helper.from_array(np.full(8, 0.01, np.float32), "w_s"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "s", "zp"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], axis=0),
             helper.make_node("Conv", ["x_dq", "w"], ["c"], pads=[1, 1, 1, 1], name="conv")]
    if relu_first:
        nodes += [helper.make_node("Relu", ["c"], ["r"]), helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["r_q"]),
                  helper.make_node("DequantizeLinear", ["r_q", "s", "zp"], ["y"])]
    elif output_q:
        nodes += [helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["c_q"]),
                  helper.make_node("DequantizeLinear", ["c_q", "s", "zp"], ["c_dq"]),
                  helper.make_node("Relu", ["c_dq"], ["y"])]
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _note(model: onnx.ModelProto, tmp_path: Path) -> str | None:
    source, optimized = tmp_path / "m.onnx", tmp_path / "opt.onnx"
    onnx.save(model, source)
    make_session(str(source), 1, ["CPUExecutionProvider"], save_optimized=str(optimized))
    return kernel_note(model, onnx.load(str(optimized)))


def test_a_conv_with_u8_activations_and_a_q_on_its_output_runs_as_an_integer_kernel(tmp_path):
    model = _qdq_conv(TensorProto.UINT8, output_q=True)
    assert _note(model, tmp_path) is None
    assert integer_op_count(onnx.load(str(tmp_path / "opt.onnx"))) == 1


def test_q_dq_on_the_inputs_only_is_named_as_the_reason_it_runs_in_float(tmp_path):
    model = _qdq_conv(TensorProto.UINT8, output_q=False)
    note = _note(model, tmp_path)
    assert note is not None and "runs 0 of the file's 1 quantized" in note and NO_OUTPUT_Q in note
    assert float_causes(model) == (1, 1, {NO_OUTPUT_Q: 1})


@pytest.mark.parametrize("activation", [TensorProto.INT8, TensorProto.UINT8])
def test_signed_activations_fuse_but_not_behind_a_relu_the_q_does_not_clip(tmp_path, activation):
    """Measured: a signed-INT8 Conv with its output Q runs as QLinearConv; Conv -> Relu -> Q(int8, zero point 0)
    does not (the Q keeps negative values, so the Relu stays), Conv -> Relu -> Q(uint8, zero point 0) does."""
    assert _note(_qdq_conv(activation, output_q=True), tmp_path) is None
    model = _qdq_conv(activation, output_q=False, relu_first=True)
    note = _note(model, tmp_path)
    if activation == TensorProto.UINT8:
        assert note is None and float_causes(model) == (1, 0, {})
    else:
        assert note is not None and CLIP_KEPT in note and float_causes(model) == (1, 1, {CLIP_KEPT: 1})


@pytest.mark.skipif(int8_activations_fuse(), reason="ONNX Runtime takes signed INT8 activations on ARM")
@pytest.mark.parametrize("activation", [TensorProto.INT8, TensorProto.UINT8])
def test_a_signed_input_pair_shared_by_two_convs_keeps_both_in_float_on_x86(tmp_path, activation):
    """Measured: two Convs reading one signed Q/DQ pair, each with its output Q, run in float; with u8, both fuse."""
    model = _qdq_conv(activation, output_q=True)
    graph = model.graph
    graph.node.extend([helper.make_node("Conv", ["x_dq", "w"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
                       helper.make_node("QuantizeLinear", ["c2", "s", "zp"], ["c2_q"]),
                       helper.make_node("DequantizeLinear", ["c2_q", "s", "zp"], ["c2_dq"])])
    next(n for n in graph.node if n.op_type == "Relu").output[0] = "r"
    graph.node.append(helper.make_node("Add", ["r", "c2_dq"], ["y"]))
    note = _note(model, tmp_path)
    if activation == TensorProto.UINT8:
        assert note is None and float_causes(model) == (2, 0, {})
    else:
        assert note is not None and "runs 0 of the file's 2" in note and SIGNED_SHARED in note
        assert float_causes(model) == (2, 2, {SIGNED_SHARED: 2})


def test_the_reason_follows_the_slower_than_fp32_warning_once():
    row = {"artifact": "m_int8", "precision": "int8", "artifact_precision": "int8", "runtime": "onnxruntime",
           "latency": {"1": {"p50_ms": 2.0}, "16": {"p50_ms": 30.0}}, "speedup": {"1": 0.5, "16": 0.4},
           "top1_drop_pp": 0.0, "kernel_note": "ONNX Runtime runs 0 of its 1 quantized Conv/MatMul/Gemm ..."}
    notes = warnings_for([row], 1.0)
    assert sum("slower than true FP32" in n for n in notes) == 2
    assert [n for n in notes if "why it is slower" in n] == [f"m_int8 @ onnxruntime: why it is slower: {row['kernel_note']}"]
    assert not any("why" in n for n in warnings_for([{**row, "speedup": {"1": 1.5, "16": 1.2}}], 1.0))
