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
calibrated. Each other one costs a ReduceMin/ReduceMax pass and keeps ONNX Runtime from fusing
the Conv that makes it with its Relu or Add (the Reduce nodes are its other consumers). The session drops them
(:func:`ranges_modelopt_reads`); the ranges it keeps are the same within float rounding (a fused kernel may
round its last bit otherwise), and so is the artifact (tests/test_modelopt_in_process.py). This rests on
ModelOpt 0.47's settings: symmetric activations (its Relu/Clip range adjustment is off) and no Q/DQ on node
outputs. Should ModelOpt ask for a dropped range, ORT's quantizer stops with "Quantization parameters are not
specified" (a ValueError; a Q/DQ group with a missing member, a KeyError), and the caller calibrates again
with every range (:class:`RangeDropped`).
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
    """ModelOpt failed as it does on a missing range (ValueError, KeyError) after the session dropped some:
    calibrate again, every range."""


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


def _drop_unread_ranges(model: Any, calibrator: Any) -> None:
    """Drop from the calibration graph ``model`` the reductions of the ranges ModelOpt does not read (recorded in
    :data:`DROPPED`). Only a speed-up: where working that out fails, every range stays."""
    from quantization.ORT.calibration_reductions import calibrated_tensors, drop_reductions

    try:
        read = ranges_modelopt_reads(model, calibrator)
        if read is None:
            return
        calibrated = calibrated_tensors(model)
        dropped = drop_reductions(model, calibrated - read)
    except Exception as error:  # noqa: BLE001 - drop_reductions edits the graph only once it knows what to drop
        log.warning("ModelOpt max calibration: every range kept (%s: %s)", type(error).__name__, error)
        return
    DROPPED.update(dropped)
    log.info("ModelOpt max calibration: %d of %d calibrated tensors kept (the ranges its Q/DQ reads)",
             len(calibrated) - len(dropped), len(calibrated))


def optimised_for_cpu_max(create: Any) -> Any:
    """Wrap ModelOpt's session factory ``create(calibrator, **kwargs)``: for a MinMax calibrator whose session
    runs on the CPU alone, swap in a session of the same model with ``ORT_ENABLE_ALL``; with input sums asked
    for, one that also sums each Conv/Gemm input for the fast bias correction (kept in :data:`SUMMING`)."""
    import onnx
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from quantization.ORT.ort_calibration import minmax_session, summing_session

    def create_session(calibrator: Any, **kwargs: Any) -> None:
        create(calibrator, **kwargs)
        if not (isinstance(calibrator, MinMaxCalibrater) and _cpu_only(calibrator.infer_session)):
            return
        path = kwargs.get("model_path") or calibrator.augmented_model_path
        model = onnx.load(path)
        if _ASK["read_ranges_only"]:
            _drop_unread_ranges(model, calibrator)
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
    :data:`SUMMING`. With ``read_ranges_only`` the session gathers only the ranges ModelOpt reads, and a
    ValueError or KeyError after some were dropped leaves the block as :class:`RangeDropped`. Afterwards
    ModelOpt's factory, the requests, the list and the set are as before the block: ModelOpt runs in the
    caller's process now, where a later direct call must get ModelOpt's own session."""
    from modelopt.onnx.quantization import ort_patching

    original = ort_patching._create_inference_session_with_ep_config
    SUMMING.clear()
    DROPPED.clear()
    _ASK.update(input_sums=input_sums, read_ranges_only=read_ranges_only)
    ort_patching._create_inference_session_with_ep_config = optimised_for_cpu_max(original)
    try:
        yield SUMMING
    except (ValueError, KeyError) as error:  # how ORT's quantizer and ModelOpt's grouping meet a missing range
        if DROPPED:
            log.warning("ModelOpt failed after %d unread ranges were dropped (%s): calibrating again with every "
                        "range", len(DROPPED), str(error).splitlines()[0] if str(error) else type(error).__name__)
            raise RangeDropped(str(error)) from error
        raise
    finally:
        ort_patching._create_inference_session_with_ep_config = original
        _ASK.update(input_sums=False, read_ranges_only=False)
        SUMMING.clear()
        DROPPED.clear()
