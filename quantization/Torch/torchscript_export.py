"""TorchScript artifacts: traced and frozen, so they reload and run with no Python model code."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from utils.artifacts import Artifact, build_manifest, write_artifact, write_saved
from utils.stages import StageTimer


def write_torchscript(module: torch.nn.Module, example: torch.Tensor, final: Path, *, name: str,
                      toolchain: str, precision: str, settings: dict[str, Any], source_weights: Path | None,
                      calibration_ids: list[str] | None, extra: dict[str, Any] | None = None,
                      timer: StageTimer | None = None) -> Artifact:
    """Trace ``module`` on ``example``, freeze it, and write it atomically with its manifest.

    With ``timer``, tracing and saving are its "save" stage, and its stages go into the manifest."""
    timer = timer or StageTimer(name)
    with timer.stage("save"), torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(module.eval(), example, check_trace=False))
    manifest = build_manifest(name=name, toolchain=toolchain, kind="torchscript", precision=precision,
                              settings=settings, source_weights=source_weights,
                              calibration_ids=calibration_ids, extra=extra)

    def write(tmp: Path) -> None:
        with timer.stage("save"):
            write_saved(tmp, torch.jit.save, traced)
        if precision == "int8":
            manifest["quantize_seconds_by_stage"] = dict(timer.seconds)

    return write_artifact(final, write, manifest, toolchain=toolchain, kind="torchscript", precision=precision)
