"""BatchNorm folded into the preceding convolution, keeping the model's structure.

The BN module stays in place as an exact identity (gamma 1, beta 0, mean 0, var 1 - eps), so every
toolchain still sees and fuses conv -> bn -> relu as before and the INT8 artifact has the same
structure; the conv's weight and bias now carry the affine map the transforms need to rescale.
"""
from __future__ import annotations

import torch
from torch import nn

from quantization.transforms.graph import trace_layers


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(std)
        beta = bn.bias if bn.affine else torch.zeros_like(std)
        factor = gamma / std
        conv.weight.mul_(factor.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = beta + (bias - bn.running_mean) * factor
        conv.bias = nn.Parameter(new_bias.detach().clone())
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        if bn.affine:
            bn.weight.fill_(1.0)
            bn.bias.zero_()


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    gm = trace_layers(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d) and len(node.users) == 1:
            user = next(iter(node.users))
            if user.op == "call_module" and isinstance(modules[user.target], nn.BatchNorm2d):
                pairs.append((node.target, user.target))
    return pairs


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every conv -> BN pair in place (eval-mode statistics); returns how many were folded."""
    modules = dict(model.named_modules())
    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        _fold_pair(modules[conv_name], modules[bn_name])
    return len(pairs)


def fold_batchnorm_if_traceable(model: nn.Module) -> int:
    """:func:`fold_batchnorm`, or nothing on a model the layer tracer cannot follow (its toolchain's own
    tracing reports that one)."""
    from quantization.transforms.graph import UntraceableModel

    try:
        return fold_batchnorm(model)
    except UntraceableModel:
        return 0
