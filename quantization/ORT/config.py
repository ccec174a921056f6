"""ONNX Runtime quantize_static's settings (``ort:`` in a recipe) and its flags. Light on purpose (no
onnxruntime import): every parser and every run config is built from it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from quantization.onnx_config import add_exclusion_args
from utils.cli import option, section_group
from utils.config import Section, choice


@dataclass(slots=True)
class OrtQuantConfig:
    """ONNX Runtime ``quantize_static`` (QDQ)."""

    calibration_method: str = choice("minmax", "entropy", "percentile")
    granularity: str = choice("per_channel", "per_tensor")  # weight scales
    activation_type: str = choice("auto", "uint8", "int8")  # auto: uint8, what x86 integer kernels take
    exclude_nodes: list[str] = field(default_factory=list)  # regexes of node names kept float
    exclude_op_types: list[str] = field(default_factory=list)
    # auto = 7 where the target's u8 x s8 kernels add pairs in 16 bits (x86-avx2), else 8: reduce_range=True
    weight_bits: str | int = choice("auto", "7", "8")


def add_ort_args(parser: argparse.ArgumentParser) -> None:
    g = section_group(parser, "ONNX Runtime quantize_static (QDQ)", SECTION)
    option(g, "--ort-calibration-method", "ort.calibration_method", "ORT calibrator")
    option(g, "--ort-granularity", "ort.granularity", "ORT weight scales")
    option(g, "--activation-type", "ort.activation_type", "ORT activation dtype (auto: uint8, what x86 integer "
           "kernels take)")
    add_exclusion_args(g, "ort-", "ort")
    option(g, "--ort-weight-bits", "ort.weight_bits", "auto = 7 for a --target whose u8 x s8 kernels add pairs "
           "in 16 bits (x86-avx2: quantize_static's reduce_range), else 8")


SECTION = Section("ort", OrtQuantConfig, add_ort_args)
