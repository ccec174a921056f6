"""TensorRT engine builds from ONNX, written against NVIDIA's Python bindings (TensorRT 10 and 11).

- INT8: the Q/DQ ONNX (explicit quantization) parsed into a strongly typed network; the Q/DQ nodes
  alone decide what runs in INT8.
- FP16: the FP32 ONNX converted by ModelOpt AutoCast (``modelopt.onnx.autocast``), then built
  strongly typed: TensorRT 11 removed ``BuilderFlag.FP16``, and this path works on 10 and 11 alike.
- FP32: the FP32 ONNX, strongly typed, with TF32 cleared (the reference computes in real FP32).
- Legacy implicit INT8 (``--calibrator entropy|minmax``): TensorRT 10 only (11 removed it); refused
  before any work elsewhere (:func:`quantization.TensorRT.plan.implicit_int8_refusal`).

The decisions (profile, flags, calibration batches) are :mod:`quantization.TensorRT.plan`'s; this module
only carries them out. None of it has run in this project: no machine here has a GPU with TensorRT.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantization.TensorRT.plan import BatchProfile, CalibrationPlan, cleared_builder_flags, needs_strongly_typed_flag
from utils.errors import SuiteError

log = logging.getLogger(__name__)


@dataclass
class EngineSpec:
    """One engine build: the ONNX, its input, the batch profile (from ``plan.batch_profile``), the workspace."""

    onnx_path: Path
    input_name: str
    input_shape: tuple[int, int, int]  # C, H, W
    profile: BatchProfile
    workspace_gib: float
    precision: str  # fp32 | fp16 | int8: which builder flags to clear (plan.cleared_builder_flags)


@functools.cache
def trt_logger() -> Any:
    """The process's one ``trt.Logger``: TensorRT keeps a single logger per process (the first one a
    builder or runtime is created with), so the builder and every runner share this one."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def installed_version() -> str:
    import tensorrt as trt

    return str(trt.__version__)


def _network(builder: Any, strongly_typed: bool) -> Any:
    import tensorrt as trt

    flags = 0
    if strongly_typed and needs_strongly_typed_flag(trt.__version__):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def _parse(network: Any, path: Path) -> None:
    import tensorrt as trt

    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse(path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SuiteError(f"TensorRT cannot parse {path.name}: {errors[:300]}")


def _profile(builder: Any, name: str, chw: tuple[int, int, int], batches: BatchProfile) -> Any:
    profile = builder.create_optimization_profile()
    profile.set_shape(name, *batches.shapes(chw))
    return profile


def build_engine(spec: EngineSpec, *, calibrator: Any | None = None, calibration: CalibrationPlan | None = None) -> bytes:
    """Serialized engine bytes of ``spec.onnx_path``; ``calibrator`` (with its ``calibration`` plan) selects
    the legacy implicit INT8 path, which the caller has already checked this TensorRT still has."""
    import tensorrt as trt

    builder = trt.Builder(trt_logger())
    network = _network(builder, strongly_typed=calibrator is None)
    _parse(network, spec.onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_gib * 2**30))
    for flag in cleared_builder_flags(spec.precision):
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    config.add_optimization_profile(_profile(builder, spec.input_name, spec.input_shape, spec.profile))
    if calibrator is not None:
        if calibration is None:
            raise ValueError("a legacy calibrator needs its calibration plan")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.int8_calibrator = calibrator
        if not config.set_calibration_profile(_profile(builder, spec.input_name, spec.input_shape,
                                                       calibration.profile)):
            raise SuiteError(f"TensorRT refused the calibration profile (batch {calibration.step})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SuiteError(f"TensorRT failed to build an engine from {spec.onnx_path.name} (see its log above)")
    return bytes(serialized)


def autocast_fp16(fp32_onnx: Path, out: Path) -> Path:
    """FP16 ONNX for a strongly typed build (what TensorRT 11 wants instead of BuilderFlag.FP16)."""
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    model = convert_to_mixed_precision(onnx_path=str(fp32_onnx), low_precision_type="fp16", keep_io_types=True)
    onnx.save(model, str(out))
    return out


def make_legacy_calibrator(kind: str, batches: Callable[[], Iterator[Any]], plan: CalibrationPlan, cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator (TensorRT 10 only: the caller gates on the version)
    over torch CUDA tensors, each batch exactly ``plan.step`` images, with a cache file.

    A Python exception inside ``get_batch`` is printed and ends calibration silently (pyInt8.cpp catches
    it), so the batch sizes are checked against the plan before the build, not in the callback."""
    import tensorrt as trt
    import torch

    base = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}.get(kind)
    if base is None:
        raise SuiteError(f"--calibrator must be entropy or minmax (got {kind})")
    base_class = getattr(trt, base)

    class Calibrator(base_class):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base_class.__init__(self)
            self._iter = batches()
            self._current: torch.Tensor | None = None  # alive until the next get_batch: TensorRT reads it

        def get_batch_size(self) -> int:
            return plan.step

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._iter, None)
            if batch is None:
                return None
            self._current = batch.to("cuda", torch.float32).contiguous()
            torch.cuda.current_stream().synchronize()  # the copy is done before TensorRT reads on its stream
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()
