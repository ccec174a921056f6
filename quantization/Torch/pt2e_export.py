"""torch.export for PT2E: the fast non-strict trace, with the source metadata torchao's quantizer reads.

torchao's X86InductorQuantizer finds its fusion patterns (conv + BN + ReLU, conv + add, linear + ReLU) with
``get_source_partitions``, which groups nodes by the ``source_fn_stack`` metadata: per node, a name unique to
the call and the leaf ``torch.nn`` module class (or the Python function) it came from. Only the strict
(Dynamo) export records it. Without it, torch falls back to the module's path, which merges the calls of a
module used twice (torchvision's ``self.relu`` in every residual block; EfficientNet-Lite0's activations) into
one partition with several outputs, and ``prepare_pt2e`` fails ("Input partition has more than one output
node"). The non-strict export records ``nn_module_stack`` (the module calls) and ``torch_fn`` (the torch-level
call, its name unique per call): :func:`source_of` derives from them what Dynamo records (the same leaf-module
test as torch/_dynamo/output_graph.py; ``F.relu`` and ``torch.relu`` told apart, as torchao matches the first
only). Python's operators are the exception: Dynamo records ``operator.add``, the method name or ``torch.add`` by
how the code spells it, ``torch_fn`` cannot tell them apart, and torchao treats them as one. Measured
(x86-vnni): the strict export of EfficientNet-Lite0 or ResNet-50 takes 3.0-3.8 s, the non-strict 0.85-1.7 s.
The converted graphs have the same calls in the same order and give bit-identical outputs on nine models
(tests/test_torch_modes.py::test_pt2e_non_strict_export_quantizes_as_the_strict_one: torchvision ResNets,
MobileNets, ShuffleNet, GoogLeNet and Inception-v3 with functional ReLUs, EfficientNet-Lite0, CIFAR ResNet-20, a
module called three times) and on six timm models checked by hand (resnet50d, efficientnet_b0,
mobilenetv3_large_100, convnext_atto, regnety_002, inception_v4; timm is not installed in CI).
"""
from __future__ import annotations

import logging
import operator
import sys

import torch
import torch.nn.functional as F

from utils.errors import SuiteError

log = logging.getLogger(__name__)

#: the aten calls of Python's operators: the strict export records ``operator.add`` / ``operator.iadd`` (or the
#: method name, or ``torch.add``, by how the code spells it); torchao treats all of them as one
#: (torchao/quantization/pt2e/graph_utils.py ``_EQUIVALENT_TYPES``), the non-strict ``torch_fn`` does not tell them apart
OPERATOR_SOURCES = {torch.ops.aten.add.Tensor: operator.add, torch.ops.aten.add_.Tensor: operator.iadd,
                    torch.ops.aten.mul.Tensor: operator.mul, torch.ops.aten.mul_.Tensor: operator.imul}
#: the leaf modules the strict export names as a node's source (torch/_dynamo/output_graph.py)
LEAF_MODULE_PREFIXES = ("torch.nn.modules", "torch.ao.")


def export(module: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """Non-strict ``torch.export`` with a dynamic batch: the PT2E graph (after :func:`record_sources`) and the
    artifacts (the FP32 reference and the converted graph) alike."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # export raises many internal types for unsupported Python
        raise SuiteError(f"torch.export cannot export this model: {str(exc).splitlines()[0][:200]}") from exc


def _class(qualified: object) -> type | None:
    """The class of an ``nn_module_stack`` entry: the class itself, or its dotted name (looked up in the modules
    already imported, where the export found it)."""
    if isinstance(qualified, type):
        return qualified
    if isinstance(qualified, str):
        path, _, name = qualified.rpartition(".")
        cls = getattr(sys.modules.get(path), name, None)
        return cls if isinstance(cls, type) else None
    return None


def _leaf_module(node: torch.fx.Node) -> type | None:
    """The innermost module's class where the strict export would name it as the source: one of torch.nn's or
    torch.ao's own modules, not a container (the same test as Dynamo's)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    cls = _class(list(stack.values())[-1][1])
    if cls is None or not cls.__module__.startswith(LEAF_MODULE_PREFIXES):
        return None
    return None if cls.__module__.startswith("torch.nn.modules.container") else cls


def _function(torch_fn: str) -> object | None:
    """The torch-level function of a non-strict ``torch_fn`` entry ("function.relu", "builtin_function_or_method.
    conv2d"), as the strict export records it: ``F.relu`` is a Python function, ``torch.relu`` a builtin, and
    torchao matches the one and not the other. A tensor method ("method_descriptor.add_") is recorded by name."""
    kind, _, name = torch_fn.partition(".")
    if kind == "method_descriptor":
        return name
    for namespace in ((torch, F) if kind == "builtin_function_or_method" else (F,)):
        candidate = getattr(namespace, name, None)
        if candidate is not None and type(candidate).__name__ == kind:
            return candidate
    return None


def source_of(node: torch.fx.Node) -> tuple[str, object] | None:
    """What the strict export records as ``node``'s source: a name unique to the torch-level call (the non-strict
    ``torch_fn``'s) and the leaf module's class, else the function called (:data:`OPERATOR_SOURCES` for
    Python's operators); None where neither is known."""
    torch_fn = node.meta.get("torch_fn")
    key = torch_fn[0] if torch_fn else node.name
    source = _leaf_module(node) or OPERATOR_SOURCES.get(node.target) or (_function(torch_fn[1]) if torch_fn else None)
    return (key, source) if source is not None else None


def record_sources(graph_module: torch.fx.GraphModule) -> int:
    """Give every call node without ``source_fn_stack`` the one :func:`source_of` finds. Returns how many."""
    recorded = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.meta.get("source_fn_stack") is not None:
            continue
        source = source_of(node)
        if source is not None:
            node.meta["source_fn_stack"] = [source]
            recorded += 1
    log.debug("PT2E export: source metadata recorded for %d nodes", recorded)
    return recorded


def graph_to_quantize(module: torch.nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The GraphModule ``prepare_pt2e`` gets: :func:`export` and :func:`record_sources`."""
    graph = export(module, example).module()
    record_sources(graph)
    return graph
