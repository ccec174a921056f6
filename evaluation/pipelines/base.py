"""The Runner interface and the runtime registry.

A Runner loads one artifact on one runtime and maps an NCHW float32 batch to logits. Each Runner
class says which artifact kinds it runs and why it cannot run on this machine (missing package or
device), so the loop can list skipped pairs with a reason instead of failing.
"""
from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from utils.artifacts import Artifact

# runtime name -> "module:Class"; imported lazily so a missing runtime package costs nothing.
RUNTIMES: dict[str, str] = {
    "torch": "evaluation.pipelines.torch_runner:TorchRunner",
    "torch_compile": "evaluation.pipelines.torch_runner:TorchCompileRunner",
    "onnxruntime": "evaluation.pipelines.onnxruntime_runner:OnnxRuntimeRunner",
    "onnxruntime_reference": "evaluation.pipelines.onnxruntime_runner:OnnxRuntimeReferenceRunner",
    "openvino": "evaluation.pipelines.openvino_runner:OpenVINORunner",
    "tensorrt": "evaluation.pipelines.tensorrt_runner:TensorRTRunner",
}


class Runner(ABC):
    runtime: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    #: True for a runtime that computes the artifact's exact quantized math (no integer kernels); the
    #: report measures every other CPU runtime's kernel error against it
    reference: ClassVar[bool] = False
    #: True where the runtime's INT8 kernels run on this machine's CPU (their pair sums follow its ISA)
    cpu_kernels: ClassVar[bool] = True

    def __init__(self, artifact: Artifact, threads: int | None = None):
        self.artifact = artifact
        self.threads = threads

    @classmethod
    @abstractmethod
    def unavailable_reason(cls) -> str | None:
        """None where this runtime can run here, else one line saying what is missing."""

    @classmethod
    def supports(cls, artifact: Artifact) -> bool:
        return artifact.kind in cls.kinds

    @property
    def device(self) -> str:
        """What actually executes (execution provider, device name), recorded in the report."""
        return "cpu"

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32, N x classes) for an NCHW float32 batch."""

    def timed_call(self, batch: np.ndarray) -> Callable[[], float]:
        """A zero-argument call that runs ``batch`` once and returns its latency in ms.

        Host runtimes time the whole call with a monotonic clock; device runtimes override this to
        time on the device (CUDA events) with the input already resident there.
        """
        def call() -> float:
            start = time.perf_counter()
            self.predict(batch)
            return (time.perf_counter() - start) * 1000.0
        return call


def runner_class(runtime: str) -> type[Runner]:
    from utils.errors import SuiteError

    if runtime not in RUNTIMES:
        raise SuiteError(f"unknown runtime '{runtime}' (known: {', '.join(RUNTIMES)})")
    module_name, class_name = RUNTIMES[runtime].split(":")
    return getattr(importlib.import_module(module_name), class_name)
