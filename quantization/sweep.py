"""Calibration sweep: the suite's calibration and granularity names mapped onto each toolchain.

Users compare calibration methods and per-tensor vs per-channel weights side by side; each toolchain
supports a different subset, and the combinations it cannot run are listed with the reason.
"""
from __future__ import annotations

import itertools

from quantization.run_config import RunConfig

CALIBRATIONS = ("minmax", "percentile", "entropy", "mse")
GRANULARITIES = ("per_tensor", "per_channel")



def normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def sweep_configs(toolchain: str, cfg: RunConfig) -> tuple[list[RunConfig], list[tuple[str, str]]]:
    """One config per supported (calibration, granularity) combination, and the skipped ones with why.

    What each toolchain supports is its Quantizer class's knowledge (``calibrations``, ``granularities``)."""
    from quantization.registry import quantizer_class

    tuning = cfg.tuning
    cls = quantizer_class(toolchain)
    if not cls.calibrations or not (tuning.calibrations or tuning.granularities):
        return [cfg], []
    default_method = cls.calibration_of(cfg)
    methods = [normalize(m) for m in tuning.calibrations] if tuning.calibrations else [None]
    grans = [normalize(g) for g in tuning.granularities] if tuning.granularities else [None]
    configs, skipped = [], []
    for method, gran in itertools.product(methods, grans):
        label = f"{toolchain} {method or default_method}/{gran or 'default'}"
        if method and method not in CALIBRATIONS:
            skipped.append((label, f"unknown calibration '{method}' (known: {', '.join(CALIBRATIONS)})"))
            continue
        if method and method not in cls.calibrations:
            skipped.append((label, cls.unsupported_calibrations.get(method, "not supported by this toolchain")))
            continue
        if gran and gran not in cls.granularities:
            skipped.append((label, cls.granularity_note if gran in GRANULARITIES and cls.granularity_note
                            else f"unknown granularity '{gran}'"))
            continue
        configs.append(cls.with_calibration(cfg, cls.calibrations[method] if method else None, gran))
    return configs, skipped
