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
_ASK = {"input_sums": False}


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
        if _ASK["input_sums"]:
            calibrator.infer_session = summing_session(path, Path(path).with_suffix(".sums.onnx"))
            SUMMING.append(calibrator.infer_session)
        else:
            calibrator.infer_session = minmax_session(onnx.load(path), Path(path).with_suffix(".fast.onnx"))
        log.info("ModelOpt max calibration: ONNX Runtime session with full graph optimisations on the CPU")

    return create_session


@contextlib.contextmanager
def installed(input_sums: bool = False) -> Iterator[list[Any]]:
    """Within the block, ModelOpt's ``quantize()`` installs the wrapped factory (it reads the module attribute
    each time it patches ONNX Runtime's calibrators, so replacing the attribute is enough); yields
    :data:`SUMMING`. Afterwards ModelOpt's factory, the request and the list are as before the block: ModelOpt
    runs in the caller's process now, where a later direct call must get ModelOpt's own session."""
    from modelopt.onnx.quantization import ort_patching

    original = ort_patching._create_inference_session_with_ep_config
    SUMMING.clear()
    _ASK["input_sums"] = input_sums
    ort_patching._create_inference_session_with_ep_config = optimised_for_cpu_max(original)
    try:
        yield SUMMING
    finally:
        ort_patching._create_inference_session_with_ep_config = original
        _ASK["input_sums"] = False
        SUMMING.clear()
