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

from evaluation.pipelines.base import RUNTIMES, Runner, pair_label, runner_class
from quantization.run_config import RunConfig
from utils.artifacts import Artifact
from utils.benchmark import PeakRSS, interleaved_latency
from utils.console import progress_disabled
from utils.data import DataSplits, dataset_digests, evaluation_loader, sample_batch
from utils.errors import SuiteError
from utils.metrics import agreement, classification_metrics

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
B = TypeVar("B")


def open_runner(artifact: Artifact, runtime: str, threads: int | None = None, precision: str | None = None) -> Runner:
    """The one way a runner is made: refused in one line where the runtime cannot run the artifact here.
    ``precision``: the artifact's own (FP32 artifacts: true FP32) unless another is asked for (bf16)."""
    cls = runner_class(runtime)
    if not cls.supports(artifact):
        raise SuiteError(f"runtime {runtime} does not run {artifact.kind} artifacts (it runs {', '.join(cls.kinds)})")
    reason = cls.unavailable_reason()
    if reason:
        raise SuiteError(f"runtime {runtime} cannot run here: {reason}")
    return cls(artifact, threads, precision)


def open_runners(pairs: Mapping[K, tuple[Artifact, str] | tuple[Artifact, str, str]],
                 threads: int | None = None) -> dict[K, Runner]:
    """A runner per named (artifact, runtime) or (artifact, runtime, precision) row."""
    return {key: open_runner(pair[0], pair[1], threads, *pair[2:]) for key, pair in pairs.items()}


def collect_logits(calls: Mapping[K, Callable[[B], np.ndarray]], batches: Iterable[B], *,
                   desc: str | None = None) -> dict[K, np.ndarray]:
    """Every call on every batch, batch by batch, outputs concatenated in batch order.

    One loop for every accuracy pass (the report's, the tuning trials', the benches', MiniLM's embeddings):
    the calls see each batch in turn, so the data is decoded once for all of them. A call is anything that
    maps a batch to an array: ``runner.predict`` for images, an encoder for token batches. No ``desc``: no
    progress bar (tuning runs many short passes)."""
    outputs: dict[K, list[np.ndarray]] = {key: [] for key in calls}
    for batch in tqdm(batches, desc=desc, unit="batch", disable=desc is None or progress_disabled()):
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
    precision: str = ""  # the row's compute precision (fp32 = true FP32, bf16, fp16, int8); "" = the artifact's
    ran_in: str = ""  # what the runtime reports it computed in (OpenVINO's compiled hint, torch's matmul precision)
    correct: np.ndarray | None = None  # per evaluation image: top-1 right (paired intervals of every drop)
    kernel_note: str | None = None  # how the runtime executes an INT8 artifact, where that explains its speed

    def __post_init__(self) -> None:
        self.precision = self.precision or self.artifact.precision
        self.ran_in = self.ran_in or self.precision

    @property
    def key(self) -> str:
        return pair_label(self.artifact, self.runtime, self.precision)


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


def default_precisions() -> list[str]:
    """Every precision this CPU runs natively: true FP32 and INT8 everywhere, BF16 where it has AMX/AVX512-BF16."""
    from utils.hardware import native_bf16_reason

    return ["fp32", "bf16", "int8"] if native_bf16_reason() is None else ["fp32", "int8"]


#: a row to measure: an artifact in one compute precision
Row = tuple[Artifact, str]


def plan_pairs(artifacts: list[Artifact], runtimes: list[str] | None,
               precisions: list[str] | None = None) -> tuple[dict[str, list[Row]], list[Skipped]]:
    """Group (artifact, precision) rows by the runtimes that can run them here; list what cannot run and why.

    ``precisions`` (--eval-precisions; None: :func:`default_precisions`) picks the rows: every FP32 artifact in true
    FP32 always (the baseline of every drop), in BF16 on each runtime with a native BF16 path, INT8 artifacts if
    asked for; other artifact precisions (TensorRT's FP16 engines) as built."""
    from utils.hardware import native_bf16_reason

    wanted = set(precisions or default_precisions()) | {"fp32"}
    classes = {name: runner_class(name) for name in runtimes or RUNTIMES}  # an unknown name: one line, first
    groups: dict[str, list[Row]] = {}
    skipped: list[Skipped] = []
    bf16_here = native_bf16_reason()
    if bf16_here and (precisions is None or "bf16" in wanted):  # the default asks for every native precision
        skipped.append(Skipped("bf16 rows", bf16_here))
    if "int8" not in wanted and any(a.precision == "int8" for a in artifacts):
        skipped.append(Skipped("int8 rows", "not among --eval-precisions"))
    for name, cls in classes.items():
        fits = [a for a in artifacts if cls.supports(a) and (a.precision != "int8" or "int8" in wanted)]
        if not fits:
            continue
        reason = cls.unavailable_reason()
        if reason:
            skipped.append(Skipped(f"runtime {name} ({len(fits)} artifacts)", reason))
            continue
        if "bf16" in wanted and not bf16_here and cls.no_bf16 and not cls.reference \
                and any(a.precision == "fp32" for a in fits):
            skipped.append(Skipped(f"bf16 on {name}", cls.no_bf16))
        groups[name] = [(a, p) for a in fits for p in cls.precisions_for(a) if p in wanted or p == a.precision]
    for artifact in artifacts:
        if artifact.precision == "int8" and "int8" not in wanted:
            continue
        if not any(artifact is row[0] for group in groups.values() for row in group):
            skipped.append(Skipped(f"artifact {artifact.name}", "no runtime here can run it"))
    return groups, skipped


def _load_runners(runtime: str, rows: list[Row], threads: int | None) -> tuple[list[Runner], dict[str, int]]:
    runners, memory = [], {}
    for artifact, precision in rows:
        with PeakRSS() as peak:
            runner = open_runner(artifact, runtime, threads, precision)
            runner.predict(np.zeros((1, *artifact.manifest.get("input_shape", [3, 32, 32])), np.float32))
        runners.append(runner)
        memory[runner.key] = peak.increase_bytes
    return runners, memory


#: an accuracy pass: (runtime, its runners, splits, batch size) -> logits per artifact path, labels in id order
AccuracyPass = Callable[[str, list[Runner], DataSplits, int], tuple[dict[str, np.ndarray], np.ndarray]]


def local_accuracy(runtime: str, runners: list[Runner], splits: DataSplits,
                   batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The accuracy pass in this process: every runner on each evaluation batch (decoded once for all)."""
    batches = evaluation_batches(splits, batch_size)
    logits = collect_logits({r.key: r.predict for r in runners}, batches, desc=f"accuracy on {runtime}")
    return logits, batches.labels


def evaluate_runtime(runtime: str, rows: list[Row], splits: DataSplits, cfg: RunConfig,
                     accuracy: AccuracyPass = local_accuracy) -> list[PairResult]:
    """Accuracy (one pass over the evaluation set, here or sharded over a cluster: ``accuracy``) and
    interleaved latency for one runtime, always in this process."""
    runners, memory = _load_runners(runtime, rows, cfg.benchmark.threads)
    key = lambda r: r.key  # noqa: E731 - paths (+ precision) are unique, display names need not be
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
            predictions=out.argmax(axis=1), reference=runner.reference,
            precision=runner.precision, ran_in=runner.ran_in, correct=out.argmax(axis=1) == y,
            kernel_note=runner.kernel_note))
    return results


def compare_with_fp32(results: list[PairResult]) -> None:
    """Fill each result's comparison with the true-FP32 row of the FP32 artifact on the same runtime."""
    from utils.stats import paired_drop_interval

    for result in results:
        baseline = next((r for r in results if r.runtime == result.runtime and r.artifact.precision == "fp32"
                         and r.precision == "fp32"), None)
        if baseline is None or baseline is result:
            continue
        comparison: dict[str, Any] = {
            "baseline": baseline.key,
            "top1_drop_pp": 100.0 * (baseline.metrics["top1"] - result.metrics["top1"]),
            "top1_drop_ci95_pp": (paired_drop_interval(baseline.correct, result.correct)
                                  if baseline.correct is not None and result.correct is not None else None),
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
    groups, skipped = plan_pairs(artifacts, cfg.runtimes, cfg.benchmark.eval_precisions)
    if not groups:
        raise SuiteError("no runtime on this machine can run the given artifacts")
    results: list[PairResult] = []
    for runtime, group in groups.items():
        log.info("evaluating %d rows on %s", len(group), runtime)
        results.extend(evaluate_runtime(runtime, group, splits, cfg, accuracy))
    compare_with_fp32(results)
    compare_with_reference(results)
    return results, skipped
