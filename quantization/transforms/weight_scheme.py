"""The weight quantization a toolchain will apply, simulated in float for the transforms.

Bias correction must see the same rounding error the toolchain's INT8 weights will have, so each
toolchain states its weight scheme (bits, per-channel or per-tensor, the divisor of its symmetric
scale) and the transforms quantize with exactly that.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from utils.models import is_depthwise


@dataclass(frozen=True)
class WeightScheme:
    per_channel: bool = True  # one scale per output channel (dim 0) or one per tensor
    qmin: int = -128
    qmax: int = 127
    # torch.ao symmetric observers divide the absolute max by (qmax - qmin) / 2; ONNX Runtime and
    # ModelOpt divide by qmax (restricted range): the divisor decides the rounding grid.
    divisor: float = 127.5
    depthwise_range: tuple[int, int] | None = None  # (qmin, qmax) of depthwise convs where they differ

    def for_module(self, module: nn.Module) -> WeightScheme:
        """The scheme of ``module``'s weights (depthwise convolutions may have fewer bits)."""
        return self.for_layer(depthwise=isinstance(module, nn.Conv2d) and is_depthwise(module))

    def for_layer(self, depthwise: bool) -> WeightScheme:
        """The scheme of a layer's weights, given whether it is a depthwise convolution."""
        if not (self.depthwise_range and depthwise):
            return self
        qmin, qmax = self.depthwise_range
        return dataclasses.replace(self, qmin=qmin, qmax=qmax, divisor=self.divisor * (qmax - qmin) / (self.qmax - self.qmin),
                                   depthwise_range=None)

    def describe(self) -> str:
        """E.g. "8-bit per-channel symmetric": the restricted 8-bit range (255 levels) is 8-bit, the 7-bit
        overflow-fix grid (|q| <= 64, 129 levels) 7-bit."""
        bits = round(math.log2(self.qmax - self.qmin + 1))
        return f"{bits}-bit {'per-channel' if self.per_channel else 'per-tensor'} symmetric"


def fake_quantize_weight(weight: torch.Tensor, scheme: WeightScheme) -> torch.Tensor:
    """Round ``weight`` to the scheme's INT8 grid and back to float."""
    w = weight.detach()
    if scheme.per_channel:
        amax = w.abs().reshape(w.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (w.dim() - 1)))
    else:
        amax = w.abs().amax()
    scale = (amax / scheme.divisor).clamp_min(torch.finfo(torch.float32).eps)
    return torch.clamp(torch.round(w / scale), scheme.qmin, scheme.qmax) * scale
