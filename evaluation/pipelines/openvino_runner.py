"""OpenVINO runtime (CPU device): reads FP32 and Q/DQ ONNX as they are and runs INT8 kernels.

ModelOpt's Q/DQ placement (Conv/Gemm inputs only, as TensorRT wants it) runs slower than FP32 on
ONNX Runtime's CPU EP but about twice as fast on OpenVINO, so both runtimes are measured.
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

    def __init__(self, artifact: Artifact, threads: int | None = None):
        super().__init__(artifact, threads)
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
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

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason("runtime openvino", {"openvino": "openvino"})

    @property
    def device(self) -> str:
        return f"CPU ({self._device})"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: batch})
        return np.asarray(result[self.compiled.outputs[0]], dtype=np.float32)
