"""``ModelOpt_PTQ.py``: FP32 ONNX -> INT8 Q/DQ ONNX with ModelOpt; ``--engine ort`` runs the ORT toolchain.

``--engine`` is no config key: it only picks which toolchain the script runs, an alias kept so that the
command lines written before ORT had its own package (``quantization/ORT/``) still work.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from quantization.cli import build_parser as _build_parser
from quantization.cli import quantize_main

ENGINES = ("modelopt", "ort")

DESCRIPTION = """INT8 post-training quantization of an ONNX export.
  --engine modelopt  nvidia-modelopt ONNX PTQ: int8, max/entropy calibration, Q/DQ placed as TensorRT
                     wants it (its speed per runtime and CPU: docs/benchmarks.md);
                     the ModelOpt flags set it. Q/DQ ONNX into models/modelopt/.
  --engine ort       alias that runs the ORT toolchain (quantization/ORT): onnxruntime quantize_static,
                     QDQ, u8 activations x s8 per-channel weights; the --ort-* flags and --activation-type
                     set it. QDQ ONNX into models/ort/.
The FP32 ONNX goes into models/onnx/; every file has a manifest."""


def add_engine_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default="modelopt",
                        help="toolchain to run: modelopt, or ort (an alias running the ORT toolchain, "
                             "quantization/ORT) (default: modelopt)")


def engine_of(argv: Sequence[str] | None) -> str:
    """The toolchain ``--engine`` names in ``argv`` (None: sys.argv); read after the full parser accepted it."""
    pre = argparse.ArgumentParser(add_help=False)
    add_engine_arg(pre)
    return pre.parse_known_args(argv)[0].engine


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("ModelOpt_PTQ.py", DESCRIPTION, ENGINES, add_engine_arg)


def main(argv: Sequence[str] | None = None) -> int:
    return quantize_main(argv, build_parser(), lambda cfg: engine_of(argv))
