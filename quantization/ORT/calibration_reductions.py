"""ONNX Runtime's MinMax calibration graph with its reductions split in two: spatial axes in the graph, the rest here.

ORT's ``MinMaxCalibrater.augment_graph`` gives every calibrated tensor a ``ReduceMin`` and a ``ReduceMax`` over
all axes, each followed by a ``Reshape`` to ``[-1]`` that is a graph output. On a 4-D activation ONNX Runtime's
CPU kernels run that all-axes reduction slower than one over the spatial axes alone (ResNet-50, batch 4,
x86-vnni: the calibration graph at 54-74 ms per image, the same graph reducing axes 2 and 3 at 50-57 ms; the
plain FP32 model runs at 38-43 ms). :func:`reduce_spatial_axes_only` rewrites those reductions to
axes ``[2, 3]``; :class:`PartialReductions` finishes them in numpy, so the calibrator gets the same
one-element arrays, with the same values: the minimum of the per-(image, channel) minima is the minimum
(tests/test_ort_calibration.py compares them exactly). Reductions ORT already restricts (per-channel
calibration) and tensors of another rank are left alone.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from utils.onnx_qdq import consumers, initializers, reduce_over_spatial_axes

_FINISH: dict[str, Callable[..., np.ndarray]] = {"ReduceMin": np.min, "ReduceMax": np.max}


def _ranks(model: Any) -> dict[str, int]:
    infos = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    return {vi.name: len(vi.type.tensor_type.shape.dim) for vi in infos if vi.type.tensor_type.HasField("shape")}


def _orts_reductions(model: Any) -> dict[str, Any]:
    """ORT's calibration reductions, as ``augment_graph`` builds them: graph output ``<tensor>_ReduceMin`` (or
    Max) <- Reshape to ``[-1]`` <- ReduceMin named like the output, over every axis, feeding that Reshape alone.
    Returns graph output name -> the reduce node."""
    from onnx import numpy_helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    inits, readers = initializers(graph), consumers(graph)
    reshapes = {n.input[0]: n for n in graph.node if n.op_type == "Reshape" and len(n.input) == 2
                and n.output[0] in outputs and n.input[1] in inits
                and numpy_helper.to_array(inits[n.input[1]]).tolist() == [-1]}
    found = {}
    for node in graph.node:
        reshape = reshapes.get(node.output[0])
        if (node.op_type in _FINISH and reshape is not None and node.name == reshape.output[0]
                and len(readers.get(node.output[0], ())) == 1 and len(node.input) == 1
                and not any(a.name in ("axes", "noop_with_empty_axes") for a in node.attribute)):
            found[reshape.output[0]] = node
    return found


def calibrated_tensors(model: Any) -> set[str]:
    """The tensors whose ranges ORT's calibration graph gathers (:func:`_orts_reductions`)."""
    return {node.input[0] for node in _orts_reductions(model).values()}


def drop_reductions(model: Any, tensors: set[str]) -> set[str]:
    """Remove, in place, ORT's calibration reductions of each tensor in ``tensors``: its ReduceMin and its
    ReduceMax, their Reshapes and graph outputs. A tensor goes whole or stays (calibrators pair the added outputs
    two by two, min then max). Without its Reduce consumers ONNX Runtime can fuse the node that makes it with its
    one consumer again (a Conv with its Relu or Add). Returns the tensors dropped."""
    found = _orts_reductions(model)
    halves: dict[str, list[str]] = {}
    for output, node in found.items():
        if node.input[0] in tensors:
            halves.setdefault(node.input[0], []).append(output)
    dropped = {tensor for tensor, outputs in halves.items() if len(outputs) == 2}
    outputs = {output for tensor in dropped for output in halves[tensor]}
    reduces = {found[output].output[0] for output in outputs}
    graph = model.graph
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.output[0] in reduces or (node.op_type == "Reshape" and node.output[0] in outputs):
            del graph.node[index]
    for index in reversed(range(len(graph.output))):
        if graph.output[index].name in outputs:
            del graph.output[index]
    return dropped


def reduce_spatial_axes_only(model: Any) -> dict[str, Callable[..., np.ndarray]]:
    """Rewrite, in place, each of ORT's all-axes calibration reductions (:func:`_orts_reductions`) of a 4-D
    tensor to reduce axes 2 and 3 only. Returns graph output name -> the numpy reduction that finishes it
    (:class:`PartialReductions`); reductions of any other shape are left alone."""
    import uuid

    ranks = _ranks(model)
    axes_name = f"calibration_spatial_axes_{uuid.uuid4().hex}"
    finish: dict[str, Callable[..., np.ndarray]] = {}
    for output, node in _orts_reductions(model).items():
        if ranks.get(node.input[0]) != 4:
            continue
        reduce_over_spatial_axes(model, node, axes_name)
        finish[output] = _FINISH[node.op_type]
    return finish


class PartialReductions:
    """A session over a graph rewritten by :func:`reduce_spatial_axes_only`: ``run`` finishes the partial
    reductions, so a calibrator sees what the all-axes graph would give it."""

    def __init__(self, session: Any, finish: dict[str, Callable[..., np.ndarray]]) -> None:
        self._session = session
        self._finish = finish
        self._names = [o.name for o in session.get_outputs()]

    def run(self, output_names: Any, feed: dict[str, np.ndarray], *args: Any, **kwargs: Any) -> list:
        names = self._names if output_names is None else list(output_names)
        values = self._session.run(None if output_names is None else names, feed, *args, **kwargs)
        return [self._finish[n](v, keepdims=False).reshape(1) if n in self._finish else v
                for n, v in zip(names, values, strict=True)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
