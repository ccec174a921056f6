"""TensorRT engine builds from ONNX, written against NVIDIA's documented Python API (TensorRT 10 and 11).

- INT8: the Q/DQ ONNX (explicit quantization) parsed into a strongly typed network; the Q/DQ nodes
  alone decide what runs in INT8.
- FP16: the FP32 ONNX converted by ModelOpt AutoCast (``modelopt.onnx.autocast``), then built
  strongly typed: TensorRT 11 removed ``BuilderFlag.FP16``, and this path works on 10 and 11 alike.
- FP32: the FP32 ONNX, strongly typed.
- Legacy implicit INT8 (``--calibrator entropy|minmax``): only where the installed TensorRT still has
  ``BuilderFlag.INT8`` and the ``IInt8*Calibrator`` classes (TensorRT 10 and older, e.g. JetPack 6);
  TensorRT 11 removed both. Deprecated by NVIDIA; kept for Jetson users of the original suite.

None of this has run in this project: no machine here has a GPU with TensorRT (docs/tensorrt.md).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.errors import SuiteError

log = logging.getLogger(__name__)


@dataclass
class EngineSpec:
    """One engine build; the batch profile and workspace come from ``TensorRTConfig`` (their one default)."""

    onnx_path: Path
    input_name: str
    input_shape: tuple[int, int, int]  # C, H, W
    opt_batch: int
    max_batch: int
    workspace_gib: float
    min_batch: int = 1


def tensorrt_major() -> int:
    import tensorrt as trt

    return int(trt.__version__.split(".")[0])


def has_implicit_int8() -> bool:
    """True where BuilderFlag.INT8 and the calibrators still exist (TensorRT <= 10)."""
    import tensorrt as trt

    return hasattr(trt.BuilderFlag, "INT8") and hasattr(trt, "IInt8EntropyCalibrator2")


def _network(builder: Any, strongly_typed: bool) -> Any:
    import tensorrt as trt

    flags = 0
    if strongly_typed and tensorrt_major() < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # always on in TensorRT 11
    return builder.create_network(flags)


def _parse(network: Any, logger: Any, path: Path) -> None:
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if not parser.parse(path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SuiteError(f"TensorRT cannot parse {path.name}: {errors[:300]}")


def _profile(builder: Any, spec: EngineSpec) -> Any:
    profile = builder.create_optimization_profile()
    c, h, w = spec.input_shape
    profile.set_shape(spec.input_name, (spec.min_batch, c, h, w), (spec.opt_batch, c, h, w), (spec.max_batch, c, h, w))
    return profile


def build_engine(spec: EngineSpec, *, calibrator: Any | None = None) -> bytes:
    """Serialized engine bytes of ``spec.onnx_path``; ``calibrator`` selects the legacy implicit INT8 path."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _network(builder, strongly_typed=calibrator is None)
    _parse(network, logger, spec.onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_gib * 2**30))
    profile = _profile(builder, spec)
    config.add_optimization_profile(profile)
    if calibrator is not None:
        if not has_implicit_int8():
            raise SuiteError(f"TensorRT {trt.__version__} has no implicit INT8 calibration (removed in 11): "
                             "drop --calibrator and use the Q/DQ (explicit) flow")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
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


def make_legacy_calibrator(kind: str, batches: Callable[[], Iterator[Any]], batch_size: int, cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator over torch CUDA tensors, with a cache file."""
    import tensorrt as trt
    import torch

    base = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}.get(kind)
    if base is None:
        raise SuiteError(f"--calibrator must be entropy or minmax (got {kind})")

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._iter = batches()
            self._current: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._iter, None)
            if batch is None:
                return None
            self._current = batch.to("cuda", torch.float32).contiguous()
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()
