"""ModelOpt's CPU calibration session, with ONNX Runtime's graph optimisations on for max calibration.

ModelOpt 0.47 installs its own ``CalibraterBase.create_inference_session``
(``modelopt/onnx/quantization/ort_patching.py``, ``_create_inference_session_with_ep_config``): every graph
optimisation off (``ORT_DISABLE_ALL``) and the CPU memory arena off, whatever the execution provider. On a CPU
that session runs the augmented FP32 graph (each calibrated tensor feeding a ReduceMin and a ReduceMax) with
ONNX Runtime's unfused reference layouts. The suite's own ORT toolchain calibrates MinMax in a fully optimised
session (quantization/ORT/ort_calibration.py): the calibrated tensors survive the fusions, because each feeds
its Reduce nodes, and the ranges move by float rounding only. This module gives ModelOpt's max calibration the
same session, where it runs on the CPU execution provider alone; entropy (histograms) and any GPU or
TensorRT provider keep ModelOpt's own. ModelOpt's session is still built first (it also sets the calibrator's
Q/DQ grouping); it is replaced only when it would run on the CPU.

ORT's calibrator gathers the range of every input and output of the nodes ModelOpt quantizes, but ModelOpt's
Q/DQ placement reads those of their inputs (and of its Q/DQ groups) only: on ResNet-50, 56 of the 170 tensors
calibrated. Each other one costs a ReduceMin/ReduceMax pass and, leaving the graph, keeps ONNX Runtime from fusing
the Conv that makes it with its Relu or Add. The session drops them (:func:`ranges_modelopt_reads`); the ranges
of the rest are the same numbers, so the artifact is the same file (tests/test_ort_calibration.py). Should
ModelOpt ask for a range that was dropped (a Q/DQ on a node output), ORT's quantizer stops with "Quantization
parameters are not specified"; after any failure with ranges dropped the caller calibrates again with every
range (:class:`RangeDropped`).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _cpu_only(session: Any) -> bool:
    return session.get_providers() == ["CPUExecutionProvider"]


#: the sessions of the max calibrations that sum each Conv/Gemm input (inside ``installed(input_sums=True)``)
SUMMING: list[Any] = []
_ASK = {"input_sums": False, "read_ranges_only": False}
#: the tensors whose ranges the sessions inside ``installed(read_ranges_only=True)`` did not gather
DROPPED: set[str] = set()


class RangeDropped(RuntimeError):
    """ModelOpt asked for the range of a tensor the calibration session dropped: calibrate again, every range."""


def ranges_modelopt_reads(model: Any, calibrator: Any) -> set[str] | None:
    """The calibrated tensors whose ranges ModelOpt's Q/DQ placement reads: the inputs of the nodes it quantizes
    (ModelOpt 0.47 hands ORT's calibrator their names as ``op_types_to_calibrate``: ``ort_patching.py``,
    ``_select_tensors_to_calibrate``) and every tensor of a Q/DQ group, whose ranges it merges. A Relu or Clip
    (ORT's ``QDQRemovableActivation``) quantizes its input only when another node already asked for it, so its
    inputs count through that node. None (read them all) where that list names no node of ``model``: a
    calibrator selecting by op type, as ORT's own does."""
    from onnxruntime.quantization.operators.activation import QDQRemovableActivation
    from onnxruntime.quantization.registry import QDQRegistry

    selected = set(calibrator.op_types_to_calibrate or ())
    nodes = [node for node in model.graph.node if node.name in selected]
    if not nodes:
        return None
    follows = {op for op, quantizer in QDQRegistry.items()
               if isinstance(quantizer, type) and issubclass(quantizer, QDQRemovableActivation)}
    read = {name for node in nodes if node.op_type not in follows for name in node.input}
    for tensor, group in (getattr(calibrator, "group_qdq_tensors", None) or {}).items():
        read |= {tensor, *group}
    return read


def optimised_for_cpu_max(create: Any) -> Any:
    """Wrap ModelOpt's session factory ``create(calibrator, **kwargs)``: for a MinMax calibrator whose session
    runs on the CPU alone, swap in a session of the same model with ``ORT_ENABLE_ALL``; with input sums asked
    for, one that also sums each Conv/Gemm input for the fast bias correction (kept in :data:`SUMMING`)."""
    import onnx
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from quantization.ORT.calibration_reductions import calibrated_tensors, drop_reductions
    from quantization.ORT.ort_calibration import minmax_session, summing_session

    def create_session(calibrator: Any, **kwargs: Any) -> None:
        create(calibrator, **kwargs)
        if not (isinstance(calibrator, MinMaxCalibrater) and _cpu_only(calibrator.infer_session)):
            return
        path = kwargs.get("model_path") or calibrator.augmented_model_path
        model = onnx.load(path)
        read = ranges_modelopt_reads(model, calibrator) if _ASK["read_ranges_only"] else None
        if read is not None:
            calibrated = calibrated_tensors(model)
            dropped = drop_reductions(model, calibrated - read)
            DROPPED.update(dropped)
            log.info("ModelOpt max calibration: %d of %d calibrated tensors kept (the ranges its Q/DQ reads)",
                     len(calibrated) - len(dropped), len(calibrated))
        if _ASK["input_sums"]:
            calibrator.infer_session = summing_session(model, Path(path).with_suffix(".sums.onnx"))
            SUMMING.append(calibrator.infer_session)
        else:
            calibrator.infer_session = minmax_session(model, Path(path).with_suffix(".fast.onnx"))
        log.info("ModelOpt max calibration: ONNX Runtime session with full graph optimisations on the CPU")

    return create_session


@contextlib.contextmanager
def installed(input_sums: bool = False, read_ranges_only: bool = False) -> Iterator[list[Any]]:
    """Within the block, ModelOpt's ``quantize()`` installs the wrapped factory (it reads the module attribute
    each time it patches ONNX Runtime's calibrators, so replacing the attribute is enough); yields
    :data:`SUMMING`. With ``read_ranges_only`` the session gathers only the ranges ModelOpt reads, and a request
    for a dropped one leaves the block as :class:`RangeDropped`. Afterwards ModelOpt's factory, the requests and
    the lists are as before the block: ModelOpt runs in the caller's process now, where a later direct call must
    get ModelOpt's own session."""
    from modelopt.onnx.quantization import ort_patching

    original = ort_patching._create_inference_session_with_ep_config
    SUMMING.clear()
    DROPPED.clear()
    _ASK.update(input_sums=input_sums, read_ranges_only=read_ranges_only)
    ort_patching._create_inference_session_with_ep_config = optimised_for_cpu_max(original)
    try:
        yield SUMMING
    except Exception as error:
        if DROPPED:  # whatever ModelOpt tripped on, the retry with every range is its own unchanged path
            log.warning("ModelOpt failed after %d unread ranges were dropped (%s): calibrating again with every "
                        "range", len(DROPPED), str(error).splitlines()[0] if str(error) else type(error).__name__)
            raise RangeDropped(str(error)) from error
        raise
    finally:
        ort_patching._create_inference_session_with_ep_config = original
        _ASK.update(input_sums=False, read_ranges_only=False)
        SUMMING.clear()
        DROPPED.clear()
