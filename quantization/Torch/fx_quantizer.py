"""torch.ao FX graph-mode PTQ: static (prepare_fx -> calibrate -> convert_fx) and dynamic (Linear).

The INT8 model is traced to TorchScript so it reloads without recalibration or model code; the FP32
reference is traced the same way, so both run on the same TorchScript runtime.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
from tqdm import tqdm

from quantization.base import Quantizer, float_suffix
from quantization.Torch.qconfig import build_qconfig_mapping, saturation_risk, use_reduce_range, validate, weight_bits
from quantization.Torch.torchscript_export import write_torchscript
from quantization.transforms.weight_scheme import WeightScheme
from utils.artifacts import Artifact
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel

log = logging.getLogger(__name__)

MODES = ("fx", "dynamic")


class FxQuantizer(Quantizer):
    toolchain = "torch_fx"
    folder = "torch"

    def settings(self) -> dict[str, Any]:
        t = self.cfg.torch
        if t.mode == "dynamic":
            return {"mode": "dynamic", "backend": t.backend, "weights": "qint8 per-tensor (Linear only)"}
        return {"mode": "fx", "backend": t.backend, "granularity": t.granularity, "observer": t.observer,
                "percentile": t.percentile if t.observer == "percentile" else None,
                "reduce_range": use_reduce_range(t), "weight_bits": weight_bits(t),
                "saturation_risk_on_this_cpu": saturation_risk(t), "float_layers": list(t.float_layers),
                "calibration_size": self.cfg.calibration.size, "calibration_seed": self.cfg.calibration.seed}

    def weight_scheme(self) -> WeightScheme:
        t = self.cfg.torch
        qmin, qmax = (-64, 63) if weight_bits(t) == 7 else (-128, 127)
        return WeightScheme(per_channel=t.granularity == "per_channel", qmin=qmin, qmax=qmax, divisor=(qmax - qmin) / 2)

    def tag(self) -> str:
        t = self.cfg.torch
        if t.mode == "dynamic":
            return f"dynamic_{t.backend}"
        bits = "_w7" if weight_bits(t) == 7 else ""
        rr = "_rr" if use_reduce_range(t) else ""
        return f"fx_{t.backend}_{t.granularity}_{t.observer}{rr}{bits}{float_suffix(t.float_layers)}"

    def quantizable_layers(self, model: LoadedModel) -> list[str]:
        return [name for name, m in model.module.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    def with_float_layers(self, layers: list[str]) -> FxQuantizer:
        cfg = copy.deepcopy(self.cfg)
        cfg.torch.float_layers = list(layers)
        return FxQuantizer(cfg)

    def _example(self, model: LoadedModel, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, *model.input_shape)

    def export_fp32(self, model: LoadedModel) -> Artifact:
        final = self.output_dir() / f"{self.artifact_stem(model, 'fp32')}.pt"
        return write_torchscript(model.module, self._example(model), final,
                                 name=f"{model.arch} FP32", toolchain="torch", precision="fp32",
                                 settings={"mode": "fp32"}, source_weights=model.weights_path,
                                 calibration_ids=None, extra=self.model_facts(model))

    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        t = self.cfg.torch
        if t.mode not in MODES:
            raise SuiteError(f"torch_fx mode must be one of {', '.join(MODES)} (got {t.mode})")
        validate(t)
        if t.backend not in torch.backends.quantized.supported_engines:
            raise SuiteError(f"quantized engine {t.backend} is not built into this torch "
                             f"(have: {', '.join(torch.backends.quantized.supported_engines)})")
        torch.backends.quantized.engine = t.backend
        start = time.perf_counter()
        if t.mode == "dynamic":
            quantized = self._dynamic(model)
            ids = None
        else:
            quantized = self._static(model, calibration)
            ids = calibration.ids
        elapsed = time.perf_counter() - start
        final = self.output_dir() / f"{self.artifact_stem(model, self.tag())}.pt"
        return write_torchscript(quantized, self._example(model), final,
                                 name=f"{model.arch} {self.tag()}", toolchain=self.toolchain, precision="int8",
                                 settings=self.settings(), source_weights=model.weights_path,
                                 calibration_ids=ids, extra={**self.model_facts(model), "quantize_seconds": round(elapsed, 2)})

    def _static(self, model: LoadedModel, calibration: CalibrationSet) -> torch.nn.Module:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        mapping = build_qconfig_mapping(self.cfg.torch)
        example = self._example(model)
        try:
            prepared = prepare_fx(copy.deepcopy(model.module).eval(), mapping, example_inputs=(example,))
        except Exception as exc:  # symbolic tracing fails on data-dependent control flow
            raise SuiteError(f"FX cannot trace {model.arch}: {str(exc).splitlines()[0]} "
                             "(try --mode pt2e or --mode dynamic)") from None
        with torch.inference_mode():
            for images in tqdm(calibration.batches(), desc="calibrating (FX)", unit="batch",
                               total=-(-len(calibration.dataset) // calibration.batch_size)):
                prepared(images)
        return convert_fx(prepared)

    def _dynamic(self, model: LoadedModel) -> torch.nn.Module:
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(copy.deepcopy(model.module).eval(), {torch.nn.Linear}, dtype=torch.qint8)
        log.info("dynamic PTQ: only nn.Linear layers are quantized; convolutions stay FP32")
        return quantized
