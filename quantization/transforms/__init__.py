"""Model -> model passes applied to the FP32 model before any toolchain quantizes it.

``apply_transforms`` is the one entry point: it copies the model, runs the passes the config asks
for (BN folding and cross-layer equalization, then bias correction for the toolchain's own weight
grid) and records them on the copy, so the artifact's name and manifest say what was applied.
"""
from __future__ import annotations

import copy
import dataclasses
import logging

from quantization.transforms.weight_scheme import WeightScheme
from utils.config import TransformConfig
from utils.data import CalibrationSet
from utils.models import LoadedModel

log = logging.getLogger(__name__)

#: the name each bias-correction method is recorded under in ``LoadedModel.transforms`` (and the manifest)
BIAS_CORRECTION = {"fast": "bias_correction", "sequential": "bias_correction_sequential"}


def requested(cfg: TransformConfig) -> bool:
    return cfg.cle or cfg.bias_correction


#: images per forward pass of the transforms: neither correction depends on the batching (both sum over the
#: sample), and small batches keep each layer's activations in cache (EfficientNet-Lite0, 300 images, 2 cores,
#: x86-vnni: an FP32 pass takes 4.1 s at 8 against 11.4 s at 32)
TRANSFORM_BATCH = 8


def apply_transforms(model: LoadedModel, cfg: TransformConfig, calibration: CalibrationSet,
                     scheme: WeightScheme, in_calibration: bool = False) -> LoadedModel:
    """A transformed copy of ``model`` (the input is left untouched); the same model if none is asked.

    ``in_calibration``: the quantizer gathers the fast correction's statistics in its own calibration pass and
    folds it there (FX: :class:`~quantization.transforms.bias_correction.InputSums`; PT2E: the same through
    quantization/Torch/pt2e_input_sums.py; ORT and ModelOpt: quantization/transforms/onnx_bias_correction.py),
    which saves a pass over the calibration images; the model is only marked ``bias_correction_pending`` here, its
    module left as it is (the ONNX toolchains then quantize the reference export itself, whose BatchNorm the
    exporter folds; FX and PT2E fold BatchNorm in their own copies).

    Cross-layer equalization is asked for by name, so a model it cannot trace is an error. Bias correction is
    a default: on such a model (a TorchScript or torch.export file, data-dependent control flow) it is
    recorded as not applied, with the reason, and the run goes on, as NNCF skips an algorithm it cannot apply."""
    if not requested(cfg):
        return model
    from quantization.transforms.bias_correction import correct_bias
    from quantization.transforms.cle import equalize_chains
    from quantization.transforms.graph import UntraceableModel

    pending = in_calibration and cfg.bias_correction and cfg.bias_correction_method == "fast"
    module = copy.deepcopy(model.module).eval() if cfg.cle or not pending else model.module
    applied: list[str] = []
    not_applied: dict[str, str] = {}
    if cfg.cle:
        equalize_chains(module, relu6=cfg.cle_relu6)
        applied.append("cle_relu6_to_relu" if cfg.cle_relu6 == "relu" else "cle")
    if pending:
        applied.append(BIAS_CORRECTION["fast"])
    elif cfg.bias_correction:
        try:
            correct_bias(module, calibration.batches(TRANSFORM_BATCH), scheme, cfg.bias_correction_method)
            applied.append(BIAS_CORRECTION[cfg.bias_correction_method])
        except UntraceableModel as exc:  # raised before the module is changed
            not_applied["bias_correction"] = str(exc)
            log.info("bias correction not applied: %s", exc)
    if not applied:
        return dataclasses.replace(model, not_applied={**model.not_applied, **not_applied})
    return dataclasses.replace(model, module=module, transforms=[*model.transforms, *applied],
                               not_applied={**model.not_applied, **not_applied}, bias_correction_pending=pending)


__all__ = ["apply_transforms", "requested", "BIAS_CORRECTION", "WeightScheme"]
