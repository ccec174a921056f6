"""NVIDIA ModelOpt ONNX PTQ (``modelopt.onnx.quantization.quantize``), INT8, max or entropy calibration.

``quantize()`` takes ``**kwargs`` and silently ignores names it does not know, so only its real
parameters are passed (tests check that each setting reaches the artifact). Its default
``calibration_eps`` includes CUDA and TensorRT; here it is chosen from what the machine has.
ModelOpt places Q/DQ the TensorRT way (symmetric INT8, Conv/Gemm inputs): on CPU, run it on OpenVINO.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from quantization.ModelOpt.calibration_session import RangeDropped
from quantization.onnx_quantizer import OnnxQuantizer, calibration_step
from quantization.onnx_weights import SEVEN_BIT_LIMIT, fold_weight_quantizers
from quantization.transforms.weight_scheme import WeightScheme
from utils.artifacts import write_bytes
from utils.child_process import run_in_spawned_child
from utils.errors import SuiteError
from utils.hardware import has_cuda_gpu
from utils.packages import missing_reason
from utils.stages import StageTimer

log = logging.getLogger(__name__)
_IN_PROCESS = threading.Lock()  # ModelOpt in this process: one call at a time (see _quantize_here)


def default_calibration_eps() -> list[str]:
    """Execution providers ModelOpt may calibrate on, from what this machine really has.

    Never ONNX Runtime's TensorRT EP by default, even with TensorRT installed: onnxruntime-gpu 1.24's EP is
    built against TensorRT 10 (it fails to load beside TensorRT 11 and is absent from the aarch64 wheels),
    and it builds an engine per calibration shape; the CUDA EP computes the same FP32 ranges. Ask for it
    with ``--calibration-eps trt,cuda:0,cpu``."""
    return ["cuda:0", "cpu"] if has_cuda_gpu() else ["cpu"]


def _quantize(kwargs: dict[str, Any], scratch: str, correction: WeightScheme | None = None,
              every_range: bool = False) -> None:
    """ModelOpt's ``quantize``, its temporary files in ``scratch``; with ``correction`` (the weight grid), the fast
    bias correction from its max calibration session's own input sums, folded into the float biases of the file
    it wrote. The session gathers only the ranges ModelOpt reads unless ``every_range``
    (quantization/ModelOpt/calibration_session.py)."""
    from modelopt.onnx.quantization import quantize

    from quantization.ModelOpt.calibration_session import installed
    from utils.console import library_output_to_run_log

    # max calibration in an optimised CPU session, as the ORT toolchain's; ModelOpt's temporaries in scratch
    before = tempfile.tempdir  # process-wide: put back after the call (ModelOpt may run in the caller's process)
    with installed(input_sums=correction is not None, read_ranges_only=not every_range) as summing:
        tempfile.tempdir = scratch  # ModelOpt's intermediate tmp*.onnx and ORT's ort.quant.* go there, not to /tmp
        try:
            with library_output_to_run_log():  # its logger writes to stdout ("Failed to get GPU count" on CPU runs)
                quantize(**kwargs)
        finally:
            tempfile.tempdir = before
        if correction is None:
            return
        if len(summing) != 1:
            raise RuntimeError(f"bias correction: expected one CPU max calibration session, ModelOpt ran {len(summing)}")
        session = summing[0]
    import onnx

    from quantization.transforms.onnx_bias_correction import fold_shifts

    output = kwargs["output_path"]
    model = onnx.load(output)
    if session.sums and not set(session.sums) & {n.name for n in model.graph.node}:  # names no longer match
        raise RuntimeError("bias correction: no layer of ModelOpt's output matched the calibration graph")
    fold_shifts(model, session.sums, session.count, correction, set(kwargs.get("nodes_to_exclude") or ()),
                set(kwargs.get("op_types_to_exclude") or ()), weights_from=session.model)
    onnx.save_model(model, output)


def _quantize_here(kwargs: dict[str, Any], scratch: str, correction: WeightScheme | None,
                   every_range: bool = False) -> None:
    """:func:`_quantize` in this process, onnxruntime.quantization put back as it was afterwards."""
    import modelopt.onnx.quantization  # noqa: F401 - loaded before the patches are recorded

    from quantization.ModelOpt.ort_patches import restored_onnxruntime_quantization
    from utils.console import route_library_logs

    own = {key: value.copy() if isinstance(value, (list, dict)) else value for key, value in kwargs.items()}
    # (copies: ModelOpt extends the nodes_to_exclude list it is given; the child got copies by pickling). One
    # call at a time: the patches, tempfile.tempdir and stdout it touches are the whole process's.
    with _IN_PROCESS, restored_onnxruntime_quantization():
        try:
            _quantize(own, scratch, correction, every_range)
        finally:
            route_library_logs()  # every quantize() gives ModelOpt's logger a new stdout handler


def run_modelopt_quantize(scratch: Path, correction: WeightScheme | None = None, in_process: bool = False,
                          every_range: bool = False, **kwargs: Any) -> None:
    """Call ModelOpt's ``quantize``: in this process where the suite's own calibration session runs (max on the
    CPU, ``in_process``), else in a fresh process (utils.child_process: with huge-page malloc, which ModelOpt's
    arena-less calibration session needs to run at the arena's speed: entropy, GPU providers).

    ModelOpt patches onnxruntime.quantization's calibrators and quantizers while it runs and leaves them
    patched, which broke a later ``quantize_static`` in the same process (measured: "Quantization parameters
    are not specified for param input"): in this process every patch is undone afterwards
    (:mod:`quantization.ModelOpt.ort_patches`). The child's start cost the default path 7-8 s
    (EfficientNet-Lite0, x86-vnni: 17.0 s in the child, 9.7-10.3 s here); huge-page malloc, which the child
    exists to give ModelOpt's own session, slowed the suite's arena session (12.1 s in a child without it).

    ``every_range``: the calibration session gathers every range ORT's calibrator adds, the retry after
    :class:`~quantization.ModelOpt.calibration_session.RangeDropped`.

    ModelOpt removes its own temporary files only when it succeeds (an error or a stop left a ``tmp*.onnx``
    in the system temp folder): its temp folder is ``scratch``, which the caller removes whatever happens.
    """
    if in_process:
        _quantize_here(kwargs, str(scratch), correction, every_range)
    else:
        run_in_spawned_child(_quantize, kwargs, str(scratch), correction, every_range)


def calibration_shapes(feed: dict[str, np.ndarray], batch_size: int, histogram: bool = True) -> str:
    """ModelOpt's ``calibration_shapes`` spec for one calibration step of ``batch_size`` images.

    Without it ModelOpt fills the dynamic batch axis with 1 and calibrates image by image. Its entropy
    method (ORT's 128-bin histogram, widened as later batches exceed the first batch's range) then only
    searches thresholds between the first image's range and the sample's maximum, so the result hangs
    on which image came first. The step is the same as ORT's (:func:`calibration_step`)."""
    n = len(next(iter(feed.values())))
    step = calibration_step(n, batch_size, histogram)
    return ",".join(f"{name}:{'x'.join(str(d) for d in (step, *array.shape[1:]))}" for name, array in feed.items())


class ModelOptQuantizer(OnnxQuantizer):
    toolchain = "modelopt"
    folder = "modelopt"
    section = "modelopt"
    library_modules = ("modelopt.onnx.quantization",)
    # OpenVINO first: ONNX Runtime's CPU EP fuses almost none of ModelOpt's Q/DQ (placed for TensorRT) into integer
    # kernels and runs DequantizeLinear + float kernels (EfficientNet-Lite0 on AVX2: 0.33x FP32 speed on ORT, 1.17x
    # on OpenVINO, same accuracy); the report says why (evaluation/pipelines/onnxruntime_kernels.py)
    runtimes = ("openvino", "onnxruntime", "onnxruntime_reference")
    runs_by_default = True
    calibrations = {"minmax": "max", "entropy": "entropy"}
    unsupported_calibrations = {"percentile": "ModelOpt int8 calibrates with max or entropy only",
                                "mse": "ModelOpt int8 calibrates with max or entropy only"}
    granularities = ("per_channel",)
    granularity_note = "ModelOpt int8 weights are always per channel"
    calibration_fields = ("calibration_method", None)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason("toolchain modelopt", {"onnx": "onnx", "onnxruntime": "onnxruntime-gpu",
                                                     "modelopt": "nvidia-modelopt[onnx]"})

    def ranges_depend_on_batching(self) -> bool:
        """max is a running max over every batch; entropy's histogram is sized from the first batch."""
        return self.options.calibration_method != "max"

    def calibration_eps(self) -> list[str]:
        return list(self.options.calibration_eps or default_calibration_eps())

    def high_precision_dtype(self) -> str:
        """Dtype of the parts left unquantized: the user's choice here; the TensorRT toolchain's Q/DQ step
        derives fp16."""
        return self.options.high_precision_dtype

    def weight_scheme(self) -> WeightScheme:
        """ModelOpt's symmetric per-channel int8 weights, scale = absmax / 127; on the 7-bit overflow-fix grid
        the scale is doubled (absmax / 63.5) and |q| <= 64."""
        if self.weight_bits() == 7:
            return WeightScheme(per_channel=True, qmin=-SEVEN_BIT_LIMIT, qmax=SEVEN_BIT_LIMIT, divisor=63.5)
        return super().weight_scheme()

    def settings(self) -> dict[str, Any]:
        m = self.options
        fix = ("weights re-gridded to |q| <= 64 with doubled scales (overflow fix for 16-bit pair sums)"
               if self.weight_bits() == 7 else "none")
        return {"quantize_mode": "int8", "mode": "modelopt int8", "calibration_method": m.calibration_method,
                "granularity": "per_channel (weights), per_tensor (activations)",
                "weight_storage": "int8 initializers + DequantizeLinear", "overflow_fix": fix,
                "calibration_eps": self.calibration_eps(), "high_precision_dtype": self.high_precision_dtype(),
                **self.common_settings()}

    def tag(self) -> str:
        dtype = self.high_precision_dtype()
        suffix = "" if dtype == "fp32" else f"_{dtype}"
        return f"modelopt_int8_{self.options.calibration_method}{suffix}{self.bits_tag()}"

    def calibrates_in_suite_session(self) -> bool:
        """max calibration on the CPU runs in the suite's session (calibration_session.py), and ModelOpt in this
        process; entropy, and calibration on a GPU, keep ModelOpt's own session and its child."""
        return self.options.calibration_method == "max" and self.calibration_eps() == ["cpu"]

    def gathers_bias_statistics(self) -> bool:
        """Where the suite's session calibrates, the fast correction's input sums come along (fp16 biases: the
        separate pass corrects before the export instead)."""
        return self.calibrates_in_suite_session() and self.high_precision_dtype() == "fp32"

    def _quantize_file(self, fp32: Path, feed: dict[str, np.ndarray], exclude: list[str], out: Path,
                       timer: StageTimer, pending_correction: bool) -> None:
        """One stage, "quantize": ModelOpt calibrates and inserts Q/DQ inside one library call (the pending bias
        correction is folded into its output in the same call)."""
        with timer.stage("quantize"):
            self._quantize_in_private_copy(fp32, feed, exclude, out,
                                           self.weight_scheme() if pending_correction else None)

    def _quantize_in_private_copy(self, fp32: Path, feed: dict[str, np.ndarray], exclude: list[str], out: Path,
                                  correction: WeightScheme | None = None) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise SuiteError(reason)
        import onnx

        private = Path(tempfile.mkdtemp(prefix="mls-modelopt-"))
        try:  # ModelOpt rewrites the file it is handed (shape inference): give it a private copy, and let it
            source = private / fp32.name  # write its output there too (a run killed meanwhile leaves nothing in models/)
            shutil.copyfile(fp32, source)
            written = private / out.name
            try:
                self._run_modelopt(source, feed, exclude, written, scratch=private, correction=correction)
            except RangeDropped:  # it read a range the session had dropped: the unchanged path, from a fresh copy
                shutil.copyfile(fp32, source)
                self._run_modelopt(source, feed, exclude, written, scratch=private, correction=correction,
                                   every_range=True)
            if not written.is_file() or written.stat().st_size == 0:
                raise SuiteError(f"ModelOpt wrote no model for {fp32.name}")
            model = onnx.load(str(written))
        finally:
            shutil.rmtree(private, ignore_errors=True)
        fold_weight_quantizers(model, self.weight_bits())
        write_bytes(out, model.SerializeToString())

    def _run_modelopt(self, fp32: Path, feed: dict[str, np.ndarray], exclude: list[str], out: Path,
                      scratch: Path, correction: WeightScheme | None = None, every_range: bool = False) -> None:
        m = self.options
        run_modelopt_quantize(
            scratch,
            correction,
            in_process=self.calibrates_in_suite_session(),
            every_range=every_range,
            onnx_path=str(fp32),
            quantize_mode="int8",
            calibration_data=feed,
            calibration_shapes=calibration_shapes(feed, self.calibration_batch_size(), self.ranges_depend_on_batching()),
            calibration_method=m.calibration_method,
            calibration_eps=self.calibration_eps(),
            nodes_to_exclude=exclude or None,
            op_types_to_exclude=list(m.exclude_op_types) or None,
            high_precision_dtype=self.high_precision_dtype(),
            output_path=str(out),
            log_level="WARNING",
        )
