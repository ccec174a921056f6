"""Deployment targets: the machine class an INT8 artifact is built for, not the one it is built on.

INT8 accuracy belongs to (artifact, runtime, CPU ISA). On x86 CPUs without VNNI (AVX2 + FMA only),
the u8 x s8 kernels of FBGEMM, ONNX Runtime's MLAS and oneDNN/OpenVINO multiply pairs of 8-bit
values and add each pair into a saturating 16-bit lane (``vpmaddubsw``): 255 x 127 x 2 = 64,770
does not fit in 32,767, so full-range weights against full-range activations clip. VNNI/AMX
accumulate in 32 bits and never clip; FBGEMM's depthwise kernel adds pairs in 16 bits on every x86
CPU. Each toolchain derives its saturation-safe scheme from the target (7-bit weights, |w| <= 64,
keep every pair sum within 255 x 64 x 2 = 32,640), so a user can build on a VNNI server for an
AVX2 edge box, and every manifest and report names the target it was built for.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass

from utils.errors import SuiteError

#: the largest |int16| a pair sum may reach before it clips
INT16_MAX = 32767


@dataclass(frozen=True)
class Target:
    """A class of deployment machine and what its INT8 kernels do with pair sums."""

    name: str
    description: str
    #: u8 x s8 GEMM/conv kernels add pairs of products in saturating 16-bit lanes (AVX2 without VNNI)
    pair_sums_saturate: bool
    #: FBGEMM's depthwise conv kernel adds pairs in 16 bits even where its GEMMs accumulate in 32 bits
    fbgemm_depthwise_saturates: bool
    #: a CPU target (the ONNX toolchains' CPU overflow fix applies); TensorRT is a GPU target
    cpu: bool = True

    def weight_bits(self, asked: str | int = "auto", fbgemm_depthwise: bool = False) -> int:
        """The weight bits of an INT8 artifact for this target, for every toolchain: ``asked`` (7 or 8) where
        given; ``auto``: 7 where the kernels add u8 x s8 pairs in saturating 16-bit lanes (the overflow fix: half
        the weight levels keep 2 x 255 x 64 in int16), else 8. ``fbgemm_depthwise``: the layer runs on FBGEMM's
        depthwise kernel, which adds pairs in 16 bits even where the GEMMs accumulate in 32 bits."""
        if str(asked) != "auto":
            return int(asked)
        saturates = self.pair_sums_saturate or (fbgemm_depthwise and self.fbgemm_depthwise_saturates)
        return 7 if saturates else 8

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description,
                "pair_sums_saturate": self.pair_sums_saturate,
                "fbgemm_depthwise_saturates": self.fbgemm_depthwise_saturates, "cpu": self.cpu}


TARGETS: dict[str, Target] = {
    "x86-amx": Target("x86-amx", "x86-64 with AMX-INT8 tiles (Sapphire Rapids and later Xeons; 32-bit int8 dot "
                      "products, BF16 natively)", pair_sums_saturate=False, fbgemm_depthwise_saturates=True),
    "x86-vnni": Target("x86-vnni", "x86-64 with AVX-512 VNNI or AVX-VNNI, no AMX (32-bit int8 dot products)",
                       pair_sums_saturate=False, fbgemm_depthwise_saturates=True),
    "x86-avx2": Target("x86-avx2", "x86-64 with AVX2 + FMA and no VNNI (16-bit pair sums in u8 x s8 kernels)",
                       pair_sums_saturate=True, fbgemm_depthwise_saturates=True),
    "arm64": Target("arm64", "64-bit Arm (NEON / SDOT: products widen to 32 bits, e.g. Jetson Orin's CPU)",
                    pair_sums_saturate=False, fbgemm_depthwise_saturates=False),
    "tensorrt": Target("tensorrt", "NVIDIA GPU through TensorRT (IMMA/DP4A accumulate in 32 bits)",
                       pair_sums_saturate=False, fbgemm_depthwise_saturates=False, cpu=False),
}
TARGET_CHOICES = ("auto", *TARGETS)


def this_machine_target() -> Target:
    """The target class of the CPU this process runs on (read from its flags, see utils.hardware)."""
    from utils.hardware import has_amx_int8, has_int8_dot_product

    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return TARGETS["arm64"]
    if has_amx_int8():
        return TARGETS["x86-amx"]
    return TARGETS["x86-vnni" if has_int8_dot_product() else "x86-avx2"]


def resolve_target(name: str | None) -> Target:
    """``auto`` (or None) is this machine's CPU; any other name must be a known target."""
    if name in (None, "auto"):
        return this_machine_target()
    if not isinstance(name, str) or name not in TARGETS:
        raise SuiteError(f"unknown --target '{name}' (known: {', '.join(TARGET_CHOICES)})")
    return TARGETS[name]
