"""TorchScript artifacts: traced and frozen, so they reload and run with no Python model code."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from utils.artifacts import Artifact, build_manifest, write_artifact, write_saved


def write_torchscript(module: torch.nn.Module, example: torch.Tensor, final: Path, *, name: str,
                      toolchain: str, precision: str, settings: dict[str, Any], source_weights: Path | None,
                      calibration_ids: list[str] | None, extra: dict[str, Any] | None = None) -> Artifact:
    """Trace ``module`` on ``example``, freeze it, and write it atomically with its manifest."""
    with torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(module.eval(), example, check_trace=False))
    manifest = build_manifest(name=name, toolchain=toolchain, kind="torchscript", precision=precision,
                              settings=settings, source_weights=source_weights,
                              calibration_ids=calibration_ids, extra=extra)
    return write_artifact(final, lambda tmp: write_saved(tmp, torch.jit.save, traced), manifest,
                          toolchain=toolchain, kind="torchscript", precision=precision)
