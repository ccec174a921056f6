"""torch.ao FX graph-mode static PTQ: prepare_fx -> calibrate -> convert_fx, no model changes needed.

One fix on top of torch.ao: ReLU6 (and other fixed clamps) after a convolution. torch.ao cannot fuse
conv + ReLU6, and gives the ReLU6 the *same* observer as the convolution's output, so the INT8 range
of that output covers the pre-activation values (often -20..30) while only 0..6 survives the clamp:
five of the eight bits are wasted on every ReLU6 of a MobileNet/EfficientNet. Observing the clamped
values instead gives the conv output the range [0, 6]; requantization then saturates exactly as
ReLU6 does, so the model computes the same function with the full 8 bits where they matter.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from typing import Any

import torch
from torch import fx, nn
from torch.ao.quantization.observer import MovingAverageMinMaxObserver

from quantization.Torch.calibration import calibrate
from quantization.Torch.depthwise_fast_path import subsample_strided_depthwise
from quantization.Torch.fx_tracing import without_stack_traces
from quantization.Torch.histogram_observer import FastHistogramObserver
from quantization.Torch.qconfig import build_qconfig_mapping, depthwise_convs, depthwise_weight_bits, weight_range
from quantization.Torch.torchscript_quantizer import TorchScriptQuantizer
from quantization.transforms.bias_correction import InputSums, corrected_layers
from quantization.transforms.bn_fold import fold_batchnorm_if_traceable
from quantization.transforms.weight_scheme import WeightScheme
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel

log = logging.getLogger(__name__)


def _clamp_bounds(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[float, float] | None:
    """(low, high) where ``node`` is a fixed clamp: ReLU6, hardtanh, or clamp with constant bounds."""
    if node.op == "call_module":
        module = modules.get(str(node.target))
        if isinstance(module, nn.Hardtanh):  # nn.ReLU6 is a Hardtanh(0, 6)
            return float(module.min_val), float(module.max_val)
    if node.op == "call_function":
        if node.target is nn.functional.relu6:
            return 0.0, 6.0
        if node.target is nn.functional.hardtanh:
            low = node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else -1.0)
            high = node.kwargs.get("max_val", node.args[2] if len(node.args) > 2 else 1.0)
            return float(low), float(high)
        if node.target is torch.clamp:
            low = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
            high = node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
            if isinstance(low, (int, float)) and isinstance(high, (int, float)):
                return float(low), float(high)
    return None


def observe_clamped_ranges(prepared: fx.GraphModule) -> int:
    """Make each observer whose only consumer is a fixed clamp record the clamped values; returns how many.

    Runs between prepare_fx and calibration (see the module docstring for why)."""
    modules = dict(prepared.named_modules())
    tightened = 0
    for node in prepared.graph.nodes:
        observer = modules.get(str(node.target)) if node.op == "call_module" else None
        if observer is None or "activation_post_process" not in str(node.target) or len(node.users) != 1:
            continue
        clamp = next(iter(node.users))
        bounds = _clamp_bounds(clamp, modules)
        if bounds is None or getattr(observer, "_clamp_bounds", None):
            continue
        base = type(observer)
        low, high = bounds
        # torch.ao hands the clamp's output the same observer instance: those values are the clamped
        # ones it has just seen, so the second call of each pair is skipped (EfficientNet-Lite0: 40 %
        # of all observed values; min/max and histogram ranges do not change, every count would only be
        # doubled; a moving average would, so it keeps both calls)
        shared = (any(user.op == "call_module" and user.target == node.target for user in clamp.users)
                  and not isinstance(observer, MovingAverageMinMaxObserver))

        # the fast histogram clamps inside its count (no copy of the activation); the others see the copy
        observe_clamped = getattr(base, "observe_clamped", None)

        def forward(self, x: torch.Tensor, _base=base, _low=low, _high=high, _shared=shared,
                    _observe_clamped=observe_clamped) -> torch.Tensor:
            if self._seen_clamped:
                self._seen_clamped = False
                return x
            if _observe_clamped is not None:
                _observe_clamped(self, x, _low, _high)
            else:
                _base.forward(self, x.clamp(_low, _high))
            self._seen_clamped = _shared
            return x

        observer.__class__ = type(f"Clamped{base.__name__}", (base,), {"forward": forward})
        observer._clamp_bounds, observer._seen_clamped = bounds, False
        tightened += 1
    return tightened


class FxQuantizer(TorchScriptQuantizer):
    toolchain = "torch_fx"
    mode = "fx"
    runs_by_default = True
    library_modules = ("torch.ao.quantization.quantize_fx",)
    layer_fallback = True
    calibrations = {"minmax": "minmax", "percentile": "percentile", "mse": "histogram"}
    unsupported_calibrations = {
        "entropy": "torch.ao has no KL-divergence observer (its HistogramObserver minimises MSE: use mse)"}
    granularities = ("per_tensor", "per_channel")
    calibration_fields = ("observer", "granularity")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "clamp_observers": self.cfg.torch.clamp_observers,
                "depthwise_weight_bits": depthwise_weight_bits(self.cfg.torch, self.target)}

    def gathers_bias_statistics(self) -> bool:
        return True  # its observers' pass runs the FP32 layers (quantization/transforms/bias_correction.py)

    def weight_scheme(self) -> WeightScheme:
        """The base grid, with FX's depthwise weight bits (see ``depthwise_weight_bits``)."""
        scheme = super().weight_scheme()
        depthwise = weight_range(self.cfg.torch, self.target, depthwise_weight_bits(self.cfg.torch, self.target))
        return scheme if depthwise == (scheme.qmin, scheme.qmax) else dataclasses.replace(scheme, depthwise_range=depthwise)

    def tag(self) -> str:
        shared = "_sharedclamp" if self.cfg.torch.clamp_observers == "shared" else ""
        return super().tag() + shared

    def _quantized_module(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[torch.nn.Module, list[str]]:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        module = copy.deepcopy(model.module).eval()
        if model.bias_correction_pending:  # the grid the correction measures: conv and BN as one, fused by torch.ao
            fold_batchnorm_if_traceable(module)  # or not (a BN it does not fuse keeps the conv's raw weights)
        if self.cfg.torch.backend in ("x86", "fbgemm"):
            module, rewritten = subsample_strided_depthwise(module)
            if rewritten:
                log.info("FX: %d stride-2 'SAME' depthwise convs run as stride 1 + subsample (FBGEMM's fast "
                         "depthwise kernel needs padding (K-1)/2)", rewritten)
        mapping = build_qconfig_mapping(self.cfg.torch, self.target, depthwise_convs(module))
        clamp = self.cfg.torch.clamp_observers
        if clamp not in ("clamped", "shared"):
            raise SuiteError(f"--clamp-observers must be clamped or shared (got {clamp})")
        with self.timer.stage("prepare"):
            try:
                with without_stack_traces():
                    prepared = prepare_fx(module, mapping, example_inputs=(self.example(model),))
            except Exception as exc:  # symbolic tracing fails on data-dependent control flow
                raise SuiteError(f"FX cannot trace {model.arch}: {str(exc).splitlines()[0]} "
                                 "(try --mode pt2e or --mode dynamic)") from exc
            tightened = observe_clamped_ranges(prepared) if clamp == "clamped" else 0
        if tightened:
            log.info("FX: %d conv outputs followed by ReLU6/clamp take the clamped range", tightened)
        sums = InputSums(corrected_layers(prepared)) if model.bias_correction_pending else None
        with self.timer.stage("calibrate"), sums or contextlib.nullcontext():
            calibrate(prepared, calibration, self.calibration_batch_size(), "calibrating (FX)")
        if sums is not None:  # the fast correction, from the calibration pass's own FP32 inputs
            with self.timer.stage("bias correction"):
                sums.fold(self.weight_scheme())
        with self.timer.stage("statistics"):  # observers that keep their qparams: convert_fx reuses them
            for observer in prepared.modules():
                if isinstance(observer, FastHistogramObserver):
                    observer.calculate_qparams()
        with self.timer.stage("convert"):
            return convert_fx(prepared), calibration.ids
