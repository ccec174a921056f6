"""The TensorRT toolchain: FP32 ONNX -> Q/DQ ONNX (ModelOpt, fp16 high precision) -> checked -> engines.

Its own settings are ``cfg.tensorrt``; the Q/DQ step is ModelOpt's and reads ``cfg.modelopt`` (calibration,
exclusions), with the fp16 high precision and the tensorrt target derived here, never written into it.

Everything up to the engine build runs on any machine (and is tested in CI); the build itself needs
an NVIDIA GPU with TensorRT. Engines only run where they were built, so each manifest records the
TensorRT version, GPU name and compute capability. The settings are checked when the quantizer is made
(:mod:`quantization.TensorRT.plan`), so a bad profile or a calibrator this TensorRT lacks stops before any work.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantization.base import Quantizer
from quantization.ModelOpt.modelopt_quantizer import ModelOptQuantizer
from quantization.run_config import RunConfig
from quantization.TensorRT import plan
from quantization.TensorRT.qdq_check import QdqReport, require_valid_qdq
from utils.artifacts import Artifact, build_manifest, ids_sha256, load_artifact, sha256_file, write_artifact, write_bytes
from utils.data import CalibrationSet
from utils.errors import SuiteError, ToolchainUnavailable
from utils.hardware import cuda_summary, tensorrt_unavailable_reason
from utils.models import LoadedModel

log = logging.getLogger(__name__)

#: the model facts an engine built from a Q/DQ ONNX takes over from that ONNX's manifest (what
#: ``Quantizer.model_facts`` writes), so ``--artifact`` can check and evaluate it like a local build
MODEL_FACT_KEYS = ("arch", "num_classes", "input_shape", "transforms", "graph_rewrites", "class_names", "preprocess",
                   "target", "target_requested", "calibration")


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
    accepts_onnx_model = True  # its Q/DQ step is ModelOpt's, on the --onnx input
    driver_only = ("a TensorRT engine is built for, and only runs on, the GPU and TensorRT of the machine that "
                   "builds it, and Ray tasks are given no GPU")

    def __init__(self, cfg: RunConfig):
        if cfg.target not in ("auto", "tensorrt"):
            log.warning("toolchain tensorrt builds for --target tensorrt (8-bit weights, never the CPU overflow "
                        "fix); --target %s ignored for it", cfg.target)
        cfg = dataclasses.replace(cfg, target="tensorrt")
        super().__init__(cfg)
        self.qdq = _TensorRTQdq(cfg)
        t = self.options
        self.profile = plan.batch_profile(t.opt_batch, t.max_batch)
        plan.check_precisions(t.precisions)
        unavailable = tensorrt_unavailable_reason()
        version = None if unavailable else self.installed_version()
        refusal = plan.opset_refusal(cfg.onnx.opset, version)
        if refusal:
            raise SuiteError(refusal)
        refusal = plan.implicit_int8_refusal(t.calibrator, version, unavailable)
        if refusal:
            raise ToolchainUnavailable(refusal)

    @staticmethod
    def installed_version() -> str:
        from quantization.TensorRT.engine_builder import installed_version

        version = installed_version()
        plan.require_supported(version)
        return version

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """TensorRT and a GPU only: ModelOpt is needed where a Q/DQ ONNX or an FP16 ONNX is made (it says so
        there), not to build from a Q/DQ ONNX made elsewhere or to evaluate an engine (a Jetson has no ModelOpt)."""
        return tensorrt_unavailable_reason()

    def settings(self) -> dict[str, Any]:
        t = self.options
        return {"mode": "explicit Q/DQ" if not t.calibrator else f"legacy implicit ({t.calibrator})",
                "calibration_method": self.qdq.options.calibration_method, "strongly_typed": not t.calibrator,
                "profile_batches": [self.profile.min, self.profile.opt, self.profile.max],
                "workspace_gib": t.workspace_gib}

    # ------------------------------------------------------------------ runs anywhere
    def reads_torch_model(self) -> bool:
        return self.qdq.reads_torch_model()

    def qdq_onnx(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[Artifact, QdqReport]:
        """The Q/DQ ONNX TensorRT builds from (one ModelOpt run), checked against TensorRT's rules."""
        artifact = self.qdq.quantize(model, calibration)
        report = require_valid_qdq(artifact.path, artifact.manifest["settings"].get("nodes_excluded"))
        log.info("Q/DQ check passed: %d layers INT8, %d left in high precision", len(report.quantized_layers),
                 len(report.float_layers))
        return artifact, report

    @staticmethod
    def checked_qdq_file(path: Path) -> tuple[Artifact, QdqReport]:
        """A Q/DQ ONNX made earlier (on another machine): its manifest must be beside it, and it is checked again."""
        artifact = load_artifact(Path(path))
        if artifact.kind != "onnx_qdq":
            raise SuiteError(f"{path}: a {artifact.kind} artifact, not a Q/DQ ONNX (onnx_qdq)")
        return artifact, require_valid_qdq(artifact.path, artifact.manifest.get("settings", {}).get("nodes_excluded"))

    # ------------------------------------------------------------------ needs TensorRT
    def require_tensorrt(self) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise ToolchainUnavailable(f"TensorRT engine build cannot run here: {reason}")

    def _engine_manifest(self, *, name: str, precision: str, source_onnx: Path, facts: dict[str, Any],
                         source_weights: Path | None, calibration_ids: list[str] | None,
                         extra: dict[str, Any], settings: dict[str, Any] | None = None) -> dict[str, Any]:
        cuda = cuda_summary()
        return build_manifest(
            name=name, toolchain=self.toolchain, kind="trt_plan", precision=precision,
            settings={**(settings or self.settings()), "source_onnx": str(source_onnx),
                      "source_onnx_sha256": sha256_file(source_onnx)},
            source_weights=source_weights, calibration_ids=calibration_ids,
            extra={**facts, "gpu": cuda.get("name"), "compute_capability": cuda.get("compute_capability"), **extra})

    def _build(self, final: Path, spec_onnx: Path, chw: tuple[int, int, int], precision: str,
               manifest: Callable[[float], dict[str, Any]], calibrator: Any = None,
               calibration: plan.CalibrationPlan | None = None) -> Artifact:
        from quantization.onnx_export import onnx_input_names
        from quantization.TensorRT.engine_builder import EngineSpec, build_engine

        t = self.cfg.tensorrt
        spec = EngineSpec(spec_onnx, onnx_input_names(spec_onnx)[0], chw, self.profile, t.workspace_gib, precision)
        start = time.perf_counter()
        engine = build_engine(spec, calibrator=calibrator, calibration=calibration)
        return write_artifact(final, lambda tmp: write_bytes(tmp, engine), manifest(time.perf_counter() - start),
                              toolchain=self.toolchain, kind="trt_plan", precision=precision)

    def _write_engine(self, model: LoadedModel, onnx_path: Path, tag: str, precision: str, calibrator: Any = None,
                      calibration_ids: list[str] | None = None, calibration: plan.CalibrationPlan | None = None) -> Artifact:
        version = self.installed_version()

        def manifest(seconds: float) -> dict[str, Any]:
            return self._engine_manifest(name=f"{model.arch} trt_{tag}", precision=precision, source_onnx=onnx_path,
                                         facts=self.model_facts(model), source_weights=model.weights_path,
                                         calibration_ids=calibration_ids,
                                         extra={"tensorrt_version": version, "quantize_seconds": round(seconds, 2)})
        final = self.output_dir() / f"{self.artifact_stem(model, tag)}.plan"
        return self._build(final, onnx_path, tuple(model.input_shape), precision, manifest, calibrator, calibration)

    def export_fp32(self, model: LoadedModel) -> Artifact:
        self.require_tensorrt()
        return self._write_engine(model, self.qdq.export_fp32(model).path, "fp32", "fp32")

    def extra_artifacts(self, model: LoadedModel) -> list[Artifact]:
        if "fp16" not in self.cfg.tensorrt.precisions:
            return []
        self.require_tensorrt()
        reason = ModelOptQuantizer.unavailable_reason()
        if reason:
            raise ToolchainUnavailable(f"the FP16 engine's ONNX comes from ModelOpt AutoCast: {reason} "
                                       "(or leave fp16 out of --precisions)")
        from quantization.TensorRT.engine_builder import autocast_fp16

        fp32_onnx = self.qdq.export_fp32(model).path
        fp16_onnx = autocast_fp16(fp32_onnx, fp32_onnx.with_name(fp32_onnx.stem + "_fp16.onnx"))
        return [self._write_engine(model, fp16_onnx, "fp16", "fp16")]

    def int8_engine(self, model: LoadedModel, qdq: Artifact) -> Artifact:
        """The explicitly quantized engine of a Q/DQ ONNX already written and checked (no second ModelOpt run)."""
        self.require_tensorrt()
        return self._write_engine(model, qdq.path, "int8_qdq", "int8", calibration_ids=qdq.manifest.get(
            "calibration_sample_ids") or None)

    def legacy_source_onnx(self, model: LoadedModel) -> Path:
        """The FP32 ONNX the legacy calibrator builds from: the (transformed) model's own export, the one
        its engine's name says (a --cle model's engine from the --cle export, not the plain one)."""
        return self.qdq.source_onnx(model).path

    def legacy_engine(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        """Implicit INT8 with a TensorRT 10 calibrator (refused on 11 when the quantizer was made)."""
        from quantization.TensorRT.engine_builder import make_legacy_calibrator

        self.require_tensorrt()
        t = self.cfg.tensorrt
        source = self.legacy_source_onnx(model)
        steps = plan.calibration_plan(len(calibration.ids), t.opt_batch)
        cache = self.output_dir() / plan.calibration_cache_name(self.artifact_stem(model, "calib"), t.calibrator,
                                                                sha256_file(source) or "", ids_sha256(calibration.ids),
                                                                steps.step)
        cache.parent.mkdir(parents=True, exist_ok=True)
        calibrator = make_legacy_calibrator(t.calibrator, lambda: calibration.batches(steps.step), steps, cache)
        return self._write_engine(model, source, f"int8_legacy_{t.calibrator}", "int8", calibrator, calibration.ids,
                                  steps)

    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        if self.cfg.tensorrt.calibrator:
            return self.legacy_engine(model, calibration)
        qdq, _ = self.qdq_onnx(model, calibration)
        return self.int8_engine(model, qdq)

    # ------------------------------------------------------------------ the other-machine path (Jetson)
    def _facts_of(self, qdq: Artifact) -> tuple[dict[str, Any], Path | None, list[str] | None]:
        m = qdq.manifest
        facts = {k: m[k] for k in MODEL_FACT_KEYS if k in m}
        facts["source_weights_sha256"] = m.get("source_weights_sha256")  # the weights may not be on this machine
        facts["recommended_runtime"] = self.runtimes[0]
        weights = Path(m["source_weights"]) if m.get("source_weights") else None
        return facts, weights, m.get("calibration_sample_ids") or None

    def engine_from_qdq_file(self, qdq: Artifact) -> Artifact:
        """The INT8 engine of a checked Q/DQ ONNX made elsewhere, named after it (``<its stem>.plan``); no
        ModelOpt, no ONNX Runtime, no model or data on this machine."""
        self.require_tensorrt()
        version = self.installed_version()
        facts, weights, ids = self._facts_of(qdq)

        def manifest(seconds: float) -> dict[str, Any]:
            return self._engine_manifest(name=f"{facts.get('arch', qdq.path.stem)} trt_int8_qdq", precision="int8",
                                         source_onnx=qdq.path, facts=facts, source_weights=weights,
                                         calibration_ids=ids, extra={"tensorrt_version": version,
                                                                     "quantize_seconds": round(seconds, 2)})
        chw = tuple(facts["input_shape"]) if "input_shape" in facts else None
        if chw is None or len(chw) != 3:
            raise SuiteError(f"{qdq.path.name}: its manifest has no C,H,W input_shape to build the profile from")
        return self._build(self.output_dir() / f"{qdq.path.stem}.plan", qdq.path, chw, "int8", manifest)

    def adopt_engine(self, engine: Path, qdq: Artifact) -> Artifact:
        """Give an engine built elsewhere from ``qdq`` (e.g. ``trtexec --onnx=... --stronglyTyped``) a manifest,
        as a copy in models/tensorrt/, so ``--artifact`` checks and evaluates it like a local build.

        Where TensorRT is installed the engine must deserialize here (it only runs on the GPU and TensorRT it
        was built for); elsewhere the runner checks that when it loads the engine."""
        engine = Path(engine)
        if not engine.is_file():
            raise SuiteError(f"--adopt-engine {engine}: no such file")
        data = engine.read_bytes()
        version = None
        if tensorrt_unavailable_reason() is None:
            version = self.installed_version()
            from evaluation.pipelines.tensorrt_runner import deserialize

            deserialize(data, str(engine))
        facts, weights, ids = self._facts_of(qdq)
        manifest = self._engine_manifest(
            name=f"{facts.get('arch', engine.stem)} trt_int8_adopted", precision="int8", source_onnx=qdq.path,
            facts=facts, source_weights=weights, calibration_ids=ids,
            settings={"mode": "adopted engine (built elsewhere from the Q/DQ ONNX)", "adopted_from": str(engine)},
            extra={"tensorrt_version": version, "deserialized_at_adoption": version is not None})
        final = self.output_dir() / f"{qdq.path.stem}_adopted.plan"
        return write_artifact(final, lambda tmp: write_bytes(tmp, data), manifest, toolchain=self.toolchain,
                              kind="trt_plan", precision="int8")
