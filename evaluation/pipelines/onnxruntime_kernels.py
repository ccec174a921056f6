"""Which quantized ops of a Q/DQ file ONNX Runtime runs with integer kernels, and why the others run in float.

ONNX Runtime turns DequantizeLinear -> Conv/MatMul/Gemm -> QuantizeLinear into one integer op (QLinearConv, ...)
only where its QDQ selectors take the group (onnxruntime/core/optimizer/qdq_transformer/selectors_actions/
qdq_selectors.cc): the op's output must go to a QuantizeLinear and nowhere else, through a Relu/Clip only where
that Q clips away what they would (a zero point at the bottom of its integer range). Any other group runs as
DequantizeLinear + the float kernel, slower than the FP32 file it came from. ModelOpt places Q/DQ the way
TensorRT takes it (on each op's inputs only; signed, symmetric activations), so ONNX Runtime runs almost all of it
in float: the report prints this note where INT8 is slower than FP32, instead of leaving the user to guess.
Signed activations alone are not a cause: measured with onnxruntime 1.24 on x86, a signed-INT8 Conv with its
output Q runs as QLinearConv.

The count of integer ops is read from the graph ONNX Runtime optimised (``optimized_model_filepath``); the causes
are read from the file itself.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from utils.onnx_qdq import consumers as graph_consumers
from utils.onnx_qdq import producers as graph_producers

#: float ops a Q/DQ toolchain quantizes (the ones with integer kernels in ONNX Runtime's CPU EP)
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
#: what ONNX Runtime fuses them into (on x86, QLinearConv in its NHWC form, com.microsoft domain)
INTEGER_OPS = ("QLinearConv", "NhwcQLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm")
#: ops ONNX Runtime looks through between the op and its QuantizeLinear (when the Q clips what they would)
CLIPS = ("Relu", "Clip")
#: the bottom of each integer range: a Q with this zero point clips what a Relu would
RANGE_BOTTOM = {2: 0, 3: -128}  # onnx.TensorProto.UINT8, INT8

NO_OUTPUT_Q = "no QuantizeLinear on its output"
SHARED_OUTPUT = "its output also feeds float ops"
CLIP_KEPT = "a Relu/Clip before its QuantizeLinear that the Q does not clip (zero point above the range's bottom)"
SIGNED_SHARED = ("signed INT8 input from a Q/DQ pair shared with other ops (x86 kernels take u8; ONNX Runtime turns "
                 "only an unshared signed pair into u8)")


def int8_activations_fuse() -> bool:
    """ONNX Runtime's ``QDQIsInt8Allowed``: its Conv/MatMul selectors take signed INT8 activations on ARM only."""
    from utils.targets import this_machine_target

    return this_machine_target().name == "arm64"


def _zero_point(node: Any, initializers: dict[str, Any]) -> Any:
    """The zero-point initializer of a QuantizeLinear/DequantizeLinear (None where it has none)."""
    return initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None


def _clips_at_bottom(q: Any, initializers: dict[str, Any]) -> bool:
    """Whether QuantizeLinear ``q`` maps every negative value to its smallest integer (as a Relu would)."""
    from onnx import numpy_helper

    zero = _zero_point(q, initializers)
    if zero is None:
        return True  # no zero point: uint8 0, the bottom
    return zero.data_type in RANGE_BOTTOM and int(numpy_helper.to_array(zero).flat[0]) == RANGE_BOTTOM[zero.data_type]


def _signed_and_shared(dq: Any, producers: dict[str, Any], consumers: dict[str, list[Any]],
                       initializers: dict[str, Any]) -> bool:
    """A signed-INT8 DequantizeLinear that feeds several ops, or whose QuantizeLinear feeds several DQs."""
    zero = _zero_point(dq, initializers)
    if zero is None or zero.data_type != 3:  # onnx.TensorProto.INT8
        return False
    q = producers.get(dq.input[0])
    return len(consumers.get(dq.output[0], [])) > 1 or (q is not None and len(consumers.get(q.output[0], [])) > 1)


def float_causes(model: Any) -> tuple[int, int, Counter]:
    """(quantized ops in the file, how many of them have a cause, cause -> how many ops it keeps in float).

    A quantized op is a Conv/MatMul/Gemm whose activation input comes from DequantizeLinear; one op can have
    several causes."""
    producers, consumers = graph_producers(model.graph), graph_consumers(model.graph)
    initializers = {init.name: init for init in model.graph.initializer}
    causes: Counter = Counter()
    total = explained = 0
    signed_fuses = int8_activations_fuse()
    for node in model.graph.node:
        dq = producers.get(node.input[0]) if node.input else None
        if node.op_type not in QUANTIZED_OPS or dq is None or dq.op_type != "DequantizeLinear":
            continue
        total += 1
        after = consumers.get(node.output[0], [])
        clip = after[0] if len(after) == 1 and after[0].op_type in CLIPS else None
        if clip is not None:
            after = consumers.get(clip.output[0], [])
        quantizers = [n for n in after if n.op_type == "QuantizeLinear"]
        found = []
        if not quantizers:
            found.append(NO_OUTPUT_Q)
        elif len(after) > 1:
            found.append(SHARED_OUTPUT)
        elif clip is not None and not _clips_at_bottom(quantizers[0], initializers):
            found.append(CLIP_KEPT)
        if not signed_fuses and _signed_and_shared(dq, producers, consumers, initializers):
            found.append(SIGNED_SHARED)
        causes.update(found)
        explained += bool(found)
    return total, explained, causes


def integer_op_count(optimized: Any) -> int:
    return sum(node.op_type in INTEGER_OPS for node in optimized.graph.node)


def kernel_note(original: Any, optimized: Any) -> str | None:
    """One line for the report: how many quantized ops run as integer kernels, and why the rest do not.

    None where the file has no quantized op or ONNX Runtime fused all of them."""
    total, explained, causes = float_causes(original)
    integer = integer_op_count(optimized)
    if total == 0 or integer >= total:
        return None
    why = [f"{count} with {cause}" for cause, count in causes.most_common()]
    unexplained = total - integer - explained
    if unexplained > 0:
        why.append(f"{unexplained} for a reason not identified here")
    return (f"ONNX Runtime runs {integer} of the file's {total} quantized Conv/MatMul/Gemm as integer kernels, the "
            f"rest as DequantizeLinear + float kernel ({'; '.join(why)})")
