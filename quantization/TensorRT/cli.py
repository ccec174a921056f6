"""``tensorrt_PTQ_pth2trt_int8.py`` (and ``python -m resnet.run trt-ptq``): .pth -> INT8 TensorRT engine.

The Q/DQ ONNX is written and checked first, on any machine; without a GPU and TensorRT the script
then says what is missing in one line and exits 2, leaving the Q/DQ ONNX ready for a GPU host.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from quantization.cli import build_parser as _build_parser
from quantization.run_config import config_from_args
from quantization.TensorRT.trt_quantizer import TensorRTQuantizer
from quantization.workflow import prepare
from utils import cli

DESCRIPTION = """.pth -> FP32 ONNX -> Q/DQ ONNX (ModelOpt int8, fp16 high precision, checked against TensorRT's
rules) -> explicitly quantized, strongly typed TensorRT engine; plus FP32 and FP16 engines of the same
model for comparison. Engines go to models/tensorrt/ with manifests (TensorRT version, GPU, compute
capability: an engine runs only where it was built)."""


def build_parser(prog: str = "tensorrt_PTQ_pth2trt_int8.py") -> argparse.ArgumentParser:
    return _build_parser(prog, DESCRIPTION, ("tensorrt",))  # its registry line: onnx, modelopt, tensorrt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = config_from_args(args)
    prepared = prepare(cfg)
    quantizer = TensorRTQuantizer(cfg)
    if not cfg.tensorrt.calibrator:
        qdq, report = quantizer.qdq_onnx(prepared.model_for(quantizer), prepared.calibration)
        print(f"Q/DQ ONNX: {qdq.path} ({len(report.quantized_layers)} INT8 layers, "
              f"{len(report.float_layers)} in high precision)")
    engines = [quantizer.export_fp32(prepared.model), quantizer.quantize(prepared.model_for(quantizer), prepared.calibration),
               *quantizer.extra_artifacts(prepared.model)]
    for engine in engines:
        print(f"{engine.precision} engine: {engine.path}")
    return 0
