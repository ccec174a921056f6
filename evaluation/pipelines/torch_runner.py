"""PyTorch runtimes: TorchScript (eager kernels, FBGEMM/oneDNN for INT8) and torch.compile (Inductor)."""
from __future__ import annotations

import logging

import numpy as np
import torch

from evaluation.pipelines.base import Runner
from utils.artifacts import Artifact
from utils.errors import SuiteError

log = logging.getLogger(__name__)


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

    def __init__(self, artifact: Artifact, threads: int | None = None):
        super().__init__(artifact, threads)
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

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self._backend:
            torch.backends.quantized.engine = self._backend
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).float().numpy()


class TorchCompileRunner(Runner):
    """ExportedProgram artifacts (PT2E INT8 and their FP32 twin) compiled by Inductor with freezing."""

    runtime = "torch_compile"
    kinds = ("exported_program",)

    def __init__(self, artifact: Artifact, threads: int | None = None):
        super().__init__(artifact, threads)
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

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).float().numpy()
