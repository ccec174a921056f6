"""torch.ao eager-mode static PTQ: the model's quantizable variant, fuse_model -> prepare -> calibrate
-> convert. The mode torchvision's quantized models use; FX does the same without model changes."""
from __future__ import annotations

import torch
from torch.ao.quantization import convert, prepare

from quantization.Torch.calibration import calibrate
from quantization.Torch.eager_models import quantizable_twin
from quantization.Torch.qconfig import build_qconfig
from quantization.Torch.torchscript_quantizer import TorchScriptQuantizer
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel


class EagerQuantizer(TorchScriptQuantizer):
    toolchain = "torch_eager"
    mode = "eager"

    def _quantized_module(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[torch.nn.Module, list[str]]:
        if self.cfg.torch.float_layers:
            raise SuiteError("eager mode keeps no single layer in float here (use --mode fx for layer fallback)")
        twin = quantizable_twin(model)
        twin.fuse_model()
        twin.qconfig = build_qconfig(self.cfg.torch, self.target)
        prepare(twin, inplace=True)
        calibrate(twin, calibration, self.calibration_batch_size(), "calibrating (eager)")
        return convert(twin), calibration.ids
