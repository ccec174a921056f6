"""Per-layer sensitivity and accuracy-aware layer fallback, one algorithm for every toolchain.

ModelOpt, ONNX Runtime and TensorRT quantize to a recipe, not to an accuracy target; Neural
Compressor, NNCF and AIMET tune. Here: keep one layer in float at a time and measure, on a held-out
slice (never evaluation images), the top-1 and the SQNR of the logits against FP32; rank the layers;
then, from full INT8, keep the most sensitive layers in float one by one until the top-1 drop on the
held-out slice is within ``max_drop`` pp or the layer budget is spent. A toolchain takes part by
implementing ``quantizable_layers`` and ``with_float_layers`` (FX: qconfig None per module;
ModelOpt/ORT: nodes_to_exclude).
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.pipelines.loop import collect_logits, open_runner
from quantization.base import Quantizer
from quantization.workflow import Prepared
from utils.artifacts import Artifact
from utils.console import progress_disabled
from utils.data import DataSplits, SubsetDataset
from utils.errors import SuiteError

log = logging.getLogger(__name__)



@dataclass
class HeldOut:
    images: np.ndarray
    labels: np.ndarray
    source: str


def heldout_slice(splits: DataSplits, calibration_ids: list[str], size: int) -> HeldOut:
    """Images for tuning decisions: calibration-pool images outside the calibration sample where there
    are enough, else the calibration sample itself. Never evaluation images."""
    used = set(calibration_ids)
    spare = [i for i, key in enumerate(splits.calibration_pool_ids) if key not in used]
    if len(spare) >= min(size, 100):
        indices, source = spare[:size], f"{min(size, len(spare))} calibration-pool images outside the calibration sample"
    else:
        indices = list(range(min(size, len(splits.calibration_pool))))
        source = f"{len(indices)} calibration images (the pool has no spare images)"
    subset = SubsetDataset(splits.calibration_pool, indices)
    items = [subset[i] for i in range(len(subset))]
    return HeldOut(np.stack([x.numpy() for x, _ in items]).astype(np.float32), np.array([y for _, y in items]), source)


def heldout_logits(artifact: Artifact, runtime: str, data: HeldOut, batch: int = 64) -> np.ndarray:
    batches = [data.images[i:i + batch] for i in range(0, len(data.images), batch)]
    return collect_logits({"held-out": open_runner(artifact, runtime).predict}, batches)["held-out"]


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference - test) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(float(np.sum(reference ** 2)) / noise)


@dataclass
class Trial:
    float_layers: list[str]
    top1: float
    sqnr_db: float


@dataclass
class RecoveryResult:
    toolchain: str
    runtime: str
    heldout: str
    fp32_top1: float
    full_int8: Trial
    ranking: list[dict[str, Any]] = field(default_factory=list)  # sensitivity, most sensitive first
    fallback: dict[str, Any] | None = None
    artifact: Artifact | None = None  # the fallback artifact (in models/), if one was made

    def to_dict(self) -> dict[str, Any]:
        return {"toolchain": self.toolchain, "runtime": self.runtime, "heldout": self.heldout,
                "fp32_top1": self.fp32_top1, "full_int8_top1": self.full_int8.top1,
                "full_int8_sqnr_db": self.full_int8.sqnr_db, "ranking": self.ranking, "fallback": self.fallback,
                "artifact": self.artifact.name if self.artifact else None}


def run_trial(quantizer: Quantizer, prepared: Prepared, runtime: str, data: HeldOut, reference: np.ndarray,
              layers: list[str], models_dir: Path | None) -> tuple[Trial, Artifact]:
    """One trial: quantize with ``layers`` kept in float, score it on the held-out slice. ``models_dir`` None:
    the artifact is the fallback and lands in models/; a cluster worker passes a scratch folder of its own."""
    quantizer = quantizer.with_float_layers(layers)
    if models_dir is not None:
        quantizer.models_dir = models_dir
    artifact = quantizer.quantize(prepared.model_for(quantizer), prepared.calibration)
    logits = heldout_logits(artifact, runtime, data)
    top1 = float(np.mean(logits.argmax(1) == data.labels))
    return Trial(list(layers), top1, sqnr_db(reference, logits)), artifact


#: runs independent trials (one layer set each) and returns them in order: here, or on a cluster
#: (evaluation/cluster/sensitivity.py); takes (quantizer, prepared, runtime, data, reference, layer sets)
TrialMap = Callable[[Quantizer, Prepared, str, HeldOut, np.ndarray, list[list[str]]], list[Trial]]


class _Evaluator:
    def __init__(self, quantizer: Quantizer, prepared: Prepared, runtime: str, data: HeldOut, fp32: Artifact,
                 trial_map: TrialMap | None = None):
        self.quantizer, self.prepared, self.runtime, self.data = quantizer, prepared, runtime, data
        self.reference = heldout_logits(fp32, runtime, data)
        self.scratch = tempfile.TemporaryDirectory(prefix="mls-sensitivity-")
        self.trial_map = trial_map

    def trial(self, layers: list[str], keep: bool = False) -> tuple[Trial, Artifact]:
        # trials go to a scratch folder; only the final fallback lands in models/
        return run_trial(self.quantizer, self.prepared, self.runtime, self.data, self.reference, layers,
                         None if keep else Path(self.scratch.name))

    def each_layer(self, layers: list[str], desc: str) -> list[Trial]:
        """One trial per layer kept in float alone: independent, so a cluster runs them in parallel."""
        if self.trial_map is not None:
            return self.trial_map(self.quantizer, self.prepared, self.runtime, self.data, self.reference,
                                  [[layer] for layer in layers])
        return [self.trial([layer])[0] for layer in tqdm(layers, desc=desc, unit="layer", disable=progress_disabled())]


def recover(toolchain: str, quantizer: Quantizer, prepared: Prepared, fp32: Artifact, *, sensitivity: bool,
            max_drop: float | None, budget: int, heldout_size: int, trial_map: TrialMap | None = None) -> RecoveryResult:
    if not quantizer.has_layer_fallback() or not quantizer.runtimes:
        from quantization.registry import TOOLCHAINS, quantizer_class

        supported = [n for n in TOOLCHAINS if quantizer_class(n).has_layer_fallback()]
        raise SuiteError(f"toolchain {toolchain} has no per-layer fallback (supported: {', '.join(supported)})")
    runtime = quantizer.runtimes[0]  # measured on the toolchain's recommended runtime
    data = heldout_slice(prepared.splits, prepared.calibration.ids, heldout_size)
    ev = _Evaluator(quantizer, prepared, runtime, data, fp32, trial_map)
    fp32_top1 = float(np.mean(ev.reference.argmax(1) == data.labels))
    full, _ = ev.trial([])
    result = RecoveryResult(toolchain, runtime, data.source, fp32_top1, full)
    layers = quantizer.quantizable_layers(prepared.model)
    if sensitivity or max_drop is not None:
        for layer, trial in zip(layers, ev.each_layer(layers, f"sensitivity ({toolchain})"), strict=True):
            result.ranking.append({"layer": layer, "top1_gain_pp": 100 * (trial.top1 - full.top1),
                                   "sqnr_gain_db": trial.sqnr_db - full.sqnr_db, "top1": trial.top1})
        result.ranking.sort(key=lambda r: (-r["sqnr_gain_db"], -r["top1_gain_pp"]))
    if max_drop is not None:
        kept: list[str] = []
        history = [{"float_layers": 0, "top1": full.top1, "drop_pp": 100 * (fp32_top1 - full.top1)}]
        best = full
        for entry in result.ranking[:budget]:
            if 100 * (fp32_top1 - best.top1) <= max_drop:
                break
            kept.append(entry["layer"])
            best, _ = ev.trial(kept)
            history.append({"float_layers": len(kept), "layer": entry["layer"], "top1": best.top1,
                            "drop_pp": 100 * (fp32_top1 - best.top1)})
        reached = 100 * (fp32_top1 - best.top1) <= max_drop
        result.fallback = {"target_drop_pp": max_drop, "reached": reached, "kept_float": kept,
                           "history": history, "budget": budget}
        if kept:
            _, result.artifact = ev.trial(kept, keep=True)
    ev.scratch.cleanup()
    return result
