"""Q/DQ ONNX weights stored as INT8, optionally on the 7-bit grid that AVX2 kernels need.

ModelOpt 0.47 writes each weight as float initializer -> QuantizeLinear -> DequantizeLinear, so its
files are as large as FP32 and the CPU runtime folds the QuantizeLinear at load time. Folding it here
stores the INT8 values themselves (DequantizeLinear only, what ONNX Runtime's ``quantize_static``,
TensorRT and OpenVINO all read), making the file about 4x smaller with the same math.

The same pass is the ONNX-level overflow fix for targets whose u8 x s8 kernels add pairs of products
in saturating 16-bit lanes (x86 AVX2 without VNNI, see ``utils.targets``): each weight's scale is
doubled and its values rounded onto that coarser grid, so |q| <= 64 and every pair sum stays within
255 x 64 x 2 = 32,640. This is NNCF's overflow fix (half the levels, twice the scale). A bias stored
as int32 must follow its weight's scale (fused kernels assume bias scale = input scale x weight
scale; re-gridding weights without it broke them completely), so such a bias is re-scaled too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from utils.onnx_qdq import consumers as graph_consumers
from utils.onnx_qdq import initializers, node_attr, quantize_constant
from utils.onnx_qdq import producers as graph_producers

log = logging.getLogger(__name__)

#: the largest |q| of 7-bit weights on the doubled-scale grid (2 x 255 x 64 fits in int16)
SEVEN_BIT_LIMIT = 64


@dataclass
class FoldResult:
    weights_folded: int  # QuantizeLinear nodes of constant weights replaced by INT8 initializers
    biases_rescaled: int  # int32 biases re-scaled with their weight's doubled scale
    weight_bits: int


def fold_weight_quantizers(model, weight_bits: int = 8) -> FoldResult:
    """Replace QuantizeLinear(float constant weight) by the INT8 weight it computes, in place.

    ``weight_bits=7`` doubles each folded weight's scale first (the AVX2 overflow fix). Only
    symmetric int8 quantizers (zero point 0) are folded; anything else is left as it is."""
    from onnx import numpy_helper

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")
    graph = model.graph
    inits = initializers(graph)
    users, producers = graph_consumers(graph), graph_producers(graph)
    new_inits, dropped_nodes, rescaled_scales = [], set(), {}
    biases = 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits or len(node.input) < 3:
            continue
        zp_name = node.input[2]
        if zp_name not in inits or node.input[1] not in inits:
            continue
        zero_point = numpy_helper.to_array(inits[zp_name])
        dequantizers = users.get(node.output[0], [])
        if zero_point.dtype != np.int8 or np.any(zero_point != 0) or not dequantizers or \
                any(d.op_type != "DequantizeLinear" for d in dequantizers):
            continue
        weight = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        axis = node_attr(node, "axis", 1)
        if weight_bits == 7:
            scale = scale * 2.0
        low, high = (-SEVEN_BIT_LIMIT, SEVEN_BIT_LIMIT) if weight_bits == 7 else (-128, 127)
        q = quantize_constant(weight, scale, axis, low, high)
        q_name = f"{node.input[0]}_int{weight_bits}"
        new_inits.append(numpy_helper.from_array(q, q_name))
        scale_name = node.input[1]
        if weight_bits == 7:
            scale_name = f"{node.input[1]}_x2"
            if scale_name not in rescaled_scales:
                new_inits.append(numpy_helper.from_array(scale.astype(numpy_helper.to_array(inits[node.input[1]]).dtype),
                                                         scale_name))
                rescaled_scales[scale_name] = True
        for dq in dequantizers:
            dq.input[0] = q_name
            dq.input[1] = scale_name
            if weight_bits == 7:
                biases += sum(_rescale_int32_bias(consumer, dq.output[0], producers, inits, new_inits)
                              for consumer in users.get(dq.output[0], []))
        dropped_nodes.add(id(node))
    kept = [n for n in graph.node if id(n) not in dropped_nodes]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    _drop_unused_initializers(model)
    result = FoldResult(len(dropped_nodes), biases, weight_bits)
    log.info("ONNX weights: %d stored as INT8 (%d-bit grid), %d int32 biases re-scaled", result.weights_folded,
             weight_bits, biases)
    return result


def _rescale_int32_bias(consumer, weight_output: str, producers: dict, inits: dict, new_inits: list) -> int:
    """Halve the int32 bias of ``consumer`` (and double its scale) when its weight's scale doubled."""
    from onnx import numpy_helper

    if consumer.op_type not in ("Conv", "Gemm") or len(consumer.input) < 3 or consumer.input[1] != weight_output:
        return 0
    bias_dq = producers.get(consumer.input[2])
    if bias_dq is None or bias_dq.op_type != "DequantizeLinear" or bias_dq.input[0] not in inits:
        return 0
    bias = numpy_helper.to_array(inits[bias_dq.input[0]])
    if bias.dtype != np.int32 or bias_dq.input[0].endswith("_x2"):
        return 0
    bias_scale = numpy_helper.to_array(inits[bias_dq.input[1]])
    new_inits.append(numpy_helper.from_array(np.rint(bias / 2.0).astype(np.int32), f"{bias_dq.input[0]}_x2"))
    new_inits.append(numpy_helper.from_array((bias_scale * 2.0).astype(bias_scale.dtype), f"{bias_dq.input[1]}_x2"))
    bias_dq.input[0], bias_dq.input[1] = f"{bias_dq.input[0]}_x2", f"{bias_dq.input[1]}_x2"
    return 1


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    dropped = {i.name for i in model.graph.initializer if i.name not in used}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    graph_inputs = [i for i in model.graph.input if i.name not in dropped]
    del model.graph.input[:]
    model.graph.input.extend(graph_inputs)
