"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", section 4.2).

Rounding a layer's weights shifts the mean of its outputs by E[(Q(W) - W) x], rarely zero, and the
shifts add up through depth. Two ways to measure it on the calibration batches, both folding the
negated shift into the layer's bias (the weights are not touched: the toolchain's own quantizer later
produces exactly the grid simulated here):

- ``fast`` (the default, NNCF's "fast bias correction" in kind): one streaming FP32 pass. A conv or
  linear layer is linear in its input, so the mean of (Q(W) - W) x over the data is (Q(W) - W) applied
  to the mean input; each layer's hook convolves the batch's summed input with the rounding error
  (padding and strides included, so the result is exact for FP32 inputs, not a per-channel estimate).
  Each layer is corrected for its own rounding, on FP32 inputs; memory stays at one batch.
- ``sequential``: each layer is made unbiased given the already quantized and corrected layers before
  it (the model's weight-quantized twin, in one forward pass over the whole sample at once): it also
  absorbs the shifts that earlier layers pass on, at the price of a second pass and every layer's
  activations for the whole sample in memory.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from quantization.transforms import BIAS_CORRECTION
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


def _run_hooked(model: nn.Module, batches: Iterable[torch.Tensor], handles: list) -> None:
    """Run ``batches`` through ``model`` for the hooks behind ``handles``, which are removed whatever happens."""
    try:
        with torch.inference_mode():
            for images in batches:
                model(images)
    finally:
        for handle in handles:
            handle.remove()


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
    def counted() -> Iterable[torch.Tensor]:
        nonlocal count
        for images in batches:
            count += images.shape[0]
            yield images

    _run_hooked(model, counted(), handles)
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


def _rounding_shifts(model: nn.Module, batches: Iterable[torch.Tensor], layers: list[str],
                     scheme: WeightScheme) -> dict[str, torch.Tensor]:
    """Per layer, the mean per output channel of (Q(W) - W) x over the FP32 inputs x of ``batches``.

    The pass only sums each layer's inputs over the samples (one tensor per layer and input shape);
    the rounding error meets them once, at the end, which keeps the pass at the cost of a forward."""
    modules = dict(model.named_modules())
    sums: dict[str, dict[tuple, torch.Tensor]] = {n: {} for n in layers}
    counts: dict[str, dict[tuple, int]] = {n: {} for n in layers}

    def hook(name: str):
        def run(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0]
            if isinstance(module, nn.Linear):  # every row of every sample is one output position
                x = x.reshape(-1, x.shape[-1])
            shape = tuple(x.shape[1:])
            sums[name][shape] = sums[name].get(shape, 0) + x.sum(dim=0, keepdim=True)
            counts[name][shape] = counts[name].get(shape, 0) + x.shape[0]
        return run

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in layers]
    _run_hooked(model, batches, handles)
    shifts = {}
    with torch.inference_mode():
        for name in layers:
            module = modules[name]
            error = fake_quantize_weight(module.weight, scheme.for_module(module)) - module.weight.detach()
            total, positions = 0, 0
            for shape, summed in sums[name].items():
                if isinstance(module, nn.Linear):
                    total, positions = total + (summed @ error.T)[0], positions + counts[name][shape]
                else:  # convolution is linear in x: the summed input's output is the sum of the outputs
                    y = module._conv_forward(summed, error, None)
                    total = total + y.sum(dim=(0, *range(2, y.dim())))
                    positions += counts[name][shape] * y[0, 0].numel()
            if positions:
                shifts[name] = total / positions
    return shifts


def correct_bias(model: nn.Module, batches: Iterable[torch.Tensor], scheme: WeightScheme,
                 method: str = "fast") -> int:
    """Fold each conv/linear's mean output shift under weight quantization into its bias, in place.

    BatchNorm is folded first: every toolchain quantizes the BN-folded weights, so that is the grid
    whose rounding error must be measured (it differs from the raw conv's under per-tensor scales)."""
    if method not in BIAS_CORRECTION:
        raise ValueError(f"bias correction method {method!r}: expected one of {', '.join(BIAS_CORRECTION)}")
    model.eval()
    fold_batchnorm(model)
    layers = [n for n, m in model.named_modules() if isinstance(m, LAYERS)]
    batches = tqdm(batches, desc=f"bias correction ({method})", unit="batch", disable=progress_disabled())
    if method == "fast":
        shifts = {n: -s for n, s in _rounding_shifts(model, batches, layers, scheme).items()}
    else:
        shifts = _sequential_shifts(model, list(batches), layers, scheme)
    return _fold(model, shifts, scheme, method)


def _sequential_shifts(model: nn.Module, batches: list[torch.Tensor], layers: list[str],
                       scheme: WeightScheme) -> dict[str, torch.Tensor]:
    """Per layer, FP32 mean output minus the weight-quantized twin's, the layers before it already corrected.

    One forward pass of the twin over the whole calibration sample at once: each layer's hook measures its
    shift, corrects its own output, and so the layers after it see the corrected values, exactly as
    layer-by-layer passes would."""
    reference = mean_outputs(model, batches, layers)
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
    log.info("bias correction: one pass of the weight-quantized model over %d images", sum(b.shape[0] for b in batches))
    _run_hooked(quantized, [torch.cat(batches)], handles)
    return shifts


def _fold(model: nn.Module, shifts: dict[str, torch.Tensor], scheme: WeightScheme, method: str) -> int:
    modules = dict(model.named_modules())
    for name, shift in shifts.items():
        layer = modules[name]
        with torch.no_grad():
            if layer.bias is None:
                layer.bias = nn.Parameter(shift.clone())
            else:
                layer.bias.add_(shift)
    log.info("bias correction (%s, %s weights): %d layers corrected", method, scheme.describe(), len(shifts))
    return len(shifts)
