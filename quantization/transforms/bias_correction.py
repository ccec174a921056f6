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

log = logging.getLogger(__name__)

LAYERS = (nn.Conv2d, nn.Linear)


class _Stop(Exception):
    """Ends a forward pass once the layer being measured has run."""


def _channel_sum(y: torch.Tensor, linear: bool) -> torch.Tensor:
    """Per output channel (axis 1 of a conv output, the last of a linear's), the sum over samples
    of each sample's mean over the other axes."""
    if linear:
        return y.reshape(y.shape[0], -1, y.shape[-1]).mean(dim=1).sum(dim=0)
    return y.transpose(0, 1).reshape(y.shape[1], y.shape[0], -1).mean(dim=2).sum(dim=1)


def execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Conv/linear layer names in the order a forward pass calls them."""
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n) if n not in order else None)
               for n, m in model.named_modules() if isinstance(m, LAYERS)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


def mean_outputs(model: nn.Module, batches: list[torch.Tensor], layers: list[str],
                 stop_after: str | None = None) -> dict[str, torch.Tensor]:
    """Mean output per channel of each of ``layers`` over ``batches`` (optionally stopping early)."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    count = 0

    def hook(name: str):
        def run(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            sums[name] = sums.get(name, 0) + _channel_sum(output, isinstance(module, nn.Linear))
            if name == stop_after:
                raise _Stop
        return run

    handles = [modules[n].register_forward_hook(hook(n)) for n in layers]
    try:
        with torch.inference_mode():
            for images in batches:
                try:
                    model(images)
                except _Stop:
                    pass
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
                m.weight.copy_(fake_quantize_weight(m.weight, scheme))
    return twin


def correct_bias(model: nn.Module, batches: Iterable[torch.Tensor], scheme: WeightScheme) -> int:
    """Fold each conv/linear's mean output shift under weight quantization into its bias, in place.

    BatchNorm is folded first: every toolchain quantizes the BN-folded weights, so that is the grid
    whose rounding error must be measured (it differs from the raw conv's under per-tensor scales)."""
    model.eval()
    fold_batchnorm(model)
    batches = list(batches)
    layers = execution_order(model, batches[0][:1])
    reference = mean_outputs(model, batches, layers)
    quantized = weight_quantized(model, scheme)
    q_modules, modules = dict(quantized.named_modules()), dict(model.named_modules())
    for name in tqdm(layers, desc="bias correction", unit="layer"):
        shift = reference[name] - mean_outputs(quantized, batches, [name], stop_after=name)[name]
        for layer in (modules[name], q_modules[name]):
            with torch.no_grad():
                if layer.bias is None:
                    layer.bias = nn.Parameter(shift.clone())
                else:
                    layer.bias.add_(shift)
    log.info("bias correction (%s weights): %d layers corrected", scheme.describe(), len(layers))
    return len(layers)
