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


#: the compute precisions a report row can have: true FP32, BF16 (an FP32 artifact run in BF16), FP16 (TensorRT's
#: FP16 engines), INT8 artifacts
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def pair_label(artifact: Artifact, runtime: str, precision: str) -> str:
    """How a row is named everywhere (report, cluster placement): a precision other than the artifact's is shown."""
    return f"{artifact.name} @ {runtime}" + ("" if precision == artifact.precision else f" [{precision}]")


class Runner(ABC):
    """One artifact on one runtime in one compute precision.

    ``precision`` is what the row is meant to compute in: an FP32 artifact runs in ``fp32`` (true FP32: the runtime
    is told not to use BF16/TF32 on its own) or, where the runtime lists it in ``float_precisions``, ``bf16``; an INT8
    artifact runs in ``int8``. ``ran_in`` is what the runtime says it actually computed in, read back where it can
    be, and is what the report records."""

    runtime: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    #: why this runtime has no BF16 path for FP32 artifacts; None where it has one (taken where the CPU has BF16)
    no_bf16: ClassVar[str | None] = "this runner has no BF16 path"
    #: True for a runtime that computes the artifact's exact quantized math (no integer kernels); the
    #: report measures every other CPU runtime's kernel error against it
    reference: ClassVar[bool] = False
    #: True where the runtime's INT8 kernels run on this machine's CPU (their pair sums follow its ISA)
    cpu_kernels: ClassVar[bool] = True

    def __init__(self, artifact: Artifact, threads: int | None = None, precision: str | None = None):
        self.artifact = artifact
        self.threads = threads
        self.precision = precision or artifact.precision
        if self.precision not in self.precisions_for(artifact):
            from utils.errors import SuiteError

            raise SuiteError(f"runtime {self.runtime} cannot run {artifact.name} in {self.precision} "
                             f"(it runs it in {', '.join(self.precisions_for(artifact))})")

    @classmethod
    @abstractmethod
    def unavailable_reason(cls) -> str | None:
        """None where this runtime can run here, else one line saying what is missing."""

    @classmethod
    def supports(cls, artifact: Artifact) -> bool:
        return artifact.kind in cls.kinds

    @classmethod
    def bf16_unavailable_reason(cls) -> str | None:
        """None where this runtime runs FP32 artifacts in BF16 natively here, else one line saying why not."""
        from utils.hardware import native_bf16_reason

        return cls.no_bf16 or native_bf16_reason()

    @classmethod
    def precisions_for(cls, artifact: Artifact) -> tuple[str, ...]:
        """The precisions this runtime runs ``artifact`` in: an FP32 one in true FP32 and, where it has a native
        path here, BF16; any other in its own precision."""
        if artifact.precision != "fp32":
            return (artifact.precision,)
        return ("fp32", "bf16") if cls.bf16_unavailable_reason() is None else ("fp32",)

    @property
    def device(self) -> str:
        """What actually executes (execution provider, device name), recorded in the report."""
        return "cpu"

    @property
    def ran_in(self) -> str:
        """The precision the runtime computed in, as it reports it; runners that can read it back override this."""
        return self.precision

    @property
    def kernel_note(self) -> str | None:
        """One line on how the runtime executes an INT8 artifact where that explains its speed (quantized ops it
        runs as float kernels); None where there is nothing to say. Read after the measurements."""
        return None

    @property
    def label(self) -> str:
        return pair_label(self.artifact, self.runtime, self.precision)

    @property
    def key(self) -> str:
        """Unique per (artifact, precision) within one runtime: the loop's and the shards' dictionary key."""
        return str(self.artifact.path) if self.precision == self.artifact.precision else f"{self.artifact.path}|{self.precision}"

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
