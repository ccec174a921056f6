"""torch.export for PT2E: the fast non-strict trace, with the source metadata torchao's quantizer reads.

torchao's X86InductorQuantizer finds its fusion patterns (conv + BN + ReLU, conv + add, linear + ReLU) with
``get_source_partitions``, which groups nodes by the ``source_fn_stack`` metadata: per node, a name unique to
the call and the leaf ``torch.nn`` module class (or the Python function) it came from. Only the strict
(Dynamo) export records it. Without it, torch falls back to the module's path, which merges the calls of a
module used twice (torchvision's ``self.relu`` in every residual block; EfficientNet-Lite0's activations) into
one partition with several outputs, and ``prepare_pt2e`` fails ("Input partition has more than one output
node"). The non-strict export records ``nn_module_stack``, whose innermost key is unique per call
(``layer1.0.relu``, ``layer1.0.relu@1``): :func:`record_sources` writes ``source_fn_stack`` from it, as the
strict export would. Measured (x86-vnni): the strict export of EfficientNet-Lite0 or ResNet-50 takes 3.0-3.3 s,
the non-strict 0.8-1.3 s; the converted graphs have the same calls in the same order and give bit-identical
outputs (tests/test_torch_modes.py::test_pt2e_non_strict_export_quantizes_as_the_strict_one, six models).
"""
from __future__ import annotations

import importlib
import logging
import operator

import torch
import torch.nn.functional as F

from utils.errors import SuiteError

log = logging.getLogger(__name__)

#: what the strict export records for the aten calls of plain Python/functional code the quantizer matches
FUNCTION_SOURCES = {torch.ops.aten.add.Tensor: operator.add, torch.ops.aten.add_.Tensor: operator.iadd,
                    torch.ops.aten.conv1d.default: F.conv1d, torch.ops.aten.conv2d.default: F.conv2d,
                    torch.ops.aten.linear.default: F.linear}


def export(module: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """Non-strict ``torch.export`` with a dynamic batch: the PT2E graph (after :func:`record_sources`) and the
    artifacts (the FP32 reference and the converted graph) alike."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # export raises many internal types for unsupported Python
        raise SuiteError(f"torch.export cannot export this model: {str(exc).splitlines()[0][:200]}") from exc


def _leaf_class(qualified: object) -> type | None:
    """The module class of an ``nn_module_stack`` entry (a class, or its dotted name), when it is one of
    ``torch.nn``'s own: the strict export records those as sources; a user's module is traced through."""
    cls = qualified
    if isinstance(qualified, str):
        path, _, name = qualified.rpartition(".")
        try:
            cls = getattr(importlib.import_module(path), name)
        except (ImportError, AttributeError, ValueError):
            return None
    if isinstance(cls, type) and cls.__module__.startswith("torch.nn.modules."):
        return cls
    return None


def record_sources(graph_module: torch.fx.GraphModule) -> int:
    """Give every call node without ``source_fn_stack`` the one the strict export records: the innermost
    module call's unique key and its ``torch.nn`` class, else the node's own name and the Python function of
    :data:`FUNCTION_SOURCES`. Returns how many nodes were given one."""
    recorded = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.meta.get("source_fn_stack") is not None:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        key, (_, qualified) = list(stack.items())[-1] if stack else (None, (None, None))
        cls = _leaf_class(qualified) if key is not None else None
        if cls is not None:
            node.meta["source_fn_stack"] = [(key, cls)]
        elif node.target in FUNCTION_SOURCES:
            node.meta["source_fn_stack"] = [(node.name, FUNCTION_SOURCES[node.target])]
        else:
            continue
        recorded += 1
    log.debug("PT2E export: source metadata recorded for %d nodes", recorded)
    return recorded


def graph_to_quantize(module: torch.nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The GraphModule ``prepare_pt2e`` gets: :func:`export` and :func:`record_sources`."""
    graph = export(module, example).module()
    record_sources(graph)
    return graph
