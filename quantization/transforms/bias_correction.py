"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", section 4.2).

Rounding a layer's weights shifts the mean of its outputs: E[(W - Q(W)) x] is rarely zero, and the
shifts add up through depth. Layer by layer, in execution order, the mean output per channel of the
FP32 model and of the model with weight-quantized layers (those before it already corrected) are
measured on the calibration batches; the difference is folded into the layer's bias. Each layer is
thus unbiased on that data given the quantized layers before it. The weights are not touched: the
toolchain's own quantizer later produces exactly the grid simulated here.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from quantization.transforms.bn_fold import fold_batchnorm
from quantization.transforms.weight_scheme import WeightScheme, fake_quantize_weight
from utils.console import progress_disabled

log = logging.getLogger(__name__)

LAYERS = (nn.Conv2d, nn.Linear)


def _channel_sum(y: torch.Tensor, linear: bool) -> torch.Tensor:
    """Per output channel (axis 1 of a conv output, the last of a linear's), the sum over samples
    of each sample's mean over the other axes."""
    if linear:
        return y.reshape(y.shape[0], -1, y.shape[-1]).mean(dim=1).sum(dim=0)
    return y.transpose(0, 1).reshape(y.shape[1], y.shape[0], -1).mean(dim=2).sum(dim=1)


def mean_outputs(model: nn.Module, batches: Iterable[torch.Tensor], layers: list[str]) -> dict[str, torch.Tensor]:
    """Mean output per channel of each of ``layers`` over ``batches``."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    count = 0

    def hook(name: str):
        def run(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            sums[name] = sums.get(name, 0) + _channel_sum(output, isinstance(module, nn.Linear))
        return run

    handles = [modules[n].register_forward_hook(hook(n)) for n in layers]
    try:
        with torch.inference_mode():
            for images in batches:
                model(images)
                count += images.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    return {n: s / count for n, s in sums.items()}


def weight_quantized(model: nn.Module, scheme: WeightScheme) -> nn.Module:
    """A copy of ``model`` with every conv/linear weight rounded to ``scheme``'s grid."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, LAYERS):
                m.weight.copy_(fake_quantize_weight(m.weight, scheme.for_module(m)))
    return twin


def _shaped(shift: torch.Tensor, output: torch.Tensor, linear: bool) -> torch.Tensor:
    return shift if linear else shift.reshape(1, -1, *([1] * (output.dim() - 2)))


def correct_bias(model: nn.Module, batches: Iterable[torch.Tensor], scheme: WeightScheme) -> int:
    """Fold each conv/linear's mean output shift under weight quantization into its bias, in place.

    BatchNorm is folded first: every toolchain quantizes the BN-folded weights, so that is the grid
    whose rounding error must be measured (it differs from the raw conv's under per-tensor scales).
    The sequential correction runs in one forward pass of the weight-quantized twin over the whole
    calibration sample: each layer's hook measures its shift, corrects its own output, and so the
    layers after it see the corrected values, exactly as layer-by-layer passes would."""
    model.eval()
    fold_batchnorm(model)
    batches = list(batches)
    layers = [n for n, m in model.named_modules() if isinstance(m, LAYERS)]
    reference = mean_outputs(model, tqdm(batches, desc="bias correction: FP32 means", unit="batch",
                                                   disable=progress_disabled()), layers)
    quantized = weight_quantized(model, scheme)
    shifts: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def run(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if name in shifts:  # a module called twice in one forward: corrected at its first call
                return None
            linear = isinstance(module, nn.Linear)
            shifts[name] = reference[name] - _channel_sum(output, linear) / output.shape[0]
            return output + _shaped(shifts[name], output, linear)
        return run

    q_modules = dict(quantized.named_modules())
    handles = [q_modules[n].register_forward_hook(hook(n)) for n in layers]
    try:
        with torch.inference_mode():
            log.info("bias correction: one pass of the weight-quantized model over %d images",
                     sum(b.shape[0] for b in batches))
            quantized(torch.cat(batches))
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    for name, shift in shifts.items():
        layer = modules[name]
        with torch.no_grad():
            if layer.bias is None:
                layer.bias = nn.Parameter(shift.clone())
            else:
                layer.bias.add_(shift)
    log.info("bias correction (%s weights): %d layers corrected", scheme.describe(), len(shifts))
    return len(shifts)
