"""TensorRT runtime: serialized engines through the name-based I/O API, torch CUDA tensors as buffers.

Written against NVIDIA's Python bindings (TensorRT 10/11, ``python/src/infer/pyCore.cpp``:
``num_io_tensors``, ``get_tensor_name``, ``set_input_shape`` -> bool, ``set_tensor_address``,
``execute_async_v3(stream_handle)`` -> bool); no pycuda. It has never run in this project (no GPU with
TensorRT was available): see docs/tensorrt.md.

Everything on the device happens on the runner's one stream: the input's copy and dtype conversion, the
enqueue, the output. The latency is the enqueue alone, between two CUDA events recorded on that stream;
shape setting, allocation and address binding happen before the start event, once.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation.pipelines.base import Runner
from quantization.TensorRT.plan import batch_refusal
from utils.artifacts import Artifact
from utils.errors import SuiteError
from utils.hardware import tensorrt_unavailable_reason


def deserialize(data: bytes, where: str) -> Any:
    """The ``ICudaEngine`` of serialized bytes, with the process's one logger; one line where it fails."""
    import tensorrt as trt

    from quantization.TensorRT.engine_builder import trt_logger

    runtime = trt.Runtime(trt_logger())
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise SuiteError(f"{where}: TensorRT {trt.__version__} cannot deserialize it (built for another TensorRT "
                         "version or GPU?)")
    return engine  # it keeps its runtime alive (pyCore.cpp: deserialize_cuda_engine's py::keep_alive<0, 1>)


class TensorRTRunner(Runner):
    runtime = "tensorrt"
    kinds = ("trt_plan",)
    cpu_kernels = False
    no_bf16 = "TensorRT's reduced-precision float row is its FP16 engine (--precisions), not BF16"
    #: why the accuracy pass of --cluster runs this runtime on the driver (evaluation/cluster/sharded.py)
    driver_only = "a TensorRT engine runs only on the GPU it was built for, and Ray tasks are given no GPU"

    def __init__(self, artifact: Artifact, threads: int | None = None, precision: str | None = None):
        super().__init__(artifact, threads, precision)
        import tensorrt as trt
        import torch

        self.attach(deserialize(artifact.path.read_bytes(), str(artifact.path)), trt, torch, torch.cuda.Stream())

    def attach(self, engine: Any, trt: Any, torch: Any, stream: Any) -> None:
        """Take ``engine`` with the modules and the stream every later call uses (tests hand in stand-ins)."""
        self._torch, self.engine, self.stream = torch, engine, stream
        self._bound: tuple[Any, Any] | None = None  # the (input, output) tensors the context's addresses point at
        self.context = engine.create_execution_context()
        if self.context is None:  # TensorRT returns null when it cannot allocate the context's device memory
            raise SuiteError(f"{self.artifact.path.name}: TensorRT could not create an execution context "
                             "(out of GPU memory?)")
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(name)
        self._dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                       trt.int8: torch.int8}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return tensorrt_unavailable_reason()

    @property
    def device(self) -> str:
        return f"cuda ({self._torch.cuda.get_device_name(0)})"

    def _bind(self, batch: Any) -> tuple[Any, Any]:
        """Copy/convert ``batch`` on the runner's stream, set the input shape, allocate the output and bind both
        addresses: (input, output) device tensors, which must stay alive while the engine uses them."""
        torch = self._torch
        name, out_name = self.inputs[0], self.outputs[0]
        self.stream.wait_stream(torch.cuda.current_stream())  # a batch made on torch's stream is complete first
        with torch.cuda.stream(self.stream):
            x = batch.to(device="cuda", dtype=self._dtype[self.engine.get_tensor_dtype(name)]).contiguous()
            if not self.context.set_input_shape(name, tuple(x.shape)):
                profile_max = self.engine.get_tensor_profile_shape(name, 0)[2][0]
                raise SuiteError(f"{self.artifact.path.name}: {batch_refusal(int(x.shape[0]), int(profile_max))}")
            self.context.set_tensor_address(name, x.data_ptr())
            shape = tuple(self.context.get_tensor_shape(out_name))
            out = torch.empty(shape, device="cuda", dtype=self._dtype[self.engine.get_tensor_dtype(out_name)])
            self.context.set_tensor_address(out_name, out.data_ptr())
        self._bound = (x, out)
        return self._bound

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise SuiteError(f"{self.artifact.path.name}: TensorRT execution failed")

    def run_device(self, batch: Any) -> Any:
        """Run on a torch tensor and return the CUDA output tensor, complete."""
        _, out = self._bind(batch)
        self._enqueue()
        self.stream.synchronize()
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.run_device(self._torch.from_numpy(batch)).float().cpu().numpy()

    def timed_call(self, batch: np.ndarray) -> Callable[[], float]:
        """Latency of the engine alone: the input resident and bound once, then each call times only
        ``execute_async_v3`` between two CUDA events on the runner's stream (the end event is recorded
        before anything waits for it)."""
        torch = self._torch
        host = torch.from_numpy(batch)
        bound = self._bind(host)
        self.stream.synchronize()

        def call() -> float:
            nonlocal bound
            if self._bound is not bound:  # the context was bound to another batch since: bind again, untimed
                bound = self._bind(host)
                self.stream.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            self._enqueue()
            end.record(self.stream)
            end.synchronize()
            return float(start.elapsed_time(end))
        return call
