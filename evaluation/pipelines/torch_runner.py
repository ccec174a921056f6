"""PyTorch runtimes: TorchScript (eager kernels, FBGEMM/oneDNN for INT8) and torch.compile (Inductor).

True FP32: float32 matmuls at "highest" and oneDNN's FP32 precision at "ieee", so no kernel may compute an FP32 row
in BF16 or TF32 on its own. BF16 rows run the FP32 artifact under CPU autocast (bfloat16): oneDNN's AMX-BF16 or
AVX512-BF16 kernels for convolutions and matmuls, FP32 where autocast keeps it (softmax, reductions).
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from evaluation.pipelines.base import Runner
from utils.artifacts import Artifact
from utils.errors import SuiteError

log = logging.getLogger(__name__)


def true_fp32() -> str:
    """Forbid implicit reduced precision for FP32 math in this process; returns what torch now reports.

    oneDNN's precision is set per operator family, never through the generic ``torch.backends.mkldnn.
    fp32_precision``: setting that one (torch 2.14) also rewrites cuDNN's conv/RNN flags, after which every
    ``torch.export`` in the process (PT2E) fails with "a mix of the legacy and new APIs to set the TF32 flags"."""
    torch.set_float32_matmul_precision("highest")
    for family in ("conv", "matmul", "rnn"):
        backend = getattr(torch.backends.mkldnn, family, None)
        if backend is not None and hasattr(backend, "fp32_precision"):
            backend.fp32_precision = "ieee"
    return f"fp32 (matmul precision {torch.get_float32_matmul_precision()})"


def compute_context(precision: str) -> contextlib.AbstractContextManager:
    """Autocast to BF16 for a BF16 row; nothing for FP32 and INT8 rows."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_exported_program(path: str) -> torch.export.ExportedProgram:
    """torch.export.load for PT2E artifacts: the ``quantized_decomposed`` ops their graphs call must be
    registered first, or a fresh process cannot deserialise the file ("failed to resolve ... to an operator")."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers quantized_decomposed::*

    try:
        return torch.export.load(path)
    except Exception as exc:  # torch raises several types for a bad archive
        raise SuiteError(f"{path}: not a loadable ExportedProgram ({str(exc).splitlines()[0]})") from exc


class TorchRunner(Runner):
    runtime = "torch"
    kinds = ("torchscript",)
    no_bf16 = None

    def __init__(self, artifact: Artifact, threads: int | None = None, precision: str | None = None):
        super().__init__(artifact, threads, precision)
        self._fp32 = true_fp32()
        if threads:
            torch.set_num_threads(threads)
        backend = artifact.manifest.get("settings", {}).get("backend")
        if backend:
            torch.backends.quantized.engine = backend  # INT8 kernels follow the engine they were built for
        self._backend = backend
        try:
            self.module = torch.jit.load(str(artifact.path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise SuiteError(f"{artifact.path}: not a loadable TorchScript file ({str(exc).splitlines()[0]})") from exc

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    @property
    def device(self) -> str:
        return f"cpu ({self._backend} engine)" if self._backend else "cpu"

    @property
    def ran_in(self) -> str:
        return {"fp32": self._fp32, "bf16": "bf16 (CPU autocast)"}.get(self.precision, self.precision)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self._backend:
            torch.backends.quantized.engine = self._backend
        with torch.inference_mode(), compute_context(self.precision):
            return self.module(torch.from_numpy(batch)).float().numpy()


class TorchCompileRunner(Runner):
    """ExportedProgram artifacts (PT2E INT8 and their FP32 twin) compiled by Inductor with freezing."""

    runtime = "torch_compile"
    kinds = ("exported_program",)
    no_bf16 = None

    def __init__(self, artifact: Artifact, threads: int | None = None, precision: str | None = None):
        super().__init__(artifact, threads, precision)
        self._fp32 = true_fp32()
        if threads:
            torch.set_num_threads(threads)
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold weights: what makes INT8 fast on Inductor
        program = load_exported_program(str(artifact.path))
        self.module = torch.compile(program.module())

    @classmethod
    def unavailable_reason(cls) -> str | None:
        import shutil

        if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")):
            return "torch.compile on CPU needs a C++ compiler (gcc) on PATH"
        return None

    @property
    def device(self) -> str:
        return "cpu (inductor)"

    @property
    def ran_in(self) -> str:
        return {"fp32": self._fp32, "bf16": "bf16 (CPU autocast, compiled)"}.get(self.precision, self.precision)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), compute_context(self.precision):
            return self.module(torch.from_numpy(batch)).float().numpy()
