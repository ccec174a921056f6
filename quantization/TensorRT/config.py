"""TensorRT's settings (``tensorrt:`` in a recipe) and its flags; its Q/DQ ONNX comes from ModelOpt, whose
section and flags set it. Light on purpose (no tensorrt import): every parser and every run config is built
from it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from utils.cli import csv_list, option, section_group
from utils.config import Section, choice


@dataclass(slots=True)
class TensorRTConfig:
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16", "int8"])
    calibrator: str | None = choice("entropy", "minmax", optional=True)  # legacy implicit INT8 (TensorRT <= 10)
    workspace_gib: float = 4.0
    max_batch: int = 64
    opt_batch: int = 16


def add_tensorrt_args(parser: argparse.ArgumentParser) -> None:
    g = section_group(parser, "TensorRT (its Q/DQ ONNX comes from ModelOpt: the ModelOpt flags set it)", SECTION)
    option(g, "--precisions", "tensorrt.precisions", "engines to build beside the Q/DQ INT8 one (fp32 is the "
           "reference)", type=csv_list())
    option(g, "--calibrator", "tensorrt.calibrator", "LEGACY implicit INT8 (TensorRT <= 10, e.g. JetPack 6): "
           "a calibrator with a cache, instead of the Q/DQ flow")
    option(g, "--workspace-gib", "tensorrt.workspace_gib", "builder workspace memory pool", type=float)
    option(g, "--opt-batch", "tensorrt.opt_batch", "batch size the engine is tuned for", type=int)
    option(g, "--max-batch", "tensorrt.max_batch", "largest batch size the engine accepts", type=int)


SECTION = Section("tensorrt", TensorRTConfig, add_tensorrt_args)
