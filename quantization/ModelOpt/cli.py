"""``ModelOpt_PTQ.py``: FP32 ONNX -> INT8 Q/DQ ONNX with ModelOpt (or ONNX Runtime's quantize_static)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from quantization.workflow import prepare, run_toolchain
from utils import cli
from utils.config import RunConfig

DESCRIPTION = """INT8 post-training quantization of an ONNX export.
  --engine modelopt  nvidia-modelopt ONNX PTQ: int8, max/entropy calibration, Q/DQ placed as TensorRT
                     wants it (runs ~2x faster than FP32 on OpenVINO, slower on ORT's CPU EP)
  --engine ort       onnxruntime quantize_static, QDQ, u8 activations x s8 per-channel weights
Writes the FP32 ONNX into models/onnx/ and the Q/DQ ONNX into models/modelopt/, with manifests."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ModelOpt_PTQ.py", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arg(parser)
    cli.add_model_args(parser)
    cli.add_data_args(parser)
    cli.add_calibration_args(parser)
    cli.add_modelopt_args(parser)
    cli.add_output_args(parser)
    return parser


def toolchain_for(cfg: RunConfig) -> str:
    return "ort" if cfg.modelopt.engine == "ort" else "modelopt"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = cli.config_from_args(args)
    fp32, int8, *_ = run_toolchain(toolchain_for(cfg), cfg, prepare(cfg))
    print(f"FP32 ONNX:      {fp32.path}\nINT8 Q/DQ ONNX: {int8.path}\nmanifest:       {int8.manifest_path}")
    return 0
