"""Every TensorRT decision as a pure function: testable on a machine without TensorRT or a GPU.

The engine builder and the runner ask these functions and only carry out the answer, so what a first
GPU run would hit (an inconsistent profile, a calibrator TensorRT 11 no longer has, a short calibration
batch, a stale calibration cache) is decided, and tested, here. Each rule names the TensorRT source it
was read from (docs/tensorrt.md lists the files and tags).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from utils.errors import SuiteError, ToolchainUnavailable

#: the engines the toolchain builds: fp32 (the reference) and int8 (the artifact) always, fp16 on request
PRECISIONS = ("fp32", "fp16", "int8")
#: the highest ONNX opset TensorRT's ONNX parser takes, per major version (11.x: NVIDIA's ONNX opset guide;
#: 10.x: the conservative bound of the 10.x support matrices; the suite exports opset 17 by default)
MAX_OPSET = {10: 20, 11: 25}
#: the TensorRT majors the suite's code is written for (the name-based I/O API; 8.x is not supported)
SUPPORTED_MAJORS = (10, 11)


def trt_major(version: str) -> int:
    """``"10.3.0.30"`` -> 10."""
    try:
        return int(version.split(".")[0])
    except ValueError as exc:
        raise SuiteError(f"cannot read the TensorRT version {version!r}") from exc


@dataclass(frozen=True)
class BatchProfile:
    """The batch dimension of an optimization profile (``IOptimizationProfile.set_shape``)."""

    min: int
    opt: int
    max: int

    def shapes(self, chw: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) NCHW shapes, in the order ``set_shape(input, min, opt, max)`` takes them."""
        return tuple((n, *chw) for n in (self.min, self.opt, self.max))  # type: ignore[return-value]


def batch_profile(opt_batch: int, max_batch: int, min_batch: int = 1) -> BatchProfile:
    """The engine's profile from ``--opt-batch`` / ``--max-batch``, refused unless min <= opt <= max.

    TensorRT requires ``0 <= min <= opt <= max`` per dimension (``NvInferRuntime.h``,
    ``IOptimizationProfile::setDimensions``); the Python ``set_shape`` raises "Shape provided for max is
    inconsistent" otherwise. trtexec fills a shape the user did not give from one they did, but never
    repairs an inconsistent one: the build fails. Here the opt batch always has a value (default 16), so an
    inconsistent pair is refused too, before any work, with the flag to change (no silent clamp: the
    engine is tuned for the opt batch, and a quietly different one would change every latency figure)."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise SuiteError(f"TensorRT profile batch min {min_batch} <= opt {opt_batch} <= max {max_batch} does not "
                         f"hold: give --opt-batch {min(opt_batch, max_batch)} with --max-batch {max_batch} "
                         "(TensorRT requires min <= opt <= max)")
    return BatchProfile(min_batch, opt_batch, max_batch)


def check_precisions(precisions: Sequence[str]) -> list[str]:
    """``--precisions`` values, each one of :data:`PRECISIONS` (fp32 and int8 are always built)."""
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise SuiteError(f"--precisions {','.join(unknown)}: unknown (choose from {', '.join(PRECISIONS)})")
    return list(precisions)


def implicit_int8_refusal(calibrator: str | None, version: str | None, unavailable: str | None) -> str | None:
    """Why the legacy ``--calibrator`` build cannot run (None: it can), decided before any work.

    ``version`` is the installed TensorRT's (None: not installed); ``unavailable`` why TensorRT cannot run
    here. The implicit INT8 path makes nothing without TensorRT (unlike the Q/DQ flow, whose ONNX is useful
    on its own), and TensorRT 11 removed ``BuilderFlag.INT8``, ``int8_calibrator`` and the
    ``IInt8*Calibrator`` classes (``pyInt8.cpp`` is gone at tag v11.1)."""
    if not calibrator:
        return None
    if unavailable:
        return f"--calibrator {calibrator} (legacy implicit INT8) needs TensorRT on a GPU: {unavailable}"
    if version is not None and trt_major(version) >= 11:
        return (f"--calibrator {calibrator}: TensorRT {version} has no implicit INT8 calibration (removed in 11); "
                "drop --calibrator to use the Q/DQ (explicit) flow")
    return None


def needs_strongly_typed_flag(version: str) -> bool:
    """TensorRT 10 builds strongly typed only with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11
    always does (the flag is deprecated there, "always enabled", pyCore.cpp at v11.1)."""
    return trt_major(version) < 11


def cleared_builder_flags(precision: str) -> tuple[str, ...]:
    """``BuilderFlag`` names to clear for an engine of ``precision``.

    TF32 is on by default (``NvInfer.h``: kTF32 "Enabled by default") and rounds FP32 inner products to
    10-bit mantissas on Ampere and later: the FP32 reference must clear it, or every drop is against TF32."""
    return ("TF32",) if precision == "fp32" else ()


def opset_refusal(opset: int, version: str | None) -> str | None:
    """Why TensorRT's ONNX parser would refuse an export of ``opset`` (None: it takes it). Without
    TensorRT here the 10.x bound applies: the engine is built elsewhere, JetPack 6 is TensorRT 10."""
    major = trt_major(version) if version else min(MAX_OPSET)
    limit = MAX_OPSET.get(major, MAX_OPSET[max(MAX_OPSET)])
    if opset > limit:
        return f"--opset {opset}: TensorRT {version or '10.x'}'s ONNX parser takes opsets up to {limit}"
    return None


@dataclass(frozen=True)
class CalibrationPlan:
    """The legacy calibrator's batches: every one exactly ``step`` images, together the whole sample."""

    step: int
    batches: tuple[tuple[int, int], ...]  # (start, stop) into the calibration sample

    @property
    def profile(self) -> BatchProfile:
        """The calibration profile: TensorRT calibrates at its opt batch (``setCalibrationProfile``: "MIN
        and MAX values will be overwritten by kOPT"), so opt is the step the calibrator feeds."""
        return BatchProfile(self.step, self.step, self.step)


def calibration_plan(sample_size: int, opt_batch: int) -> CalibrationPlan:
    """Equal batches of the largest divisor of the sample size up to the opt batch (300 images, opt 16: 15).

    TensorRT reads exactly opt-batch images from the pointer ``get_batch`` returns: a longer batch is
    half ignored, a short last one is read past its end. A divisor step feeds every image once, with no
    padding (zeros or repeats would change the ranges) and nothing dropped; the step is the ONNX
    toolchains' (:func:`quantization.onnx_quantizer.calibration_step`)."""
    from quantization.onnx_quantizer import calibration_step

    if sample_size < 1:
        raise SuiteError("the legacy calibrator needs at least one calibration image")
    step = calibration_step(sample_size, opt_batch)
    return CalibrationPlan(step, tuple((a, a + step) for a in range(0, sample_size, step)))


def calibration_cache_name(stem: str, calibrator: str, onnx_sha256: str, ids_sha256: str, step: int) -> str:
    """The cache file of one calibration: a cache is only reused for the same ONNX (sha256), the same
    calibration sample (its ids' digest), calibrator and batch step; anything else calibrates afresh."""
    return f"{stem}_{calibrator}_b{step}_onnx-{onnx_sha256[:12]}_ids-{ids_sha256[:12]}.cache"


def batch_refusal(batch: int, profile_max: int) -> str:
    """The line for a batch the engine's profile does not take (``set_input_shape`` returned False)."""
    return (f"batch {batch} is outside the engine's profile (max batch {profile_max}): rebuild with "
            f"--max-batch {batch} or larger, or evaluate with --batch-size {profile_max} or smaller")


def require_supported(version: str) -> None:
    """TensorRT 8.x and older (binding-index API) or an unknown future major: one line instead of a crash."""
    if trt_major(version) not in SUPPORTED_MAJORS:
        raise ToolchainUnavailable(f"TensorRT {version} is not supported (the suite runs on TensorRT "
                                   f"{' and '.join(map(str, SUPPORTED_MAJORS))})")
