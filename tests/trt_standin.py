"""Stand-ins for the ``tensorrt`` module and torch's CUDA calls, for CONTROL-FLOW tests only.

No machine here has a GPU with TensorRT. These classes let a test check what the builder and runner call,
in what order, and what they do with a False or None answer; they compute nothing and never produce a
figure. Each names the binding it stands in for, with the signature read in NVIDIA/TensorRT's
``python/src/infer/pyCore.cpp`` (tags v10.3.0, v10.16, v11.1) and ``python/src/parsers/pyOnnx.cpp``:

- ``Logger(min_severity)``, ``Logger.WARNING``
- ``Builder(logger)``: ``create_network(flags=0)``, ``create_builder_config()``,
  ``create_optimization_profile()``, ``build_serialized_network(network, config)`` -> IHostMemory | None
- ``OnnxParser(network, logger)``: ``parse(model, path=None)`` -> bool, ``num_errors``, ``get_error(index)``
- ``IBuilderConfig``: ``set_memory_pool_limit(pool, pool_size)``, ``set_flag(flag)``, ``clear_flag(flag)``,
  ``add_optimization_profile(profile)`` -> int; TensorRT 10 only: ``int8_calibrator``,
  ``set_calibration_profile(profile)`` -> bool
- ``IOptimizationProfile.set_shape(input, min, opt, max)``: raises RuntimeError "Shape provided for ... is
  inconsistent with other shapes." when setDimensions fails (min <= opt <= max per dimension)
- ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (= 1, NvInfer.h), ``BuilderFlag`` (FP16 and INT8 only
  up to 10; TF32 in both), ``MemoryPoolType.WORKSPACE``, ``TensorIOMode``, ``float32``/``float16``/...
- ``ICudaEngine``: ``num_io_tensors``, ``get_tensor_name(index)``, ``get_tensor_mode(name)``,
  ``get_tensor_dtype(name)``, ``get_tensor_profile_shape(name, profile_index)`` -> [min, opt, max],
  ``create_execution_context()`` -> IExecutionContext | None
- ``IExecutionContext``: ``set_input_shape(name, shape)`` -> bool, ``set_tensor_address(name, memory)``,
  ``get_tensor_shape(name)``, ``execute_async_v3(stream_handle)`` -> bool
- TensorRT 10 only: ``IInt8EntropyCalibrator2``, ``IInt8MinMaxCalibrator`` (pyInt8.cpp, gone at v11.1)
"""
from __future__ import annotations

import contextlib
import enum
import types
from typing import Any


def make_trt(version: str, calls: list, *, context_ok: bool = True, max_batch: int = 64) -> types.ModuleType:
    """A ``tensorrt`` stand-in of ``version`` (10.x or 11.x); every call is appended to ``calls``."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = "WARNING"

        def __init__(self, min_severity: Any) -> None:
            calls.append(("Logger", min_severity))

    flags = {"TF32": 6} if major >= 11 else {"FP16": 0, "INT8": 1, "TF32": 6}
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", {"WORKSPACE": 0})
    trt.TensorIOMode = enum.Enum("TensorIOMode", {"INPUT": 1, "OUTPUT": 2})
    trt.float32, trt.float16, trt.int32, trt.int8 = "float32", "float16", "int32", "int8"

    class Profile:
        def set_shape(self, input: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002
            calls.append(("set_shape", input, min, opt, max))
            if not all(a <= b for a, b in zip(min, opt, strict=True)):
                raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
            if not all(a <= b for a, b in zip(opt, max, strict=True)):
                raise RuntimeError("Shape provided for max is inconsistent with other shapes.")

    class Config:
        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            calls.append(("set_memory_pool_limit", pool, pool_size))

        def set_flag(self, flag: Any) -> None:
            calls.append(("set_flag", flag.name))

        def clear_flag(self, flag: Any) -> None:
            calls.append(("clear_flag", flag.name))

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("add_optimization_profile",))
            return 0

        if major < 11:
            int8_calibrator = None

            def set_calibration_profile(self, profile: Profile) -> bool:
                calls.append(("set_calibration_profile",))
                return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            calls.append(("Builder",))

        def create_network(self, flags: int = 0) -> object:
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: object, config: Config) -> bytes | None:
            calls.append(("build_serialized_network",))
            return b"standin-plan"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: object, logger: Logger) -> None:
            pass

        def parse(self, model: bytes, path: str | None = None) -> bool:
            return True

        def get_error(self, index: int) -> str:
            return ""

    class Context:
        def set_input_shape(self, name: str, shape: tuple) -> bool:
            calls.append(("set_input_shape", name, tuple(shape)))
            return shape[0] <= max_batch

        def set_tensor_address(self, name: str, memory: int) -> None:
            calls.append(("set_tensor_address", name))

        def get_tensor_shape(self, name: str) -> tuple:
            return (1, 10)

        def execute_async_v3(self, stream_handle: int) -> bool:
            calls.append(("execute_async_v3", stream_handle))
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, index: int) -> str:
            return ("input", "logits")[index]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> str:
            return trt.float32

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple]:
            return [(1, 3, 8, 8), (16, 3, 8, 8), (max_batch, 3, 8, 8)]

        def create_execution_context(self) -> Context | None:
            return Context() if context_ok else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Engine = Logger, Builder, OnnxParser, Engine
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        trt.IInt8MinMaxCalibrator = IInt8EntropyCalibrator2
    return trt


class Tensor:
    """Stands in for a torch CUDA tensor: ``to``/``contiguous``/``data_ptr``/``shape``, logging which stream
    a conversion was issued on."""

    def __init__(self, shape: tuple, calls: list, torch: Any) -> None:
        self.shape, self._calls, self._torch = shape, calls, torch

    def to(self, device: str, dtype: Any) -> Tensor:
        self._calls.append(("to", device, self._torch.cuda.current))
        return self

    def contiguous(self) -> Tensor:
        return self

    def data_ptr(self) -> int:
        return 4096


def make_torch_cuda(calls: list) -> types.SimpleNamespace:
    """Stands in for torch's CUDA calls the runner makes: ``torch.cuda.stream(s)`` (a context making ``s``
    current), ``torch.cuda.current_stream()``, ``torch.cuda.Event(enable_timing=True)`` with ``record(stream)``,
    ``synchronize()``, ``elapsed_time(end)``; ``torch.empty``; ``Stream.wait_stream``/``synchronize``."""

    class Stream:
        def __init__(self, name: str) -> None:
            self.name, self.cuda_stream = name, id(self)

        def wait_stream(self, other: Stream) -> None:
            calls.append(("wait_stream", self.name, other.name))

        def synchronize(self) -> None:
            calls.append(("stream.synchronize", self.name))

    class Event:
        count = 0

        def __init__(self, enable_timing: bool = False) -> None:
            Event.count += 1
            self.label = "start" if Event.count % 2 else "end"

        def record(self, stream: Stream) -> None:
            calls.append((f"{self.label}.record", stream.name))

        def synchronize(self) -> None:
            calls.append((f"{self.label}.synchronize",))

        def elapsed_time(self, end: Event) -> float:
            return 0.0

    torch = types.SimpleNamespace(float32="f32", float16="f16", int32="i32", int8="i8")
    default = Stream("torch-default")

    @contextlib.contextmanager
    def stream(s: Stream):
        previous, torch.cuda.current = torch.cuda.current, s.name
        try:
            yield
        finally:
            torch.cuda.current = previous

    torch.cuda = types.SimpleNamespace(current="torch-default", stream=stream, current_stream=lambda: default,
                                       Event=Event, Stream=Stream)
    torch.empty = lambda shape, device, dtype: Tensor(tuple(shape), calls, torch)
    torch.from_numpy = lambda array: Tensor(tuple(array.shape), calls, torch)
    return torch
