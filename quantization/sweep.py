"""Calibration sweep: the suite's calibration and granularity names mapped onto each toolchain.

Users compare calibration methods and per-tensor vs per-channel weights side by side; each toolchain
supports a different subset, and the combinations it cannot run are listed with the reason.
"""
from __future__ import annotations

import copy
import itertools

from utils.config import RunConfig

CALIBRATIONS = ("minmax", "percentile", "entropy", "mse")
GRANULARITIES = ("per_tensor", "per_channel")

# toolchain -> suite calibration name -> the toolchain's own setting (None: not supported)
_METHODS = {
    "torch_fx": {"minmax": "minmax", "percentile": "percentile", "mse": "histogram", "entropy": None},
    "ort": {"minmax": "minmax", "percentile": "percentile", "entropy": "entropy", "mse": None},
    "modelopt": {"minmax": "max", "entropy": "entropy", "percentile": None, "mse": None},
}
_GRANULARITY = {"torch_fx": GRANULARITIES, "ort": GRANULARITIES, "modelopt": ("per_channel",)}
_WHY = {
    ("torch_fx", "entropy"): "torch.ao has no KL-divergence observer (its HistogramObserver minimises MSE: use mse)",
    ("ort", "mse"): "onnxruntime's calibrators are MinMax, Entropy, Percentile and Distribution",
    ("modelopt", "percentile"): "ModelOpt int8 calibrates with max or entropy only",
    ("modelopt", "mse"): "ModelOpt int8 calibrates with max or entropy only",
}


def normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def sweep_configs(toolchain: str, cfg: RunConfig) -> tuple[list[RunConfig], list[tuple[str, str]]]:
    """One config per supported (calibration, granularity) combination, and the skipped ones with why."""
    tuning = cfg.tuning
    if toolchain not in _METHODS or not (tuning.calibrations or tuning.granularities):
        return [cfg], []
    default_method = {"torch_fx": cfg.torch.observer, "ort": cfg.modelopt.calibration_method,
                      "modelopt": cfg.modelopt.calibration_method}[toolchain]
    methods = [normalize(m) for m in tuning.calibrations] if tuning.calibrations else [None]
    grans = [normalize(g) for g in tuning.granularities] if tuning.granularities else [None]
    configs, skipped = [], []
    for method, gran in itertools.product(methods, grans):
        own = _METHODS[toolchain].get(method) if method else default_method
        label = f"{toolchain} {method or default_method}/{gran or 'default'}"
        if method and method not in CALIBRATIONS:
            skipped.append((label, f"unknown calibration '{method}' (known: {', '.join(CALIBRATIONS)})"))
            continue
        if own is None:
            skipped.append((label, _WHY.get((toolchain, method), "not supported by this toolchain")))
            continue
        if gran and gran not in _GRANULARITY[toolchain]:
            skipped.append((label, "ModelOpt int8 weights are always per channel" if toolchain == "modelopt"
                            else f"unknown granularity '{gran}'"))
            continue
        variant = copy.deepcopy(cfg)
        if toolchain == "torch_fx":
            variant.torch.observer = own
            variant.torch.granularity = gran or variant.torch.granularity
        else:
            variant.modelopt.calibration_method = own
            variant.modelopt.granularity = gran or variant.modelopt.granularity
        configs.append(variant)
    return configs, skipped
