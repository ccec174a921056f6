"""Zero padding folded into the Conv that follows it, in the FP32 ONNX every ONNX toolchain quantizes.

TensorFlow-style 'SAME' padding of a stride-2 convolution on an even input is asymmetric (one more row/column
at the end), so the EfficientNet ports run ``ZeroPad2d(l, l+1, l, l+1)`` and then a conv with padding 0, which
torch exports as a Pad node (its amounts computed by a small constant subgraph) before the Conv. A Q/DQ
toolchain then quantizes the Pad's output as a tensor of its own, and OpenVINO can no longer fuse the Pad into
the convolution: measured on EfficientNet-Lite0 (x86-vnni, batch 16, dynamic batch axis), the five Pads and the
reorders and FakeQuantize around them took 25 of the 56 ms of ORT's Q/DQ file, while NNCF's IR (quantized
before the Pad) ran in 37 ms. ONNX's Conv takes begin and end pads separately, so the same function is one Conv
with ``pads = [t, l, b, r]``: exactly the same FP32 math, and nothing left between the Q/DQ and the conv.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from utils.onnx_qdq import consumers as graph_consumers
from utils.onnx_qdq import initializers as graph_initializers
from utils.onnx_qdq import node_attr
from utils.onnx_qdq import producers as graph_producers

log = logging.getLogger(__name__)


def _constant_value(model: Any, name: str, producers: dict[str, Any], initializers: dict[str, Any]) -> np.ndarray | None:
    """The value of tensor ``name`` where it depends on constants only (an initializer or a subgraph of
    Constant-fed nodes, evaluated with ONNX's reference evaluator); None where it depends on a graph input."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    needed: set[str] = set()  # first output of each node the value depends on (a node's identity here)
    stack, used_inits, seen = [name], set(), set()
    while stack:
        tensor = stack.pop()
        if tensor in seen or not tensor:
            continue
        seen.add(tensor)
        if tensor in initializers:
            used_inits.add(tensor)
            continue
        node = producers.get(tensor)
        if node is None:
            return None  # a graph input: not a constant
        needed.add(node.output[0])
        stack.extend(node.input)
    order = [n for n in model.graph.node if n.output and n.output[0] in needed]  # the graph's (topological) order
    graph = helper.make_graph(order, "pads", [], [helper.make_tensor_value_info(name, 0, None)],
                              [initializers[i] for i in used_inits])
    sub = helper.make_model(graph, opset_imports=model.opset_import)
    return np.asarray(ReferenceEvaluator(sub).run(None, {})[0])


def _zero_constant_pad(pad: Any, producers: dict[str, Any], initializers: dict[str, Any], model: Any) -> bool:
    mode = node_attr(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return False
    if len(pad.input) > 3 and pad.input[3]:
        return False  # explicit axes: not the export this pass knows
    if len(pad.input) > 2 and pad.input[2]:
        value = _constant_value(model, pad.input[2], producers, initializers)
        return value is not None and not np.any(value)
    return True


def fold_pads_into_convs(model: Any) -> int:
    """Fold each zero Pad whose only consumer is a 2-D Conv's data input into that Conv's ``pads``, in place.

    Returns how many were folded. The Pad's constant subgraph, now unused, is removed with it."""
    from onnx import helper

    producers, consumers = graph_producers(model.graph), graph_consumers(model.graph)
    initializers = graph_initializers(model.graph)
    graph_outputs = {o.name for o in model.graph.output}
    folded = []
    for pad in [n for n in model.graph.node if n.op_type == "Pad"]:
        users = consumers.get(pad.output[0], [])
        if len(users) != 1 or pad.output[0] in graph_outputs:
            continue
        conv = users[0]
        if conv.op_type != "Conv" or conv.input[0] != pad.output[0] or node_attr(conv, "auto_pad", b"NOTSET") not in (
                b"NOTSET", "NOTSET"):
            continue
        if not _zero_constant_pad(pad, producers, initializers, model):
            continue
        amounts = _constant_value(model, pad.input[1], producers, initializers)
        if amounts is None or amounts.shape != (8,):
            continue  # a 4-D (N, C, H, W) pad is what a 2-D conv takes
        begin, end = amounts[:4].tolist(), amounts[4:].tolist()
        if begin[:2] != [0, 0] or end[:2] != [0, 0] or min(begin + end) < 0:
            continue  # padding the batch or the channels, or cropping: not a conv's padding
        current = list(node_attr(conv, "pads", [0, 0, 0, 0]))
        new = [current[0] + begin[2], current[1] + begin[3], current[2] + end[2], current[3] + end[3]]
        for attr in list(conv.attribute):
            if attr.name == "pads":
                conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", [int(p) for p in new]))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        model.graph.node.remove(pad)
    if folded:
        _remove_dead_nodes(model)
        log.info("FP32 ONNX: %d zero Pad(s) folded into the following Conv's pads", len(folded))
    return len(folded)


def _remove_dead_nodes(model: Any) -> None:
    """Drop nodes whose outputs nothing uses (the Pads' constant subgraphs), then unused initializers."""
    graph = model.graph
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(out in used for out in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
