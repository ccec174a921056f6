"""``ModelOpt_PTQ.py``: FP32 ONNX -> INT8 Q/DQ ONNX with ModelOpt (or ONNX Runtime's quantize_static)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from quantization.cli import build_parser as _build_parser
from quantization.cli import quantize_main
from utils import cli
from utils.config import RunConfig

DESCRIPTION = """INT8 post-training quantization of an ONNX export.
  --engine modelopt  nvidia-modelopt ONNX PTQ: int8, max/entropy calibration, Q/DQ placed as TensorRT
                     wants it (runs ~2x faster than FP32 on OpenVINO, slower on ORT's CPU EP)
  --engine ort       onnxruntime quantize_static, QDQ, u8 activations x s8 per-channel weights
Writes the FP32 ONNX into models/onnx/ and the Q/DQ ONNX into models/modelopt/, with manifests."""


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("ModelOpt_PTQ.py", DESCRIPTION, cli.add_modelopt_args)


def toolchain_for(cfg: RunConfig) -> str:
    return "ort" if cfg.modelopt.engine == "ort" else "modelopt"


def main(argv: Sequence[str] | None = None) -> int:
    return quantize_main(argv, build_parser(), toolchain_for)
