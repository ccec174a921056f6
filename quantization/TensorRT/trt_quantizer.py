"""The TensorRT toolchain: FP32 ONNX -> Q/DQ ONNX (ModelOpt, fp16 high precision) -> checked -> engines.

Its own settings are ``cfg.tensorrt``; the Q/DQ step is ModelOpt's and reads ``cfg.modelopt`` (calibration,
exclusions), with the fp16 high precision and the tensorrt target derived here, never written into it.

Everything up to the engine build runs on any machine (and is tested in CI); the build itself needs
an NVIDIA GPU with TensorRT. Engines only run where they were built, so each manifest records the
TensorRT version, GPU name and compute capability.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from quantization.base import Quantizer
from quantization.ModelOpt.modelopt_quantizer import ModelOptQuantizer
from quantization.run_config import RunConfig
from quantization.TensorRT.qdq_check import QdqReport, require_valid_qdq
from utils.artifacts import Artifact, build_manifest, write_artifact, write_bytes
from utils.data import CalibrationSet
from utils.errors import ToolchainUnavailable
from utils.hardware import cuda_summary, tensorrt_unavailable_reason
from utils.models import LoadedModel

log = logging.getLogger(__name__)


class _TensorRTQdq(ModelOptQuantizer):
    """ModelOpt int8 (the ``modelopt`` section's calibration and exclusions) with fp16 high precision, written
    beside the engines."""

    folder = "tensorrt"
    runtimes = ("tensorrt", "onnxruntime_reference")  # the reference: the closest CPU estimate of TensorRT

    def high_precision_dtype(self) -> str:
        return "fp16"  # TensorRT runs the unquantized parts in fp16; the CPU runtimes' fp32 would only be slower


class TensorRTQuantizer(Quantizer):
    toolchain = "tensorrt"
    folder = "tensorrt"
    section = "tensorrt"
    runtimes = ("tensorrt",)
    runs_by_default = True

    def __init__(self, cfg: RunConfig):
        if cfg.target not in ("auto", "tensorrt"):
            log.warning("toolchain tensorrt builds for --target tensorrt (8-bit weights, never the CPU overflow "
                        "fix); --target %s ignored for it", cfg.target)
        cfg = dataclasses.replace(cfg, target="tensorrt")
        super().__init__(cfg)
        self.qdq = _TensorRTQdq(cfg)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return tensorrt_unavailable_reason() or ModelOptQuantizer.unavailable_reason()

    def settings(self) -> dict[str, Any]:
        t = self.options
        return {"mode": "explicit Q/DQ" if not t.calibrator else f"legacy implicit ({t.calibrator})",
                "calibration_method": self.qdq.options.calibration_method, "strongly_typed": not t.calibrator,
                "profile_batches": [1, t.opt_batch, t.max_batch], "workspace_gib": t.workspace_gib}

    # ------------------------------------------------------------------ runs anywhere
    def qdq_onnx(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[Artifact, QdqReport]:
        """The Q/DQ ONNX TensorRT builds from, checked against TensorRT's rules."""
        artifact = self.qdq.quantize(model, calibration)
        report = require_valid_qdq(artifact.path, artifact.manifest["settings"].get("nodes_excluded"))
        log.info("Q/DQ check passed: %d layers INT8, %d left in high precision", len(report.quantized_layers),
                 len(report.float_layers))
        return artifact, report

    # ------------------------------------------------------------------ needs TensorRT
    def _require(self) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise ToolchainUnavailable(f"TensorRT engine build cannot run here: {reason}")

    def _write_engine(self, model: LoadedModel, onnx_path: Path, tag: str, precision: str,
                      calibrator: Any = None, calibration_ids: list[str] | None = None) -> Artifact:
        import tensorrt as trt

        from quantization.onnx_export import onnx_input_names
        from quantization.TensorRT.engine_builder import EngineSpec, build_engine

        t = self.cfg.tensorrt
        spec = EngineSpec(onnx_path, onnx_input_names(onnx_path)[0], tuple(model.input_shape),
                          opt_batch=t.opt_batch, max_batch=t.max_batch, workspace_gib=t.workspace_gib)
        start = time.perf_counter()
        plan = build_engine(spec, calibrator=calibrator)
        cuda = cuda_summary()
        manifest = build_manifest(
            name=f"{model.arch} trt_{tag}", toolchain=self.toolchain if precision != "fp32" else "tensorrt",
            kind="trt_plan", precision=precision, settings={**self.settings(), "source_onnx": str(onnx_path)},
            source_weights=model.weights_path, calibration_ids=calibration_ids,
            extra={**self.model_facts(model), "tensorrt_version": trt.__version__, "gpu": cuda.get("name"),
                   "compute_capability": cuda.get("compute_capability"),
                   "quantize_seconds": round(time.perf_counter() - start, 2)})
        final = self.output_dir() / f"{self.artifact_stem(model, tag)}.plan"
        return write_artifact(final, lambda tmp: write_bytes(tmp, plan), manifest, toolchain=self.toolchain,
                              kind="trt_plan", precision=precision)

    def export_fp32(self, model: LoadedModel) -> Artifact:
        self._require()
        return self._write_engine(model, self.qdq.export_fp32(model).path, "fp32", "fp32")

    def extra_artifacts(self, model: LoadedModel) -> list[Artifact]:
        if "fp16" not in self.cfg.tensorrt.precisions:
            return []
        self._require()
        from quantization.TensorRT.engine_builder import autocast_fp16

        fp32_onnx = self.qdq.export_fp32(model).path
        fp16_onnx = autocast_fp16(fp32_onnx, fp32_onnx.with_name(fp32_onnx.stem + "_fp16.onnx"))
        return [self._write_engine(model, fp16_onnx, "fp16", "fp16")]

    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        t = self.cfg.tensorrt
        if t.calibrator:
            self._require()
            from quantization.TensorRT.engine_builder import make_legacy_calibrator

            cache = self.output_dir() / f"{self.artifact_stem(model, 'calib')}_{t.calibrator}.cache"
            size = self.calibration_batch_size()
            calibrator = make_legacy_calibrator(t.calibrator, lambda: calibration.batches(size), size, cache)
            return self._write_engine(model, self.qdq.export_fp32(model).path, f"int8_legacy_{t.calibrator}",
                                      "int8", calibrator, calibration.ids)
        qdq, _ = self.qdq_onnx(model, calibration)
        self._require()
        return self._write_engine(model, qdq.path, "int8_qdq", "int8", calibration_ids=calibration.ids)
