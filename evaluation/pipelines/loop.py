"""The one evaluation loop: every (artifact, runtime) pair on the same data, metric and harness.

For each runtime, the loop loads every artifact that runtime can run, feeds them the same evaluation
batches (decoded once), then times them interleaved at each batch size. INT8 results are compared
with the FP32 artifact on the same runtime only, so a comparison is fair by construction.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from evaluation.pipelines.base import RUNTIMES, Runner, runner_class
from quantization.run_config import RunConfig
from utils.artifacts import Artifact
from utils.benchmark import PeakRSS, interleaved_latency
from utils.data import DataSplits, dataset_digests, evaluation_loader, sample_batch
from utils.errors import SuiteError
from utils.metrics import agreement, classification_metrics

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
B = TypeVar("B")


def open_runner(artifact: Artifact, runtime: str, threads: int | None = None) -> Runner:
    """The one way a runner is made: refused in one line where the runtime cannot run the artifact here."""
    cls = runner_class(runtime)
    if not cls.supports(artifact):
        raise SuiteError(f"runtime {runtime} does not run {artifact.kind} artifacts (it runs {', '.join(cls.kinds)})")
    reason = cls.unavailable_reason()
    if reason:
        raise SuiteError(f"runtime {runtime} cannot run here: {reason}")
    return cls(artifact, threads)


def open_runners(pairs: Mapping[K, tuple[Artifact, str]], threads: int | None = None) -> dict[K, Runner]:
    """A runner per named (artifact, runtime) pair."""
    return {key: open_runner(artifact, runtime, threads) for key, (artifact, runtime) in pairs.items()}


def collect_logits(calls: Mapping[K, Callable[[B], np.ndarray]], batches: Iterable[B], *,
                   desc: str | None = None) -> dict[K, np.ndarray]:
    """Every call on every batch, batch by batch, outputs concatenated in batch order.

    One loop for every accuracy pass (the report's, the tuning trials', the benches', MiniLM's embeddings):
    the calls see each batch in turn, so the data is decoded once for all of them. A call is anything that
    maps a batch to an array: ``runner.predict`` for images, an encoder for token batches. No ``desc``: no
    progress bar (tuning runs many short passes)."""
    outputs: dict[K, list[np.ndarray]] = {key: [] for key in calls}
    for batch in tqdm(batches, desc=desc, unit="batch", disable=desc is None):
        for key, call in calls.items():
            outputs[key].append(call(batch))
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


class ImageBatches:
    """A loader's images as float32 NCHW arrays, batch by batch; the labels of the last pass are kept."""

    def __init__(self, loader: Iterable[Any]):
        self.loader = loader
        self._labels: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[np.ndarray]:
        self._labels = []
        for images, target in self.loader:
            self._labels.append(target.numpy())
            yield images.numpy().astype(np.float32, copy=False)

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate(self._labels)


def evaluation_batches(splits: DataSplits, batch_size: int) -> ImageBatches:
    """The evaluation split as the accuracy passes feed it (labels kept for the metrics)."""
    return ImageBatches(evaluation_loader(splits, batch_size))


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


def check_disjoint(artifact: Artifact, splits: DataSplits, allow_overlap: bool = False) -> None:
    """Refuse to evaluate an artifact on images it was calibrated on (unless the user forces it): by id,
    and by content digest where its manifest has them (a renamed copy has another id, the same bytes)."""
    calibrated = set(artifact.manifest.get("calibration_sample_ids") or [])
    overlap = calibrated & set(splits.evaluation_ids)
    digests = set((artifact.manifest.get("calibration") or {}).get("digests") or [])
    if digests and not overlap:
        overlap = {i for i, d in zip(splits.evaluation_ids, dataset_digests(splits.evaluation), strict=True)
                   if d in digests}
    if overlap:
        message = f"{artifact.path.name} was calibrated on {len(overlap)} of the evaluation images (e.g. {sorted(overlap)[0]})"
        if not allow_overlap:
            raise SuiteError(f"{message}: never calibrate on what you evaluate (--allow-overlap to force)")
        log.warning("%s: accuracy figures will be optimistic (--allow-overlap)", message)


def plan_pairs(artifacts: list[Artifact], runtimes: list[str] | None) -> tuple[dict[str, list[Artifact]], list[Skipped]]:
    """Group artifacts by the runtimes that can run them here; list what cannot run and why."""
    classes = {name: runner_class(name) for name in runtimes or RUNTIMES}  # an unknown name: one line, first
    groups: dict[str, list[Artifact]] = {}
    skipped: list[Skipped] = []
    for name, cls in classes.items():
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
    runners, memory = [], {}
    for artifact in artifacts:
        with PeakRSS() as peak:
            runner = open_runner(artifact, runtime, threads)
            runner.predict(np.zeros((1, *artifact.manifest.get("input_shape", [3, 32, 32])), np.float32))
        runners.append(runner)
        memory[str(artifact.path)] = peak.increase_bytes
    return runners, memory


#: an accuracy pass: (runtime, its runners, splits, batch size) -> logits per artifact path, labels in id order
AccuracyPass = Callable[[str, list[Runner], DataSplits, int], tuple[dict[str, np.ndarray], np.ndarray]]


def local_accuracy(runtime: str, runners: list[Runner], splits: DataSplits,
                   batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The accuracy pass in this process: every runner on each evaluation batch (decoded once for all)."""
    batches = evaluation_batches(splits, batch_size)
    logits = collect_logits({str(r.artifact.path): r.predict for r in runners}, batches,
                            desc=f"accuracy on {runtime}")
    return logits, batches.labels


def evaluate_runtime(runtime: str, artifacts: list[Artifact], splits: DataSplits, cfg: RunConfig,
                     accuracy: AccuracyPass = local_accuracy) -> list[PairResult]:
    """Accuracy (one pass over the evaluation set, here or sharded over a cluster: ``accuracy``) and
    interleaved latency for one runtime, always in this process."""
    runners, memory = _load_runners(runtime, artifacts, cfg.benchmark.threads)
    key = lambda r: str(r.artifact.path)  # noqa: E731 - paths are unique, display names need not be
    logits, y = accuracy(runtime, runners, splits, cfg.data.batch_size)
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
        out = logits[key(runner)]
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


def evaluate_artifacts(artifacts: list[Artifact], splits: DataSplits, cfg: RunConfig,
                       accuracy: AccuracyPass = local_accuracy) -> tuple[list[PairResult], list[Skipped]]:
    """Every artifact on every requested runtime that can run it here, compared with FP32."""
    groups, skipped = plan_pairs(artifacts, cfg.runtimes)
    if not groups:
        raise SuiteError("no runtime on this machine can run the given artifacts")
    results: list[PairResult] = []
    for runtime, group in groups.items():
        log.info("evaluating %d artifacts on %s", len(group), runtime)
        results.extend(evaluate_runtime(runtime, group, splits, cfg, accuracy))
    compare_with_fp32(results)
    compare_with_reference(results)
    return results, skipped
