"""What every ONNX toolchain (modelopt, ort, tensorrt) shares: the FP32 export settings (``onnx:`` in a recipe)
and their flags, and the two exclusion flags each ONNX toolchain has in its own section. Light on purpose."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from utils.cli import csv_list, option, section_group
from utils.config import Section


@dataclass(slots=True)  # slots, here and in the toolchain sections: a stale key (cfg.modelopt.granularity) fails
class OnnxConfig:
    """What every ONNX toolchain (modelopt, ort, tensorrt) shares: the FP32 export and the calibration input."""

    opset: int = 17
    onnx_path: str | None = None  # start from this FP32 ONNX instead of exporting the model
    calibration_data: str | None = None  # .npz keyed by input name instead of the seeded sample


def add_onnx_args(parser: argparse.ArgumentParser) -> None:
    g = section_group(parser, "ONNX export and calibration input (modelopt, ort, tensorrt)", SECTION)
    option(g, "--opset", "onnx.opset", "ONNX opset of the FP32 export (17 or newer)", type=int)
    option(g, "--onnx", "onnx.onnx_path", "start from this FP32 ONNX instead of exporting the model")
    option(g, "--calibration-data", "onnx.calibration_data", ".npz of calibration arrays keyed by the "
           "model's input name (none: the seeded calibration sample)")


def add_exclusion_args(g: argparse._ArgumentGroup, flag_prefix: str, section: str) -> None:
    """The nodes an ONNX toolchain keeps in float: the same two flags for each, into its own section."""
    option(g, f"--{flag_prefix}exclude-nodes", f"{section}.exclude_nodes", "regexes (re.match) of node names to "
           "keep in float, comma-separated", type=csv_list())
    option(g, f"--{flag_prefix}exclude-op-types", f"{section}.exclude_op_types", "op types to keep in float, "
           "e.g. Gemm", type=csv_list())


SECTION = Section("onnx", OnnxConfig, add_onnx_args)
