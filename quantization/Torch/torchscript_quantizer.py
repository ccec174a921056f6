"""What the torch.ao modes share: a TorchScript FP32 reference and a TorchScript INT8 artifact.

The INT8 model is traced to TorchScript so it reloads without recalibration or model code; the FP32
reference is traced the same way, so both run on the same runtime. Each mode (FX, eager, QAT,
dynamic) only says how it turns the FP32 module into a quantized one.
"""
from __future__ import annotations

import logging
import time
from abc import abstractmethod
from typing import Any, ClassVar

import torch

from quantization.base import Quantizer, float_suffix
from quantization.run_config import RunConfig
from quantization.Torch.qconfig import (
    BATCH_INDEPENDENT_OBSERVERS,
    resolve_backend,
    saturation_risk,
    use_reduce_range,
    validate,
    weight_bits,
    weight_range,
)
from quantization.Torch.torchscript_export import write_torchscript
from quantization.transforms.weight_scheme import WeightScheme
from utils.artifacts import Artifact
from utils.config import replace_section
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel
from utils.stages import StageTimer

log = logging.getLogger(__name__)


class TorchScriptQuantizer(Quantizer):
    folder = "torch"
    section = "torch"
    runtimes = ("torch",)
    mode: ClassVar[str]  # fx, eager, dynamic, qat: in the settings and the artifact name
    driver_only = ("a TorchScript archive records the Python call stack of its trace (code/*.debug_pkl), so a Ray "
                   "worker's frames would change its bytes and size")

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        backend = resolve_backend(cfg.torch.backend, self.mode, self.target)
        if backend != cfg.torch.backend:  # --backend auto: the engine this mode and target take, everywhere after
            self.cfg = replace_section(cfg, "torch", backend=backend)
        self.timer = StageTimer(self.toolchain)  # stages of the latest quantize(), in its manifest

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.static_settings()}

    def tag(self) -> str:
        """The artifact-name part that says how it was quantized."""
        return self.static_tag(self.mode)

    @abstractmethod
    def _quantized_module(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[torch.nn.Module, list[str] | None]:
        """The converted INT8 module and the ids of the images it saw (None: no data used)."""

    def ranges_depend_on_batching(self) -> bool:
        return self.cfg.torch.observer not in BATCH_INDEPENDENT_OBSERVERS

    def static_settings(self) -> dict[str, Any]:
        """The qconfig settings every static mode shares (observer, granularity, bit widths)."""
        t = self.cfg.torch
        return {"backend": t.backend, "granularity": t.granularity, "observer": t.observer,
                "percentile": t.percentile if t.observer == "percentile" else None,
                "reduce_range": use_reduce_range(t), "weight_bits": weight_bits(t, self.target),
                "saturation_risk_on_target": saturation_risk(t, self.target), "float_layers": list(t.float_layers),
                "calibration_size": self.cfg.calibration.size, "calibration_seed": self.cfg.calibration.seed,
                "calibration_batch_size": self.calibration_batch_size()}

    def static_tag(self, mode: str) -> str:
        t = self.cfg.torch
        bits = "_w7" if weight_bits(t, self.target) == 7 else ""
        rr = "_rr" if use_reduce_range(t) else ""
        return f"{mode}_{t.backend}_{t.granularity}_{t.observer}{rr}{bits}{float_suffix(t.float_layers)}"

    def weight_scheme(self) -> WeightScheme:
        t = self.cfg.torch
        qmin, qmax = weight_range(t, self.target)
        return WeightScheme(per_channel=t.granularity == "per_channel", qmin=qmin, qmax=qmax, divisor=(qmax - qmin) / 2)

    def quantizable_layers(self, model: LoadedModel) -> list[str]:
        return [name for name, m in model.module.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    def with_float_layers(self, layers: list[str]) -> TorchScriptQuantizer:
        return type(self)(replace_section(self.cfg, "torch", float_layers=list(layers)))  # the same target

    @staticmethod
    def example(model: LoadedModel, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, *model.input_shape)

    def export_fp32(self, model: LoadedModel) -> Artifact:
        final = self.output_dir() / f"{self.artifact_stem(model, 'fp32')}.pt"
        return write_torchscript(model.module, self.example(model), final,
                                 name=f"{model.arch} FP32", toolchain="torch", precision="fp32",
                                 settings={"mode": "fp32"}, source_weights=model.weights_path,
                                 calibration_ids=None, extra=self.model_facts(model))

    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        t = self.cfg.torch
        validate(t)
        if t.backend not in torch.backends.quantized.supported_engines:
            raise SuiteError(f"quantized engine {t.backend} is not built into this torch "
                             f"(have: {', '.join(torch.backends.quantized.supported_engines)})")
        torch.backends.quantized.engine = t.backend
        self.timer = StageTimer(self.toolchain)
        start = time.perf_counter()
        quantized, ids = self._quantized_module(model, calibration)
        elapsed = time.perf_counter() - start
        if not self.timer.seconds:  # a mode without finer stages
            self.timer.seconds["quantize"] = round(elapsed, 3)
        final = self.output_dir() / f"{self.artifact_stem(model, self.tag())}.pt"
        return write_torchscript(quantized, self.example(model), final,
                                 name=f"{model.arch} {self.tag()}", toolchain=self.toolchain, precision="int8",
                                 settings=self.settings(), source_weights=model.weights_path,
                                 calibration_ids=ids, extra={**self.model_facts(model), "quantize_seconds": round(elapsed, 2)},
                                 timer=self.timer)
