"""OpenVINO runtime (CPU device): reads FP32 and Q/DQ ONNX as they are and runs INT8 kernels.

On CPUs with AVX512-BF16 or AMX-BF16, OpenVINO's CPU plugin computes an FP32 model in BF16 unless told otherwise
(its default ``INFERENCE_PRECISION_HINT`` there is bf16): an "FP32" row opened with the defaults is a BF16 row
(ResNet-50 on a Sapphire Rapids class Xeon: 8.7 ms instead of 41 ms). So an FP32 row sets the hint to f32, a BF16
row to bf16, and every row records the hint read back from the compiled model. INT8 artifacts keep the plugin's
default, what a deployment gets; the precision of their float remainder is recorded beside them.
"""
from __future__ import annotations

import numpy as np

from evaluation.pipelines.base import Runner
from utils.artifacts import Artifact
from utils.errors import SuiteError
from utils.packages import missing_reason


class OpenVINORunner(Runner):
    runtime = "openvino"
    kinds = ("onnx", "onnx_qdq", "openvino_ir")
    no_bf16 = None
    #: INFERENCE_PRECISION_HINT per row precision; INT8 artifacts keep the plugin's default
    HINTS = {"fp32": "f32", "bf16": "bf16"}

    def __init__(self, artifact: Artifact, threads: int | None = None, precision: str | None = None):
        super().__init__(artifact, threads, precision)
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.precision in self.HINTS:
            config["INFERENCE_PRECISION_HINT"] = self.HINTS[self.precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(str(artifact.path))
            shape = [-1, *artifact.manifest.get("input_shape", [])] if artifact.manifest.get("input_shape") else None
            if shape:
                model.reshape({model.inputs[0].get_any_name(): ov.PartialShape(shape)})
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            raise SuiteError(f"{artifact.path}: OpenVINO cannot compile it ({str(exc).splitlines()[0][:200]})") from exc
        self.request = self.compiled.create_infer_request()
        self._device = core.get_property("CPU", "FULL_DEVICE_NAME")
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self._hint = hint.to_string() if hasattr(hint, "to_string") else str(hint)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason("runtime openvino", {"openvino": "openvino"})

    @property
    def device(self) -> str:
        return f"CPU ({self._device})"

    @property
    def ran_in(self) -> str:
        """The compiled model's INFERENCE_PRECISION_HINT, as OpenVINO reports it (f32, bf16, f16)."""
        if self.precision == "int8":
            return f"int8 (float parts in {self._hint})"
        return self._hint

    def predict(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: batch})
        return np.asarray(result[self.compiled.outputs[0]], dtype=np.float32)
