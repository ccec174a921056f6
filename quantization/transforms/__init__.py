"""Model -> model passes applied to the FP32 model before any toolchain quantizes it.

``apply_transforms`` is the one entry point: it copies the model, runs the passes the config asks
for (BN folding and cross-layer equalization, then bias correction for the toolchain's own weight
grid) and records them on the copy, so the artifact's name and manifest say what was applied.
"""
from __future__ import annotations

import copy
import dataclasses

from quantization.transforms.weight_scheme import WeightScheme
from utils.config import TransformConfig
from utils.data import CalibrationSet
from utils.models import LoadedModel


def requested(cfg: TransformConfig) -> bool:
    return cfg.cle or cfg.bias_correction


def apply_transforms(model: LoadedModel, cfg: TransformConfig, calibration: CalibrationSet,
                     scheme: WeightScheme, batch_size: int) -> LoadedModel:
    """A transformed copy of ``model`` (the input is left untouched); the same model if none is asked."""
    if not requested(cfg):
        return model
    from quantization.transforms.bias_correction import correct_bias
    from quantization.transforms.cle import equalize_chains

    module = copy.deepcopy(model.module).eval()
    applied: list[str] = []
    if cfg.cle:
        equalize_chains(module, relu6=cfg.cle_relu6)
        applied.append("cle_relu6_to_relu" if cfg.cle_relu6 == "relu" else "cle")
    if cfg.bias_correction:
        correct_bias(module, calibration.batches(batch_size), scheme)
        applied.append("bias_correction")
    return dataclasses.replace(model, module=module, transforms=[*model.transforms, *applied])


__all__ = ["apply_transforms", "requested", "WeightScheme"]
