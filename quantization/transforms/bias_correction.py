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
    """Run ``batches`` through ``model`` for the hooks behind ``handles``, which are removed whatever happens.

    Image batches run channels-last: oneDNN's NHWC convolutions, depthwise above all, are faster than NCHW in
    eager torch (EfficientNet-Lite0, 300 images at 8, x86-vnni: 5.5 -> 3.7 s; ResNet-50 1.1-1.3x); the hooks
    only sum and reduce, which no layout changes. The weights go back to the default layout afterwards."""
    layout = torch.channels_last
    try:
        model.to(memory_format=layout)
        with torch.inference_mode():
            for images in batches:
                model(images.contiguous(memory_format=layout) if images.dim() == 4 else images)
    finally:
        model.to(memory_format=torch.contiguous_format)
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


def _batch_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over axis 0 (kept), read in memory order: a flat [N, -1] sum is about 2x faster than torch's
    4-D ``sum(dim=0)`` (measured on a 32x256x56x56 tensor, x86-vnni: 10.7 vs 23 ms)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        nhwc = x.permute(0, 2, 3, 1)
        return nhwc.reshape(x.shape[0], -1).sum(dim=0).reshape(1, *nhwc.shape[1:]).permute(0, 3, 1, 2)
    if x.is_contiguous():
        return x.reshape(x.shape[0], -1).sum(dim=0).reshape(1, *x.shape[1:])
    return x.sum(dim=0, keepdim=True)


class InputSums:
    """The statistics of the fast correction: each layer's inputs summed over the samples of an FP32 pass (one
    tensor per input shape), gathered by forward pre-hooks while attached (``with sums:``).

    Any pass that runs the FP32 layers serves: the correction's own, or a toolchain's calibration pass (FX's
    observers leave the values as they are), which then needs no pass of its own, as NNCF gathers its
    bias-correction statistics in the pass that gathers its ranges. The rounding error meets the sums once, at
    the end, which keeps the pass at the cost of a forward."""

    def __init__(self, layers: dict[str, nn.Module]):
        self.layers = layers
        self._sums: dict[str, dict[tuple, torch.Tensor]] = {n: {} for n in layers}
        self._counts: dict[str, dict[tuple, int]] = {n: {} for n in layers}
        self._handles: list = []

    def add(self, names: list[str], x: torch.Tensor) -> None:
        """Count ``x``, one batch of the input of each layer in ``names`` (all of one kind: conv or linear; a
        graph whose convs are calls, PT2E's, sums an input shared by several layers once)."""
        x = x.detach()
        if isinstance(self.layers[names[0]], nn.Linear):  # every row of every sample is one output position
            x = x.reshape(-1, x.shape[-1])
        shape, summed = tuple(x.shape[1:]), _batch_sum(x)
        for name in names:
            self._sums[name][shape] = self._sums[name].get(shape, 0) + summed
            self._counts[name][shape] = self._counts[name].get(shape, 0) + x.shape[0]

    def _hook(self, name: str):
        def run(module: nn.Module, inputs: tuple) -> None:
            self.add([name], inputs[0])
        return run

    def attach(self) -> list:
        """Hook every layer; the handles, which :meth:`detach` (or leaving ``with``) removes."""
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.layers.items()]
        return self._handles

    def detach(self) -> None:
        """Remove the hooks :meth:`attach` registered."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> InputSums:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def shifts(self, scheme: WeightScheme) -> dict[str, torch.Tensor]:
        """Per layer, the mean per output channel of (Q(W) - W) x over the summed FP32 inputs.

        A conv with an ``output_subsample`` (stride, offset) attribute is a strided conv run at stride 1 and
        subsampled after (quantization/Torch/depthwise_fast_path.py): only the kept positions count."""
        shifts = {}
        with torch.inference_mode():
            for name, module in self.layers.items():
                error = fake_quantize_weight(module.weight, scheme.for_module(module)) - module.weight.detach()
                total, positions = 0, 0
                for shape, summed in self._sums[name].items():
                    count = self._counts[name][shape]
                    if isinstance(module, nn.Linear):
                        total, positions = total + (summed @ error.T)[0], positions + count
                        continue
                    # convolution is linear in x: the summed input's output is the sum of the outputs
                    y = module._conv_forward(summed, error, None)
                    subsample = getattr(module, "output_subsample", None)
                    if subsample is not None:
                        stride, offset = subsample
                        y = y[:, :, offset::stride, offset::stride]
                    total = total + y.sum(dim=(0, *range(2, y.dim())))
                    positions += count * y[0, 0].numel()
                if positions:
                    shifts[name] = total / positions
        return shifts

    def fold(self, scheme: WeightScheme) -> int:
        """Fold each layer's negated shift into its bias, in place; how many layers were corrected."""
        return _fold(self.layers, {n: -s for n, s in self.shifts(scheme).items()}, scheme, "fast")


def corrected_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers the correction measures: every conv and linear, except those a prepared torch.ao model keeps
    in float (its qconfig is None there: their weights are never rounded)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, LAYERS) and not (hasattr(m, "qconfig") and m.qconfig is None)}


def _rounding_shifts(model: nn.Module, batches: Iterable[torch.Tensor], layers: list[str],
                     scheme: WeightScheme) -> dict[str, torch.Tensor]:
    """Per layer, the mean per output channel of (Q(W) - W) x over the FP32 inputs x of ``batches``."""
    modules = dict(model.named_modules())
    sums = InputSums({n: modules[n] for n in layers})
    _run_hooked(model, batches, sums.attach())
    return sums.shifts(scheme)


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
    modules = dict(model.named_modules())
    return _fold({n: modules[n] for n in shifts}, shifts, scheme, method)


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


def _fold(layers: dict[str, nn.Module], shifts: dict[str, torch.Tensor], scheme: WeightScheme, method: str) -> int:
    for name, shift in shifts.items():
        layer = layers[name]
        with torch.no_grad():
            if layer.bias is None:
                layer.bias = nn.Parameter(shift.clone())
            else:
                layer.bias.add_(shift)
    log.info("bias correction (%s, %s weights): %d layers corrected", method, scheme.describe(), len(shifts))
    return len(shifts)
