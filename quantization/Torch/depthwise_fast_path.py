"""Stride-2 'SAME' depthwise convolutions rewritten so FBGEMM's INT8 depthwise kernel takes them.

FBGEMM's fast depthwise kernel needs the convolution's own padding to be (K-1)/2. TensorFlow-style
'SAME' padding of a stride-2 convolution on an even input is asymmetric (one more row/column at the
end), so the EfficientNet ports pad explicitly and convolve with padding 0: in INT8 that conv falls
back to a generic grouped path, measured 60x slower (5x5, 144 channels, 56x56: 11.7 ms vs 0.19 ms),
which made INT8 EfficientNet-Lite0 slower than FP32. The same function is a stride-1 convolution
with padding (K-1)/2 followed by taking every second row and column from offset 1: four times the
multiply-adds, on the fast kernel. The subsample is then moved past the BatchNorm and activation
that follow (both per-channel and elementwise, so they commute with it), which keeps torch.ao's
conv + BN fusion and the clamped ReLU6 range. Applied to the copy FX quantizes, never to the FP32
reference.
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn

from utils.models import is_depthwise, rebuilt_conv


class SubsampledConv(nn.Module):
    """``conv`` at stride 1, then every ``stride``-th output from ``offset``: a strided conv, exactly."""

    def __init__(self, conv: nn.Conv2d, stride: int, offset: int):
        super().__init__()
        self.conv, self.stride, self.offset = conv, stride, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[:, :, self.offset::self.stride, self.offset::self.stride]


def _rewritable(seq: nn.Module) -> nn.Conv2d | None:
    """The conv of a [ZeroPad2d(l, l+1, l, l+1), depthwise stride-2 conv, padding 0] pair, l = (K-1)/2 - 1."""
    if not (isinstance(seq, nn.Sequential) and len(seq) == 2 and isinstance(seq[0], nn.ZeroPad2d)
            and type(seq[1]) is nn.Conv2d):
        return None
    pad, conv = seq[0], seq[1]
    k = conv.kernel_size[0]
    if not (is_depthwise(conv) and conv.kernel_size == (k, k) and k % 2 == 1 and conv.stride == (2, 2)
            and conv.padding == (0, 0) and conv.dilation == (1, 1)):
        return None
    left, right, top, bottom = pad.padding
    half = (k - 1) // 2
    return conv if (left, right, top, bottom) == (half - 1, half, half - 1, half) else None


ELEMENTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh)
ELEMENTWISE_FUNCTIONS = (torch.relu, nn.functional.relu, nn.functional.relu6, nn.functional.hardtanh)


def _commutes(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), ELEMENTWISE_MODULES)
    return node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS


def _sink_subsamples(gm: fx.GraphModule) -> None:
    """Move each subsample past the per-channel elementwise ops that follow it: conv -> bn -> relu6 -> slice."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target is operator.getitem and node.meta.get("subsample")):
            continue
        while len(node.users) == 1 and _commutes(user := next(iter(node.users)), modules):
            source = node.args[0]
            user.replace_input_with(node, source)
            user.replace_all_uses_with(node, delete_user_cb=lambda n, u=user, s=node: n is not u and n is not s)
            node.args = (user, *node.args[1:])
            user.append(node)
    gm.graph.lint()
    gm.recompile()


def subsample_strided_depthwise(model: nn.Module) -> tuple[nn.Module, int]:
    """The model with every matching pair rewritten (an fx.GraphModule), and how many; unchanged if none."""
    targets = [name for name, m in model.named_modules() if _rewritable(m) is not None]
    if not targets:
        return model, 0
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        conv = getattr(parent, child)[1]
        dense = rebuilt_conv(conv, stride=1, padding=(conv.kernel_size[0] - 1) // 2)
        dense.output_subsample = (2, 1)  # for bias correction: only these outputs are the strided conv's
        setattr(parent, child, SubsampledConv(dense, stride=2, offset=1))
    gm = fx.symbolic_trace(model)
    for node in gm.graph.nodes:
        source = node.args[0] if node.args else None
        if node.op == "call_function" and node.target is operator.getitem and isinstance(source, fx.Node) \
                and source.op == "call_module" and str(source.target).endswith(".conv"):
            node.meta["subsample"] = str(source.target).rpartition(".")[0] in targets
    _sink_subsamples(gm)
    return gm.train(model.training), len(targets)
