"""What a QuantizeLinear of a constant computes, in numpy: shared by the ModelOpt weight fold (which stores
it) and the static saturation check (which reads it), so both see the same INT8 values. Also the graph maps
every ONNX graph pass here walks (who produces a tensor, who reads it)."""
from __future__ import annotations

from typing import Any

import numpy as np

#: the spatial axes of an NCHW activation
SPATIAL_AXES = (2, 3)


def onnx_opset(model: Any) -> int:
    """The model's default-domain opset version (0 where it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def reduce_over_spatial_axes(model: Any, node: Any, axes_name: str) -> None:
    """Make the Reduce ``node`` of ``model`` reduce over :data:`SPATIAL_AXES` (in place): an ``axes`` attribute
    below opset 18, an ``axes`` input from 18 on (the int64 initializer ``axes_name``, added on first use: an
    unused initializer is a warning in ONNX Runtime)."""
    from onnx import helper, numpy_helper

    if onnx_opset(model) < 18:
        node.attribute.append(helper.make_attribute("axes", list(SPATIAL_AXES)))
        return
    if not any(init.name == axes_name for init in model.graph.initializer):
        model.graph.initializer.append(numpy_helper.from_array(np.array(SPATIAL_AXES, dtype=np.int64), axes_name))
    node.input.append(axes_name)


def producers(graph: Any) -> dict[str, Any]:
    """Tensor name -> the node that writes it."""
    return {out: node for node in graph.node for out in node.output}


def initializers(graph: Any) -> dict[str, Any]:
    """Initializer name -> its TensorProto."""
    return {t.name: t for t in graph.initializer}


def consumers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def node_attr(node: Any, name: str, default: Any) -> Any:
    """An attribute of an ONNX node, as its Python value (int, bytes, list...), ``default`` where it is not set."""
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def quantize_constant(weight: np.ndarray, scale: np.ndarray, axis: int, low: int = -128, high: int = 127) -> np.ndarray:
    """round(weight / scale) (half to even, as QuantizeLinear) clipped to [low, high], as int8; a per-channel
    ``scale`` is broadcast along ``axis``."""
    if scale.ndim and weight.ndim:
        shape = [1] * weight.ndim
        shape[axis % weight.ndim] = scale.size
        scale = scale.reshape(shape)
    return np.clip(np.rint(weight / scale), low, high).astype(np.int8)
