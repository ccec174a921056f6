"""What this machine can run fast: CPU integer-dot-product ISA and CUDA devices.

INT8 speed and even INT8 accuracy depend on the CPU (AVX2 without VNNI saturates 16-bit sums in
u8 x s8 kernels), so every manifest and report records these flags.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

_ISA_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx_int8": "amx_int8",
    "amx_tile": "amx_tile",
    "avx512_bf16": "avx512_bf16",
    "amx_bf16": "amx_bf16",
}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> dict[str, bool]:
    flags = cpu_flags()
    return {name: flag in flags for name, flag in _ISA_FLAGS.items()}


def has_int8_dot_product() -> bool:
    """True where u8 x s8 dot products accumulate in 32 bits (VNNI/AMX) and cannot saturate."""
    isa = cpu_isa()
    return isa["avx512_vnni"] or isa["avx_vnni"] or isa["amx_int8"]


def has_amx_int8() -> bool:
    """True on CPUs with AMX tiles for int8 (Sapphire Rapids and later Xeons): the x86-amx class."""
    return cpu_isa()["amx_int8"]


def native_bf16_reason() -> str | None:
    """None where this CPU computes BF16 natively (AVX512-BF16 or AMX-BF16), else why BF16 rows are skipped.

    Without either, OpenVINO and oneDNN emulate BF16 through FP32 (slower than FP32, with BF16's rounding), so a
    BF16 row there would measure an emulation nobody deploys."""
    isa = cpu_isa()
    if isa["amx_bf16"] or isa["avx512_bf16"]:
        return None
    return "this CPU has neither AMX-BF16 nor AVX512-BF16 (BF16 would be emulated in FP32, slower than FP32)"


def has_cuda_gpu() -> bool:
    """Whether a CUDA device is usable here: the one answer to "is there a GPU" (onnxruntime-gpu lists its
    CUDA providers even on a machine without one, so package presence says nothing)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a base requirement
        return False
    return torch.cuda.is_available()


def cuda_summary() -> dict[str, Any]:
    if not has_cuda_gpu():
        return {"available": False}
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        "available": True,
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
    }


def hardware_summary() -> dict[str, Any]:
    return {
        "cpu": cpu_model_name(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "isa": cpu_isa(),
        "int8_dot_product": has_int8_dot_product(),
        "native_bf16": native_bf16_reason() is None,
        "cuda": cuda_summary(),
    }


def tensorrt_unavailable_reason() -> str | None:
    """One line saying why TensorRT cannot run here, or None (the TensorRT quantizer and runner both ask)."""
    from utils.errors import missing_package
    from utils.packages import has_module

    if not has_cuda_gpu():
        return "no CUDA device"
    if not has_module("tensorrt"):
        return str(missing_package("TensorRT", "tensorrt", "requirements/tensorrt.txt on a GPU host"))
    return None
