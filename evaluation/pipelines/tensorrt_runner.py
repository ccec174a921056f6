"""TensorRT runtime: serialized engines through the name-based I/O API, torch CUDA tensors as buffers.

Written against NVIDIA's documented Python API (TensorRT 10/11: ``num_io_tensors``,
``get_tensor_name``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); no pycuda.
It has never run in this project (no GPU with TensorRT was available): see docs/tensorrt.md.
"""
from __future__ import annotations

import numpy as np

from evaluation.pipelines.base import Runner
from utils.artifacts import Artifact
from utils.errors import SuiteError
from utils.hardware import tensorrt_unavailable_reason


class TensorRTRunner(Runner):
    runtime = "tensorrt"
    kinds = ("trt_plan",)
    cpu_kernels = False
    no_bf16 = "TensorRT's reduced-precision float row is its FP16 engine (--precisions), not BF16"

    def __init__(self, artifact: Artifact, threads: int | None = None, precision: str | None = None):
        super().__init__(artifact, threads, precision)
        import tensorrt as trt
        import torch

        self._torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime_ = trt.Runtime(self.logger)
        self.engine = self.runtime_.deserialize_cuda_engine(artifact.path.read_bytes())
        if self.engine is None:
            raise SuiteError(f"{artifact.path}: TensorRT cannot deserialize it (built for another "
                             "TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        self.stream = torch.cuda.Stream()
        self._dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                       trt.int8: torch.int8}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return tensorrt_unavailable_reason()

    @property
    def device(self) -> str:
        return f"cuda ({self._torch.cuda.get_device_name(0)})"

    def run_device(self, batch) -> "object":
        """Run on a CUDA tensor and return the CUDA output tensor (used for CUDA-event timing)."""
        torch = self._torch
        name = self.inputs[0]
        dtype = self._dtype[self.engine.get_tensor_dtype(name)]
        x = batch.to(device="cuda", dtype=dtype).contiguous()
        self.context.set_input_shape(name, tuple(x.shape))
        self.context.set_tensor_address(name, x.data_ptr())
        out_name = self.outputs[0]
        shape = tuple(self.context.get_tensor_shape(out_name))
        out = torch.empty(shape, device="cuda", dtype=self._dtype[self.engine.get_tensor_dtype(out_name)])
        self.context.set_tensor_address(out_name, out.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise SuiteError(f"{self.artifact.path.name}: TensorRT execution failed")
        self.stream.synchronize()
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.run_device(self._torch.from_numpy(batch)).float().cpu().numpy()

    def timed_call(self, batch: np.ndarray):
        """Latency of the engine alone: input resident on the GPU, timed with CUDA events on its stream."""
        torch = self._torch
        device_batch = torch.from_numpy(batch).cuda()

        def call() -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            self.run_device(device_batch)
            end.record(self.stream)
            end.synchronize()
            return float(start.elapsed_time(end))
        return call
