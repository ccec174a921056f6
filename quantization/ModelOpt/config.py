"""ModelOpt's settings (``modelopt:`` in a recipe) and its flags; the TensorRT toolchain's Q/DQ step reads
them too. Light on purpose (no modelopt import): every parser and every run config is built from it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from quantization.onnx_config import add_exclusion_args
from utils.cli import csv_list, option, section_group
from utils.config import Section, choice


@dataclass(slots=True)
class ModelOptQuantConfig:
    """NVIDIA ModelOpt ONNX PTQ (also the TensorRT toolchain's Q/DQ step, which derives fp16 itself)."""

    calibration_method: str = choice("max", "entropy")
    calibration_eps: list[str] | None = None  # ModelOpt's calibration providers (default: what this machine has)
    exclude_nodes: list[str] = field(default_factory=list)  # regexes of node names kept float
    exclude_op_types: list[str] = field(default_factory=list)
    high_precision_dtype: str = choice("fp32", "fp16")  # fp32 for CPU runtimes, fp16 for TensorRT
    # auto = 7 where the target's u8 x s8 kernels add pairs in 16 bits (x86-avx2), else 8: weights re-gridded
    # with doubled scales (NNCF's fix)
    weight_bits: str | int = choice("auto", "7", "8")


def add_modelopt_args(parser: argparse.ArgumentParser) -> None:
    g = section_group(parser, "ModelOpt ONNX PTQ (also the TensorRT toolchain's Q/DQ step)", SECTION)
    option(g, "--calibration-method", "modelopt.calibration_method", "ModelOpt int8 calibration")
    option(g, "--calibration-eps", "modelopt.calibration_eps", "ModelOpt calibration execution providers, "
           "e.g. cpu or trt,cuda:0,cpu (none: what this machine has)", type=csv_list())
    add_exclusion_args(g, "", "modelopt")
    option(g, "--high-precision-dtype", "modelopt.high_precision_dtype", "dtype of the non-quantized parts: "
           "fp32 for CPU runtimes (the TensorRT toolchain always uses fp16)")
    option(g, "--modelopt-weight-bits", "modelopt.weight_bits", "auto = 7 for a --target whose u8 x s8 kernels "
           "add pairs in 16 bits (x86-avx2: weights re-gridded with doubled scales), else 8")


SECTION = Section("modelopt", ModelOptQuantConfig, add_modelopt_args)
