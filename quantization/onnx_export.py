"""FP32 ONNX export shared by the ModelOpt, ONNX Runtime and TensorRT toolchains.

One file per model and opset (dynamic batch axis, checked with ``onnx.checker``), reused by every
ONNX toolchain so their INT8 artifacts share one FP32 reference. After torch's export, zero Pads are folded
into the Conv that follows (``onnx_pad_fold``: same math, a Q/DQ placement OpenVINO runs at full speed).
"""
from __future__ import annotations

import logging
import weakref
from pathlib import Path

import torch

from utils.artifacts import (
    Artifact,
    build_manifest,
    load_artifact,
    sha256_file,
    write_artifact,
)
from utils.errors import SuiteError, missing_package
from utils.packages import has_module

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: graph passes applied after torch's export, recorded in the manifest: a cached export without them is redone
EXPORT_PASSES = ("pads_into_convs",)

# module -> {(file, opset, input shape): Artifact}: the exports of this process. Random-weights models
# have no weights file to match an earlier export against, so without it every ONNX toolchain and
# sweep variant of one run exported the same module again.
_EXPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def require_onnx(toolchain: str) -> None:
    if not has_module("onnx"):
        raise missing_package(f"toolchain {toolchain}", "onnx")


def check_onnx_file(path: Path) -> None:
    """Fail with one line if ``path`` is not a valid ONNX model."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises ValidationError, DecodeError, OSError...
        raise SuiteError(f"{path}: not a valid ONNX model ({str(exc).strip().splitlines()[0][:200]})") from exc


def export_onnx(module: torch.nn.Module, input_shape: tuple[int, ...], final: Path, *, name: str, opset: int,
                source_weights: Path | None, extra: dict) -> Artifact:
    """Export ``module`` to ONNX with a dynamic batch axis; reuse an identical earlier export."""
    require_onnx("onnx export")
    if opset < 17:
        raise SuiteError(f"--opset must be 17 or newer (got {opset})")
    key = (str(final), opset, tuple(input_shape))
    done = _EXPORTED.get(module, {}).get(key)
    if done is not None and final.is_file():
        try:
            log.info("reusing FP32 ONNX %s (exported earlier in this run)", final)
            return load_artifact(final)  # checks the file against its manifest's sha256
        except SuiteError as exc:
            log.warning("FP32 ONNX of this run changed on disk (%s): exporting it again", exc)
    artifact = _export_or_reuse(module, input_shape, final, name=name, opset=opset,
                                source_weights=source_weights, extra=extra)
    _EXPORTED.setdefault(module, {})[key] = artifact
    return artifact


def _export_or_reuse(module: torch.nn.Module, input_shape: tuple[int, ...], final: Path, *, name: str, opset: int,
                     source_weights: Path | None, extra: dict) -> Artifact:
    weights_sha = sha256_file(source_weights)
    if final.is_file():
        try:
            previous = load_artifact(final)
            if (previous.manifest.get("source_weights_sha256") == weights_sha
                    and previous.manifest.get("settings", {}).get("opset") == opset
                    and previous.manifest.get("input_shape") == list(input_shape) and weights_sha
                    and previous.manifest.get("settings", {}).get("export_passes") == list(EXPORT_PASSES)
                    and previous.manifest.get("transform_inputs") == extra.get("transform_inputs")):
                log.info("reusing FP32 ONNX %s", final)
                return previous
        except SuiteError as exc:  # no manifest, or a file that no longer matches its sha256: export again
            log.warning("cached FP32 ONNX not reusable (%s): exporting it again", exc)

    def write(tmp: Path) -> None:
        example = torch.randn(2, *input_shape)
        with torch.no_grad():
            torch.onnx.export(module.eval(), (example,), str(tmp), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        _apply_passes(tmp)
        check_onnx_file(tmp)

    manifest = build_manifest(name=name, toolchain="onnx", kind="onnx", precision="fp32",
                              settings={"mode": "fp32", "opset": opset, "input_name": INPUT_NAME,
                                        "export_passes": list(EXPORT_PASSES)},
                              source_weights=source_weights, calibration_ids=None, extra=extra)
    return write_artifact(final, write, manifest, toolchain="onnx", kind="onnx", precision="fp32")


def _apply_passes(path: Path) -> None:
    """EXPORT_PASSES on the file torch wrote (rewritten only where a pass changed it)."""
    import onnx

    from quantization.onnx_pad_fold import fold_pads_into_convs

    model = onnx.load(str(path))
    if fold_pads_into_convs(model):
        onnx.save(model, str(path))


def onnx_input_names(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]
