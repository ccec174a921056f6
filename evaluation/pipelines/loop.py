"""The one evaluation loop: every (artifact, runtime) pair on the same data, metric and harness.

For each runtime, the loop loads every artifact that runtime can run, feeds them the same evaluation
batches (decoded once), then times them interleaved at each batch size. INT8 results are compared
with the FP32 artifact on the same runtime only, so a comparison is fair by construction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.pipelines.base import RUNTIMES, Runner, runner_class
from utils.artifacts import Artifact
from utils.benchmark import PeakRSS, interleaved_latency
from utils.config import RunConfig
from utils.data import DataSplits, evaluation_loader, sample_batch
from utils.errors import SuiteError
from utils.metrics import agreement, classification_metrics

log = logging.getLogger(__name__)


@dataclass
class PairResult:
    """Everything measured for one (artifact, runtime) pair."""

    artifact: Artifact
    runtime: str
    device: str
    metrics: dict[str, Any]
    latency: dict[int, dict[str, Any]]
    peak_rss_bytes: int
    predictions: np.ndarray
    comparison: dict[str, Any] = field(default_factory=dict)
    reference: bool = False  # measured on a reference runtime (exact quantized math, not an INT8 speed)

    @property
    def key(self) -> str:
        return f"{self.artifact.name} @ {self.runtime}"


@dataclass
class Skipped:
    what: str
    reason: str


def plan_pairs(artifacts: list[Artifact], runtimes: list[str] | None) -> tuple[dict[str, list[Artifact]], list[Skipped]]:
    """Group artifacts by the runtimes that can run them here; list what cannot run and why."""
    requested = runtimes or list(RUNTIMES)
    for name in requested:
        if name not in RUNTIMES:
            raise SuiteError(f"unknown runtime '{name}' (known: {', '.join(RUNTIMES)})")
    groups: dict[str, list[Artifact]] = {}
    skipped: list[Skipped] = []
    for name in requested:
        cls = runner_class(name)
        fits = [a for a in artifacts if cls.supports(a)]
        if not fits:
            continue
        reason = cls.unavailable_reason()
        if reason:
            skipped.append(Skipped(f"runtime {name} ({len(fits)} artifacts)", reason))
            continue
        groups[name] = fits
    for artifact in artifacts:
        if not any(artifact in group for group in groups.values()):
            skipped.append(Skipped(f"artifact {artifact.name}", "no runtime here can run it"))
    return groups, skipped


def _load_runners(runtime: str, artifacts: list[Artifact], threads: int | None) -> tuple[list[Runner], dict[str, int]]:
    cls = runner_class(runtime)
    runners, memory = [], {}
    for artifact in artifacts:
        with PeakRSS() as peak:
            runner = cls(artifact, threads)
            runner.predict(np.zeros((1, *artifact.manifest.get("input_shape", [3, 32, 32])), np.float32))
        runners.append(runner)
        memory[str(artifact.path)] = peak.increase_bytes
    return runners, memory


def evaluate_runtime(runtime: str, artifacts: list[Artifact], splits: DataSplits, cfg: RunConfig) -> list[PairResult]:
    """Accuracy (one pass over the evaluation set) and interleaved latency for one runtime."""
    runners, memory = _load_runners(runtime, artifacts, cfg.benchmark.threads)
    key = lambda r: str(r.artifact.path)  # noqa: E731 - paths are unique, display names need not be
    logits: dict[str, list[np.ndarray]] = {key(r): [] for r in runners}
    labels: list[np.ndarray] = []
    loader = evaluation_loader(splits, cfg.data.batch_size)
    for images, target in tqdm(loader, desc=f"accuracy on {runtime}", unit="batch"):
        batch = images.numpy().astype(np.float32, copy=False)
        labels.append(target.numpy())
        for runner in runners:
            logits[key(runner)].append(runner.predict(batch))
    y = np.concatenate(labels)
    latency: dict[str, dict[int, dict[str, Any]]] = {key(r): {} for r in runners}
    for batch_size in cfg.benchmark.batch_sizes:
        batch = sample_batch(splits, batch_size).numpy()
        calls = {key(r): r.timed_call(batch) for r in runners}
        stats = interleaved_latency(calls, batch_size, cfg.benchmark.warmup, cfg.benchmark.rounds,
                                    desc=f"latency {runtime} b{batch_size}")
        for name, stat in stats.items():
            latency[name][batch_size] = stat.summary()
    results = []
    for runner in runners:
        out = np.concatenate(logits[key(runner)])
        results.append(PairResult(
            artifact=runner.artifact, runtime=runtime, device=runner.device,
            metrics=classification_metrics(out, y, splits.num_classes),
            latency=latency[key(runner)], peak_rss_bytes=memory[key(runner)],
            predictions=out.argmax(axis=1), reference=runner.reference))
    return results


def compare_with_fp32(results: list[PairResult]) -> None:
    """Fill each result's comparison with the FP32 artifact on the same runtime."""
    for result in results:
        baseline = next((r for r in results if r.runtime == result.runtime and r.artifact.precision == "fp32"), None)
        if baseline is None or baseline is result:
            continue
        comparison: dict[str, Any] = {
            "baseline": baseline.artifact.name,
            "top1_drop_pp": 100.0 * (baseline.metrics["top1"] - result.metrics["top1"]),
            "top5_drop_pp": 100.0 * (baseline.metrics["top5"] - result.metrics["top5"]),
            "agreement": agreement(baseline.predictions, result.predictions),
            "compression_ratio": (baseline.artifact.size_bytes() / result.artifact.size_bytes()
                                  if result.artifact.size_bytes() else None),
            "speedup": {},
        }
        for batch_size, stats in result.latency.items():
            base = baseline.latency.get(batch_size)
            if base:
                comparison["speedup"][batch_size] = base["p50_ms"] / stats["p50_ms"]
        result.comparison = comparison


def compare_with_reference(results: list[PairResult]) -> None:
    """Split each INT8 drop: the same artifact on a reference runtime (exact Q/DQ math) is the quantization
    error; the CPU runtime's difference from it is the kernel error (saturation shows up here)."""
    references = {str(r.artifact.path): r for r in results
                  if runner_class(r.runtime).reference and r.artifact.precision == "int8"}
    for result in results:
        ref = references.get(str(result.artifact.path))
        if ref is None or ref is result:
            continue
        result.comparison["reference_runtime"] = ref.runtime
        result.comparison["reference_top1"] = ref.metrics["top1"]
        result.comparison["kernel_error_pp"] = 100.0 * (ref.metrics["top1"] - result.metrics["top1"])
        result.comparison["agreement_with_reference"] = agreement(ref.predictions, result.predictions)


def evaluate_artifacts(artifacts: list[Artifact], splits: DataSplits, cfg: RunConfig) -> tuple[list[PairResult], list[Skipped]]:
    """Every artifact on every requested runtime that can run it here, compared with FP32."""
    groups, skipped = plan_pairs(artifacts, cfg.runtimes)
    if not groups:
        raise SuiteError("no runtime on this machine can run the given artifacts")
    results: list[PairResult] = []
    for runtime, group in groups.items():
        log.info("evaluating %d artifacts on %s", len(group), runtime)
        results.extend(evaluate_runtime(runtime, group, splits, cfg))
    compare_with_fp32(results)
    compare_with_reference(results)
    return results, skipped
