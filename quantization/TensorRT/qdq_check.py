"""Checks a Q/DQ ONNX file against what TensorRT's explicit quantization needs, without TensorRT.

TensorRT takes INT8 only as symmetric, signed Q/DQ (zero point 0), weight scales per tensor or per
output channel (axis 0 of a Conv weight, the output axis of a Gemm/MatMul weight), and fuses a
Conv/Gemm into an INT8 kernel only where both its activation and its weight come through a
DequantizeLinear. Q/DQ on integer shape tensors is rejected. Each rule gives one clear message, so
a bad file fails here, on any machine, instead of in the engine build on the GPU host.

Verdicts: what TensorRT rejects or silently mis-runs is an error (non-zero or unsigned zero points, int32
bias Q/DQ, wrong per-channel axis or scale count, Q/DQ on shape tensors, a compute node with Q/DQ on one
input only: a broken placement). A compute node with no Q/DQ at all is a note: ModelOpt leaves such nodes
float on purpose and TensorRT runs them in the high-precision type, so the build goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import SuiteError
from utils.onnx_qdq import initializers

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SHAPE_CONSUMERS = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4),
                   "Resize": (1, 2, 3), "ConstantOfShape": (0,), "Range": (0, 1, 2)}


@dataclass
class QdqReport:
    quantized_layers: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)  # excluded on purpose: run in high precision
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _array(init_map: dict, name: str):
    import onnx.numpy_helper as nh

    return nh.to_array(init_map[name]) if name in init_map else None


def check_qdq_model(path: Path, allowed_float: list[str] | None = None) -> QdqReport:
    """Inspect ``path``; ``allowed_float`` names compute nodes excluded from quantization on purpose."""
    import numpy as np
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inits = initializers(graph)
    for node in graph.node:  # Constant nodes hold scales/zero points in some exporters
        if node.op_type == "Constant" and node.attribute:
            inits[node.output[0]] = node.attribute[0].t
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[tuple[object, int]]] = {}
    for node in graph.node:
        for idx, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, idx))
    report = QdqReport()
    allowed = set(allowed_float or [])
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        report.errors.append("no QuantizeLinear/DequantizeLinear nodes: not an explicitly quantized model")
        return report

    for node in qdq:
        zp = _array(inits, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None and zp.dtype == np.int32:
            report.errors.append(f"{node.name}: int32 bias quantization (ONNX Runtime's QDQ bias); TensorRT "
                                 "takes biases in float")
        elif zp is not None and zp.dtype != np.int8:
            report.errors.append(f"{node.name}: zero point of type {zp.dtype}; TensorRT needs signed INT8 "
                                 "(use ModelOpt int8, or ORT with --activation-type int8)")
        elif zp is not None and np.any(zp != 0):
            report.errors.append(f"{node.name}: non-zero zero point; TensorRT needs symmetric quantization")
        for consumer, idx in consumers.get(node.output[0], []):
            if idx in SHAPE_CONSUMERS.get(consumer.op_type, ()):
                report.errors.append(f"{node.name}: Q/DQ on the shape input of {consumer.op_type} "
                                     f"{consumer.name}; TensorRT rejects quantized shape tensors")
        source = producer.get(node.input[0])
        if source is not None and source.op_type in ("Shape", "Size"):
            report.errors.append(f"{node.name}: quantizes the output of {source.op_type}; shape paths must stay integer")

    for node in graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        act, weight = (producer.get(node.input[i]) for i in (0, 1))
        act_q = act is not None and act.op_type == "DequantizeLinear"
        w_q = weight is not None and weight.op_type == "DequantizeLinear"
        if not (act_q and w_q) and (node.name in allowed or not (act_q or w_q)):
            # ModelOpt leaves some compute nodes float on purpose (a GEMV when the calibration step is 1, convs
            # failing its channel rule, the user's exclusions); TensorRT runs them in the high-precision type
            report.float_layers.append(node.name)
            why = "excluded on request" if node.name in allowed else "left unquantized by the Q/DQ tool"
            report.notes.append(f"{node.name}: {node.op_type} runs in high precision ({why})")
            continue
        if not (act_q and w_q):
            missing = "activation" if not act_q else "weight"
            report.errors.append(f"{node.name} ({node.op_type}): no Q/DQ on its {missing}, Q/DQ on the other input: "
                                 "a broken placement (TensorRT runs it in float, not INT8)")
            continue
        report.quantized_layers.append(node.name)
        scale = _array(inits, weight.input[1])
        if scale is None or scale.size <= 1:
            report.notes.append(f"{node.name}: per-tensor weight scale")
            continue
        axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
        w = _array(inits, weight.input[0])
        if w is None and (wp := producer.get(weight.input[0])) is not None and wp.op_type == "QuantizeLinear":
            w = _array(inits, wp.input[0])
        rank = w.ndim if w is not None else 4
        axis = axis % rank
        if node.op_type == "Conv":
            expected = 0
        elif node.op_type == "ConvTranspose":
            expected = 1
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            expected = 0 if trans_b else 1
        else:
            expected = rank - 1
        if axis != expected:
            report.errors.append(f"{node.name} ({node.op_type}): per-channel weight scales on axis {axis}; "
                                 f"TensorRT needs the output-channel axis {expected}")
        elif w is not None and scale.size != w.shape[axis]:
            report.errors.append(f"{node.name}: {scale.size} weight scales for {w.shape[axis]} output channels")
    return report


def require_valid_qdq(path: Path, allowed_float: list[str] | None = None) -> QdqReport:
    """Raise SuiteError with the first problems where TensorRT would reject or fall back."""
    report = check_qdq_model(path, allowed_float)
    if not report.ok:
        more = f" (+{len(report.errors) - 3} more)" if len(report.errors) > 3 else ""
        raise SuiteError(f"{path.name} is not ready for a TensorRT INT8 build: " + "; ".join(report.errors[:3]) + more)
    return report
