"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization").

For conv1 -> ReLU -> conv2, scaling output channel i of conv1 by 1/s_i and input channel i of conv2
by s_i leaves the network's function unchanged (ReLU is positively homogeneous) while making the two
layers' per-channel weight ranges equal: s_i = sqrt(r1_i / r2_i). Per-tensor weight quantization then
wastes far less of its grid on a few wide channels.

ReLU6 is not homogeneous: relu6(x / s) != relu6(x) / s once the clip is reached. Two honest choices:
``relu6='skip'`` (default) leaves such pairs alone, so the FP32 function is exactly preserved;
``relu6='relu'`` follows the DFQ paper and AIMET and replaces ReLU6 by ReLU first, which changes the
FP32 model wherever activations exceed 6 (measure it; the report records it).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from quantization.transforms.bn_fold import fold_batchnorm
from quantization.transforms.graph import ConvChain, conv_chains
from utils.errors import SuiteError

log = logging.getLogger(__name__)

RELU6_MODES = ("skip", "relu")


def _out_ranges(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().abs().reshape(conv.out_channels, -1).amax(dim=1)


def _in_ranges(conv: nn.Conv2d) -> torch.Tensor:
    w = conv.weight.detach().abs()
    if conv.groups == 1:
        return w.transpose(0, 1).reshape(conv.in_channels, -1).amax(dim=1)
    return w.reshape(conv.out_channels, -1).amax(dim=1)  # depthwise: input channel i is filter i


def _equalize(first: nn.Conv2d, second: nn.Conv2d) -> float:
    """Rescale one pair in place; returns the largest relative change of a scale (for convergence)."""
    r1, r2 = _out_ranges(first), _in_ranges(second)
    scale = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
    with torch.no_grad():
        first.weight.div_(scale.reshape(-1, *([1] * (first.weight.dim() - 1))))
        if first.bias is not None:
            first.bias.div_(scale)
        if second.groups == 1:
            second.weight.mul_(scale.reshape(1, -1, *([1] * (second.weight.dim() - 2))))
        else:
            second.weight.mul_(scale.reshape(-1, *([1] * (second.weight.dim() - 1))))
    return float((scale - 1).abs().max())


def _replace_relu6(model: nn.Module, names: set[str]) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.ReLU(inplace=getattr(parent.get_submodule(child), "inplace", False)))


def equalize_chains(model: nn.Module, relu6: str = "skip", iterations: int = 20, tolerance: float = 1e-4) -> list[ConvChain]:
    """Fold BN, then equalize every conv -> (ReLU|none) -> conv pair in place until the scales settle."""
    if relu6 not in RELU6_MODES:
        raise SuiteError(f"--cle-relu6 must be one of {', '.join(RELU6_MODES)} (got {relu6})")
    model.eval()
    fold_batchnorm(model)
    chains = conv_chains(model)
    if relu6 == "relu":
        _replace_relu6(model, {c.activation for c in chains if c.activation_kind == "relu6" and c.activation})
        for c in chains:
            if c.activation_kind == "relu6":
                c.activation_kind = "relu"
    usable = [c for c in chains if c.activation_kind != "relu6"]
    skipped = len(chains) - len(usable)
    if skipped:
        log.info("CLE: %d conv pairs run through ReLU6 and are left alone (--cle-relu6 relu equalizes them "
                 "by replacing ReLU6 with ReLU)", skipped)
    modules = dict(model.named_modules())
    for _ in range(iterations):
        change = max((_equalize(modules[c.first], modules[c.second]) for c in usable), default=0.0)
        if change < tolerance:
            break
    log.info("CLE: equalized %d conv pairs", len(usable))
    return usable
