"""Dynamic PTQ: Linear (and LSTM/GRU) weights to qint8, activations quantized on the fly per batch.

No calibration data. On a CNN only the classifier changes; on Linear-heavy models (transformers) it
is the usual CPU INT8 path.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from quantization.Torch.torchscript_quantizer import TorchScriptQuantizer
from utils.data import CalibrationSet
from utils.models import LoadedModel

log = logging.getLogger(__name__)

DYNAMIC_TYPES = (nn.Linear, nn.LSTM, nn.GRU)


def dynamic_layers(module: nn.Module) -> dict[str, str]:
    """The layers dynamic PTQ converts: name -> type."""
    return {name: type(m).__name__ for name, m in module.named_modules() if isinstance(m, DYNAMIC_TYPES)}


class DynamicQuantizer(TorchScriptQuantizer):
    toolchain = "torch_dynamic"
    mode = "dynamic"

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode, "backend": self.cfg.torch.backend,
                "weights": "qint8 per-tensor (Linear, LSTM, GRU); activations quantized per batch at run time"}

    def tag(self) -> str:
        return f"{self.mode}_{self.cfg.torch.backend}"

    def _quantized_module(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[nn.Module, None]:
        from torch.ao.quantization import quantize_dynamic

        layers = dynamic_layers(model.module)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.module.modules())
        if convs:
            log.info("dynamic PTQ: %d layer(s) quantized (%s); the %d convolutions stay FP32, so on a CNN only "
                     "the classifier changes", len(layers), ", ".join(sorted(set(layers.values()))), convs)
        quantized = quantize_dynamic(copy.deepcopy(model.module).eval(), set(DYNAMIC_TYPES), dtype=torch.qint8)
        return quantized, None
