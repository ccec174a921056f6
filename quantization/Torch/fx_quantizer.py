"""torch.ao FX graph-mode static PTQ: prepare_fx -> calibrate -> convert_fx, no model changes needed."""
from __future__ import annotations

import copy

import torch

from quantization.Torch.qconfig import build_qconfig_mapping
from quantization.Torch.torchscript_quantizer import TorchScriptQuantizer, calibrate
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel


class FxQuantizer(TorchScriptQuantizer):
    toolchain = "torch_fx"
    mode = "fx"

    def _quantized_module(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[torch.nn.Module, list[str]]:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        mapping = build_qconfig_mapping(self.cfg.torch)
        try:
            prepared = prepare_fx(copy.deepcopy(model.module).eval(), mapping, example_inputs=(self.example(model),))
        except Exception as exc:  # symbolic tracing fails on data-dependent control flow
            raise SuiteError(f"FX cannot trace {model.arch}: {str(exc).splitlines()[0]} "
                             "(try --mode pt2e or --mode dynamic)") from None
        calibrate(prepared, calibration, "calibrating (FX)")
        return convert_fx(prepared), calibration.ids
