"""The fast bias correction's statistics gathered in PT2E's own calibration pass.

A prepared PT2E graph has no conv modules to hook: its convs and linears are aten calls whose weights and biases
are the graph's tensors. For the calibration pass, each such call's input (an observer's output: the unchanged
FP32 value) goes through a counting identity, removed again before ``convert_pt2e`` sees the graph; each layer
gets a stand-in nn.Conv2d / nn.Linear sharing the graph's weight and bias storage, so the correction that
:meth:`InputSums.fold` adds to the stand-in's bias lands in the graph. NNCF gathers its fast bias correction's
statistics in the pass that gathers its ranges in the same way; FX does it with forward pre-hooks.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from quantization.transforms.bias_correction import InputSums

log = logging.getLogger(__name__)

#: the aten calls the fast bias correction measures in a prepared PT2E graph (padding="same" is its own overload)
LAYER_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.conv2d.padding, torch.ops.aten.linear.default)


def _tensor(graph: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The constant behind ``node``: a get_attr, or a get_attr seen through its (weight) observer."""
    if isinstance(node, torch.fx.Node) and node.op == "call_module" and node.args:
        node = node.args[0]
    if not (isinstance(node, torch.fx.Node) and node.op == "get_attr"):
        return None
    return functools.reduce(getattr, str(node.target).split("."), graph)


def _stand_in(node: torch.fx.Node, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """An nn.Conv2d / nn.Linear of an aten conv2d / linear call whose weight and bias are the graph's own
    tensors (shared storage). A padding given as a string ("same", "valid") is nn.Conv2d's too."""
    if node.target is torch.ops.aten.linear.default:
        layer = skip_init(nn.Linear, weight.shape[1], weight.shape[0])
    else:
        stride, padding, dilation, groups = (list(node.args[3:7]) + [1, 0, 1, 1][len(node.args[3:7]):])
        layer = skip_init(nn.Conv2d, weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                          stride=stride, padding=padding, dilation=dilation, groups=groups)
    layer.weight, layer.bias = nn.Parameter(weight, requires_grad=False), nn.Parameter(bias, requires_grad=False)
    return layer


class _SumInput(nn.Module):
    """An identity in the graph that counts its input for the layers in ``names``."""

    def __init__(self, sums: InputSums, names: list[str]):
        super().__init__()
        self.sums, self.names = sums, names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sums.add(self.names, x)
        return x


@contextlib.contextmanager
def summing_inputs(prepared: torch.fx.GraphModule) -> Iterator[InputSums]:
    """Within the block, every conv/linear input of ``prepared`` is summed; after it, the graph is as before.

    One counting identity per input and kind of layer: a residual block's input that feeds its first conv and
    its downsample is summed once. A layer without a bias tensor in the graph is left out (the BN fold before
    the export gives every conv followed by BN one)."""
    graph = prepared.graph
    layers: dict[str, nn.Module] = {}
    fed: dict[tuple[torch.fx.Node, bool], list[torch.fx.Node]] = {}
    without_bias = 0
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in LAYER_OPS or not isinstance(node.args[0], torch.fx.Node):
            continue
        weight, bias = _tensor(prepared, node.args[1]), _tensor(prepared, node.args[2] if len(node.args) > 2 else None)
        if weight is None or bias is None:
            without_bias += weight is not None
            continue
        layers[node.name] = _stand_in(node, weight, bias)
        fed.setdefault((node.args[0], node.target is torch.ops.aten.linear.default), []).append(node)
    sums = InputSums(layers)
    inserted = []
    log.info("PT2E bias correction: %d conv/linear layers summed in the calibration pass%s", len(layers),
             f", {without_bias} without a bias tensor in the graph left uncorrected" if without_bias else "")
    try:
        for i, ((source, _), users) in enumerate(fed.items()):
            name = f"bias_correction_sum_{i}"
            prepared.add_submodule(name, _SumInput(sums, [n.name for n in users]))
            with graph.inserting_after(source):
                counter = graph.call_module(name, (source,))
            for user in users:
                user.replace_input_with(source, counter)
            inserted.append((name, source, counter))
        prepared.recompile()
        yield sums
    finally:
        for name, source, counter in inserted:
            counter.replace_all_uses_with(source)
            graph.erase_node(counter)
            prepared.delete_submodule(name)
        prepared.recompile()
