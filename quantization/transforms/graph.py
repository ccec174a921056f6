"""The layer graph the transforms need: which conv feeds which, through what, and nothing else.

Traced with torch.fx, convolutions and linears kept as leaves (subclasses too, e.g. EfficientNet's
``Conv2dStaticSamePadding``), so a pair is found by module names and the transforms change the
original module's parameters in place: the model keeps its class, its forward and its structure.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from utils.errors import SuiteError
from utils.models import is_depthwise


class UntraceableModel(SuiteError):
    """torch.fx cannot trace the model (TorchScript, torch.export programs, data-dependent control flow)."""


LEAVES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Identity)


class _LayerTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


def trace_layers(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _LayerTracer().trace(model)
    except Exception as exc:
        raise UntraceableModel(f"the transforms cannot trace {type(model).__name__}: {str(exc).splitlines()[0]}") from exc
    return fx.GraphModule(model, graph)


@dataclass
class ConvChain:
    """conv1 -> [bn] -> [activation] -> conv2, every intermediate output used once."""

    first: str
    bn: str | None
    activation: str | None  # module name of the ReLU/ReLU6 between them, if any
    activation_kind: str  # none | relu | relu6
    second: str


def _single_user_next(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d)


def conv_chains(model: nn.Module) -> list[ConvChain]:
    """Every conv -> conv pair whose scaling can be moved across the nodes between them."""
    gm = trace_layers(model)
    modules = dict(model.named_modules())
    chains: list[ConvChain] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not _is_conv(modules[node.target]):
            continue
        bn = activation = None
        kind = "none"
        current = _single_user_next(node)
        if current is not None and current.op == "call_module" and isinstance(modules[current.target], nn.BatchNorm2d):
            bn, current = current.target, _single_user_next(current)
        if current is not None and current.op == "call_module" and isinstance(modules[current.target], (nn.ReLU, nn.ReLU6)):
            activation = current.target
            kind = "relu6" if isinstance(modules[current.target], nn.ReLU6) else "relu"
            current = _single_user_next(current)
        elif current is not None and current.op == "call_function" and current.target in (torch.relu, nn.functional.relu):
            kind, current = "relu", _single_user_next(current)
        if current is None or current.op != "call_module" or not _is_conv(modules[current.target]):
            continue
        second = modules[current.target]
        if second.groups != 1 and not is_depthwise(second):
            continue  # grouped (not depthwise) convolutions mix channel blocks we do not track
        chains.append(ConvChain(node.target, bn, activation, kind, current.target))
    return chains
