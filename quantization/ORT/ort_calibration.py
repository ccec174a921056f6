"""ONNX Runtime static quantization in its two halves: calibrate (activation ranges), then write Q/DQ.

``quantize_static`` does both in one call. Split, with ORT's own pieces for each half
(``create_calibrator``, ``collect_data``, ``compute_data``, then ``QDQQuantizer`` over the model
``quantize_static`` would load), three costs go away:

- Its calibration session runs with every graph optimisation off (``ORT_DISABLE_ALL``). For MinMax
  it runs here with ORT's full optimisations (fusions, blocked layouts): EfficientNet-Lite0, batch 4,
  AMD EPYC AVX2, 47 -> 34 ms per image (80 images: 3.8 -> 2.8 s). The ranges move by float rounding
  only (measured: at most 3e-5 on ranges of order 10; tests/test_ort_calibration.py bounds it). Its
  reductions run over the spatial axes and finish in numpy (calibration_reductions.py: the same values).
  Entropy and Percentile keep ORT's own session: their time is numpy's histograms of every output
  (60 images: 16.2 s either way) and the optimised layouts only cost memory (+340 MiB).
- Every variant of a run (a sweep over granularities and activation types, each step of a
  ``--max-drop`` search, which only changes the nodes left float) calibrated the same FP32 graph on
  the same images again. Activation ranges depend on neither, so they are computed once per
  process (:func:`calibrated_ranges`, keyed by the model's and the images' bytes and the method).
- Calibration goes batch by batch: each ``collect_data`` call builds or merges the histograms of
  Entropy and Percentile and drops the outputs, so memory holds one batch of outputs (left alone,
  those calibrators kept every intermediate output of every image: 300 EfficientNet-Lite0 images
  went past 24 GB). MinMax merges its per-batch ranges exactly.

tests/test_ort_calibration.py checks that, given ORT's own ranges, :func:`write_qdq` writes the file
``quantize_static`` writes.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.console import progress_disabled

log = logging.getLogger(__name__)

_RANGES: dict[tuple, Any] = {}  # calibration key -> TensorsData, for the life of the process


class _OneBatch:
    """ORT's CalibrationDataReader protocol over a single batch."""

    def __init__(self, batch: dict[str, np.ndarray]):
        self._batch: dict[str, np.ndarray] | None = batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch, self._batch = self._batch, None
        return batch


def feed_batches(feed: dict[str, np.ndarray], step: int) -> Iterator[dict[str, np.ndarray]]:
    """The named calibration arrays in consecutive batches of ``step`` images (the caller picks a divisor)."""
    n = len(next(iter(feed.values())))
    for start in range(0, n, step):
        yield {name: array[start:start + step] for name, array in feed.items()}


def _digest(path: Path, feed: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(path.read_bytes())
    for name in sorted(feed):
        h.update(name.encode())
        h.update(str(feed[name].shape).encode())
        h.update(np.ascontiguousarray(feed[name]).data)
    return h.hexdigest()


def default_op_types() -> list[str]:
    """What ``quantize_static`` quantizes (and calibrates the tensors of) when given no op types."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


@dataclass
class Calibration:
    """What a calibration pass gathered: ORT's ``TensorsData`` ranges, and with ``input_sums`` the fast bias
    correction's statistics (quantization/transforms/onnx_bias_correction.py): node -> summed input, samples."""

    ranges: Any
    input_sums: dict[str, np.ndarray] | None = None
    samples: int = 0


def calibrated_ranges(model_path: Path, feed: dict[str, np.ndarray], step: int, method: str,
                      op_types: list[str], input_sums: bool = False) -> Calibration:
    """ORT's ranges for ``model_path`` on ``feed``, ``step`` images a call, with ORT's calibrator for ``method``
    (MinMax | Entropy | Percentile), and with ``input_sums`` (MinMax only) each Conv/Gemm input summed over the
    images in the same pass; computed once per process for the same model bytes, images, step, method, op types
    and sums (a copy each time: the quantizer edits ranges)."""
    if input_sums and method != "MinMax":
        raise ValueError(f"input sums are gathered in the MinMax session only, not {method}'s")
    key = (_digest(model_path, feed), step, method, tuple(op_types), input_sums)
    if key not in _RANGES:
        _RANGES[key] = _calibrate(model_path, feed, step, method, op_types, input_sums)
    else:
        log.info("ORT %s ranges of %s reused (same model and calibration images)", method, model_path.name)
    return copy.deepcopy(_RANGES[key])


def minmax_session(model: Any, scratch: Path) -> Any:
    """ONNX Runtime's fully optimised CPU session for a MinMax calibration graph (an onnx ModelProto, changed in
    place): the calibrated tensors survive the fusions (each feeds its ReduceMin/ReduceMax), the ranges move by
    float rounding only (module docstring), and the reductions run over the spatial axes in the graph and finish
    in numpy (calibration_reductions.py). The graph goes to the session in memory, or through the file
    ``scratch`` where it is too large for one protobuf. ModelOpt's max calibration on the CPU runs in it too
    (quantization/ModelOpt/calibration_session.py)."""
    import onnx
    import onnxruntime as ort

    from quantization.ORT.calibration_reductions import PartialReductions, reduce_spatial_axes_only

    finish = reduce_spatial_axes_only(model)
    log.info("calibration session: %d of its reductions run over the spatial axes", len(finish))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if model.ByteSize() < 1_800_000_000:
        source: str | bytes = model.SerializeToString()
    else:
        onnx.save_model(copy.deepcopy(model), str(scratch), save_as_external_data=True)  # ``model`` keeps its weights
        source = str(scratch)
    return PartialReductions(ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]), finish)


def _calibrate(model_path: Path, feed: dict[str, np.ndarray], step: int, method: str, op_types: list[str],
               input_sums: bool) -> Calibration:
    import onnx
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="ort.calibrate.") as tmp:
        calibrator = create_calibrator(model_path, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=getattr(CalibrationMethod, method))
        summing = None
        if input_sums:
            summing = summing_session(onnx.load(calibrator.augmented_model_path), Path(tmp) / "augmented_sums.onnx")
            calibrator.infer_session = summing
        elif method == "MinMax":  # the one calibrator whose time is the session's (see the module docstring)
            calibrator.infer_session = minmax_session(onnx.load(calibrator.augmented_model_path),
                                                      Path(tmp) / "augmented_fast.onnx")
        n = len(next(iter(feed.values())))
        for batch in tqdm(feed_batches(feed, step), desc=f"calibrating (ORT {method})", unit="batch",
                          total=n // step, disable=progress_disabled()):
            calibrator.collect_data(_OneBatch(batch))
        ranges = calibrator.compute_data()
        if summing is None:
            return Calibration(ranges)
        return Calibration(ranges, summing.sums, summing.count)


def summing_session(model: Any, out: Path) -> Any:
    """:func:`minmax_session` over the MinMax calibration graph ``model`` (a ModelProto, changed in place) with
    each Conv/Gemm input summed over the batch, as a
    :class:`~quantization.transforms.onnx_bias_correction.SummingSession` (the calibrator sees its own outputs
    only); ``out`` is :func:`minmax_session`'s scratch file."""
    from quantization.transforms.onnx_bias_correction import SummingSession, add_input_sums, correctable_nodes

    outputs = add_input_sums(model, correctable_nodes(model))
    return SummingSession(minmax_session(model, out), outputs, model)


def load_for_quantization(prepped: Path, weight_type: Any, scratch: Path) -> tuple[Any, Path]:
    """The model as ``quantize_static`` takes it (shape-inferred, its opset raised where the weight type
    needs it) and the file to calibrate: ``prepped`` itself, or the raised model saved in ``scratch``."""
    import onnx
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer, update_opset_version

    loaded = load_model_with_shape_infer(prepped)
    model = update_opset_version(loaded, weight_type)
    if model is loaded:
        return model, prepped
    raised = scratch / f"{prepped.stem}.opset{model.opset_import[0].version}.onnx"
    onnx.save_model(copy.deepcopy(model), str(raised), save_as_external_data=True)
    return model, raised


def write_qdq(model: Any, ranges: Any, out: Path, *, per_channel: bool, reduce_range: bool, activation_type: Any,
              weight_type: Any, nodes_to_exclude: list[str], op_types: list[str]) -> None:
    """``quantize_static``'s QDQ half: ORT's ``QDQQuantizer`` over ``model`` with ``ranges``, saved to ``out``."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quantize import check_static_quant_arguments

    check_static_quant_arguments(QuantFormat.QDQ, activation_type, weight_type)
    quantizer = QDQQuantizer(model, per_channel, reduce_range, weight_type, activation_type, ranges, [],
                             nodes_to_exclude, op_types, {})
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(out), False)
