"""The fast bias correction on an ONNX graph, its statistics gathered in the ONNX toolchains' calibration session.

The correction is :class:`~quantization.transforms.bias_correction.InputSums`' (each layer's bias takes minus the
mean of (Q(W) - W) x over the FP32 inputs x, which is (Q(W) - W) applied to the summed inputs), computed where
the ONNX toolchains already run the FP32 graph: their MinMax / max calibration session in ONNX Runtime. A
``ReduceSum`` over the batch axis of each Conv and Gemm input, added to the calibration graph, gives the sums;
:class:`SummingSession` keeps them and hands the calibrator only its own outputs. The corrected biases are then
written into the graph the toolchain quantizes (ORT) or into its Q/DQ output (ModelOpt, whose weights are
quantized to the same grid). This replaces the separate FP32 pass of the PyTorch model, as NNCF gathers its
bias-correction statistics in the pass that gathers its ranges.

Layers it cannot read exactly (a Conv with ``auto_pad``, a Gemm with ``transA`` or alpha/beta other than 1, a weight
that is not an initializer) are left as they are and counted in the log.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from quantization.transforms.weight_scheme import WeightScheme, fake_quantize_weight
from utils.onnx_qdq import consumers, initializers, node_attr, producers, reduce_over_spatial_axes

log = logging.getLogger(__name__)

SUM_SUFFIX = "_bias_correction_sum"


def correctable_nodes(model: Any) -> dict[str, Any]:
    """Name -> node of each 2-D Conv and plain Gemm whose weight is an initializer: the layers corrected."""
    inits = initializers(model.graph)
    nodes = {}
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[1] not in inits or not node.name:
            continue
        if node.op_type == "Conv" and len(inits[node.input[1]].dims) == 4 \
                and node_attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", b""):
            nodes[node.name] = node
        elif node.op_type == "Gemm" and not node_attr(node, "transA", 0) \
                and node_attr(node, "alpha", 1.0) == 1.0 and node_attr(node, "beta", 1.0) == 1.0:
            nodes[node.name] = node
    return nodes


def _pointwise(node: Any, inits: dict[str, Any]) -> bool:
    """A 1x1 Conv at stride 1 without padding: each output position reads one input position, so its mean output
    is the kernel applied to the input's mean over the positions, and that mean is all the correction needs."""
    if node.op_type != "Conv" or list(inits[node.input[1]].dims[2:]) != [1, 1]:
        return False
    return all(s == 1 for s in node_attr(node, "strides", [1, 1])) and not any(node_attr(node, "pads", [0, 0, 0, 0]))


def add_input_sums(model: Any, nodes: dict[str, Any]) -> dict[str, str]:
    """Add to ``model`` (in place) a graph output per node: its input summed over the batch axis, or for a
    pointwise Conv (:func:`_pointwise`) its input's spatial mean summed over the batch: one number per channel
    rather than a whole map to copy out of the session and add up at every batch (on ResNet-50, 33 of its 53
    convs).

    Returns output name -> node name."""
    from onnx import TensorProto, helper, numpy_helper

    inits = initializers(model.graph)
    axes = f"axes{SUM_SUFFIX}"
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], dtype=np.int64), axes))
    outputs = {}
    for name, node in nodes.items():
        out, summed = f"{name}{SUM_SUFFIX}", node.input[0]
        if _pointwise(node, inits):
            summed = f"{name}_spatial_mean{SUM_SUFFIX}"
            mean = helper.make_node("ReduceMean", [node.input[0]], [summed], name=summed, keepdims=1)
            reduce_over_spatial_axes(model, mean, f"spatial_axes{SUM_SUFFIX}")
            model.graph.node.append(mean)
        model.graph.node.append(helper.make_node("ReduceSum", [summed, axes], [out], name=out, keepdims=1))
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        outputs[out] = name
    return outputs


class SummingSession:
    """An ONNX Runtime session over a calibration graph with :func:`add_input_sums` outputs, to a calibrator
    that calls ``run(None, feed)`` and ``get_outputs()``: it sums the added outputs over every batch and shows
    the calibrator only the graph's other outputs, in their order."""

    def __init__(self, session: Any, sum_outputs: dict[str, str], model: Any) -> None:
        self.model = model  # the calibration graph, whose FP32 weights the sums meet
        self._session = session
        self._sum_outputs = sum_outputs
        self._names = [o.name for o in session.get_outputs()]
        self._kept = [o for o in session.get_outputs() if o.name not in sum_outputs]
        self.sums: dict[str, np.ndarray] = {}  # node name -> summed input
        self.count = 0  # samples seen

    def get_outputs(self) -> list:
        """The calibration graph's own outputs: what the calibrator pairs with ``run``'s values."""
        return self._kept

    def run(self, output_names: Any, feed: dict[str, np.ndarray], *args: Any, **kwargs: Any) -> list:
        """Run every output; keep the sums, return the rest in :meth:`get_outputs`' order."""
        if output_names is not None:  # a calibrator that names its outputs does not get the sums' graph
            raise ValueError("SummingSession runs the whole calibration graph (output_names None)")
        values = self._session.run(None, feed, *args, **kwargs)
        kept = []
        for name, value in zip(self._names, values, strict=True):
            node = self._sum_outputs.get(name)
            if node is None:
                kept.append(value)
            elif node in self.sums:
                np.add(self.sums[node], value, out=self.sums[node])  # in place: no new float64 array per batch
            else:
                self.sums[node] = value.astype(np.float64)
        self.count += len(next(iter(feed.values())))
        return kept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _depthwise(node: Any, weight: np.ndarray) -> bool:
    groups = node_attr(node, "group", 1)
    return groups > 1 and weight.shape[1] == 1 and weight.shape[0] == groups


def _shift(node: Any, weight: np.ndarray, summed: np.ndarray, count: int, scheme: WeightScheme) -> np.ndarray:
    """Mean per output channel of (Q(W) - W) x over the ``count`` samples whose inputs sum to ``summed``."""
    if node.op_type == "Gemm":
        w = torch.tensor(weight if node_attr(node, "transB", 0) else weight.T)  # [out, in] (a copy: ONNX arrays are read-only)
        error = fake_quantize_weight(w, scheme) - w
        x = torch.from_numpy(summed.astype(np.float32)).reshape(1, -1)
        return ((x @ error.T)[0] / count).numpy()
    w = torch.tensor(weight)  # a copy: onnx.numpy_helper arrays are read-only, which torch warns about
    error = fake_quantize_weight(w, scheme.for_layer(depthwise=_depthwise(node, weight))) - w
    pads = list(node_attr(node, "pads", [0, 0, 0, 0]))
    x = F.pad(torch.from_numpy(summed.astype(np.float32)), (pads[1], pads[3], pads[0], pads[2]))
    y = F.conv2d(x, error, None, stride=tuple(node_attr(node, "strides", [1, 1])),
                 dilation=tuple(node_attr(node, "dilations", [1, 1])), groups=node_attr(node, "group", 1))
    return (y.sum(dim=(0, 2, 3)) / (count * y.shape[2] * y.shape[3])).numpy()


def fold_shifts(model: Any, sums: dict[str, np.ndarray], count: int, scheme: WeightScheme,
                skip: set[str] | frozenset = frozenset(), skip_op_types: set[str] | frozenset = frozenset(),
                weights_from: Any = None) -> int:
    """Fold each node's negated mean rounding shift into its float bias in ``model`` (in place); nodes named in
    ``skip`` or of a type in ``skip_op_types`` (left in float) keep theirs.

    ``weights_from``: the calibration graph, whose FP32 weights the sums met, where ``model`` holds them behind
    Q/DQ already (ModelOpt's output); only the nodes whose weight there comes out of a DequantizeLinear are
    corrected (a layer the toolchain left in float has no rounding error). Else the weights are ``model``'s own,
    before Q/DQ (ORT). How many layers were corrected."""
    from onnx import numpy_helper

    inits = initializers(model.graph)
    weights = initializers((weights_from or model).graph)
    readers, writers = consumers(model.graph), producers(model.graph)

    def quantized(node: Any) -> bool:
        return weights_from is None or getattr(writers.get(node.input[1]), "op_type", None) == "DequantizeLinear"

    layers = correctable_nodes(weights_from or model)
    nodes = {n.name: n for n in model.graph.node if n.name in layers and n.name not in skip
             and n.op_type not in skip_op_types and quantized(n)}
    corrected = 0
    for name, summed in sums.items():
        node = nodes.get(name)
        if node is None:
            continue
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias_name is not None and bias_name not in inits:
            continue  # a computed bias: not this correction's to change
        weight = numpy_helper.to_array(weights[layers[name].input[1]])
        shift = _shift(node, weight, summed, count, scheme).astype(np.float32)
        bias = numpy_helper.to_array(inits[bias_name]) if bias_name else np.zeros(len(shift), np.float32)
        new_name = bias_name if bias_name and len(readers[bias_name]) == 1 else f"{name}_bias_corrected"
        tensor = numpy_helper.from_array((bias - shift).astype(np.float32), new_name)
        if new_name in inits:
            inits[new_name].CopyFrom(tensor)
        else:
            model.graph.initializer.append(tensor)
            if len(node.input) > 2:
                node.input[2] = new_name
            else:
                node.input.append(new_name)
        corrected += 1
    log.info("bias correction (fast, in the ONNX calibration session, %s weights): %d of %d layers corrected",
             scheme.describe(), corrected, len(layers))
    return corrected
