"""ONNX Runtime: FP32 ONNX and Q/DQ ONNX, on the TensorRT, CUDA or CPU execution provider.

onnxruntime-gpu lists the CUDA and TensorRT providers even on a machine with no GPU, so the provider
is chosen from what the machine really has, and the one the session actually uses is reported.
"""
from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import numpy as np

from evaluation.pipelines.base import Runner
from utils.artifacts import Artifact
from utils.errors import SuiteError
from utils.hardware import has_cuda_gpu
from utils.packages import has_module, missing_reason

log = logging.getLogger(__name__)


def choose_providers() -> list[str]:
    """TensorRT EP (when TensorRT is installed), CUDA EP (when a GPU is there), then CPU EP."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    providers: list[str] = []
    gpu = has_cuda_gpu()
    if gpu and "TensorrtExecutionProvider" in available and has_module("tensorrt"):
        providers.append("TensorrtExecutionProvider")
    if gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def make_session(path: str, threads: int | None, providers: list[str] | None = None, optimize: bool = True,
                 save_optimized: str | None = None):
    """An ONNX Runtime session (``save_optimized``: also write the graph it optimised there)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if save_optimized:
        options.optimized_model_filepath = save_optimized
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers or choose_providers())
    except Exception as exc:  # ORT raises its own exception types for invalid models
        raise SuiteError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from exc


class OnnxRuntimeRunner(Runner):
    runtime = "onnxruntime"
    kinds = ("onnx", "onnx_qdq")
    optimize: bool = True
    no_bf16 = ("ONNX Runtime's CPU execution provider has no BF16 convolution kernels (a BF16 graph would run as "
               "casts around FP32 kernels): no BF16 row")

    def __init__(self, artifact: Artifact, threads: int | None = None, precision: str | None = None):
        super().__init__(artifact, threads, precision)
        providers = None if self.optimize else ["CPUExecutionProvider"]
        self.session = make_session(str(artifact.path), threads, providers, optimize=self.optimize)
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason(f"runtime {cls.runtime}", {"onnxruntime": "onnxruntime-gpu"})

    @property
    def device(self) -> str:
        return self.session.get_providers()[0]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0].astype(np.float32, copy=False)

    @functools.cached_property
    def kernel_note(self) -> str | None:
        """For a Q/DQ file: how many of its quantized ops ONNX Runtime runs as integer kernels, and why not the rest
        (``onnxruntime_kernels``). Read from a second session that saves its optimised graph, opened after the
        measurements so that it adds nothing to this row's memory."""
        if self.artifact.kind != "onnx_qdq" or not self.optimize or self.device != "CPUExecutionProvider":
            return None  # the selectors read here are the CPU EP's; a GPU EP fuses by its own rules
        import onnx

        from evaluation.pipelines.onnxruntime_kernels import kernel_note

        try:
            with tempfile.TemporaryDirectory(prefix="ort-optimized-") as scratch:
                saved = str(Path(scratch) / "optimized.onnx")
                make_session(str(self.artifact.path), 1, ["CPUExecutionProvider"], save_optimized=saved)
                return kernel_note(onnx.load(str(self.artifact.path)), onnx.load(saved))
        except Exception:  # a diagnosis, never a reason to lose the measured row
            log.debug("no kernel note for %s", self.artifact.path, exc_info=True)
            return None


class OnnxRuntimeReferenceRunner(OnnxRuntimeRunner):
    """The exact math of a Q/DQ ONNX: ONNX Runtime's CPU EP with every graph optimisation off.

    No Q/DQ fusion, so each DequantizeLinear -> float Conv -> QuantizeLinear runs as written: no integer
    kernel, no 16-bit pair sums. Beside a CPU runtime it splits an INT8 drop into quantization error
    (reference vs FP32) and kernel error (runtime vs reference). It is also the closest CPU estimate of
    what TensorRT computes for the same Q/DQ file (TensorRT accumulates in 32 bits), since TensorRT
    cannot run here. Its latency is that of float kernels plus Q/DQ, not an INT8 speed."""

    runtime = "onnxruntime_reference"
    optimize = False
    no_bf16 = "the reference runtime computes the exact math of a file, never a deployment precision"
    reference = True
    cpu_kernels = False

    @property
    def device(self) -> str:
        return "CPUExecutionProvider (graph optimisations off: exact Q/DQ math)"
