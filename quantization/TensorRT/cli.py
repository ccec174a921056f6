"""``tensorrt_PTQ_pth2trt_int8.py`` (and ``python -m resnet.run trt-ptq``): .pth -> INT8 TensorRT engine.

The settings are checked first (profile, precisions, opset, a calibrator this TensorRT has): a bad one is
one line and exit 2 before any work. The Q/DQ ONNX is then written and checked, on any machine; without a
GPU and TensorRT the script says what is missing in one line and exits 2, leaving the Q/DQ ONNX ready for
a GPU host. There, ``--qdq-onnx`` builds its engine without ModelOpt or ONNX Runtime, and
``--adopt-engine`` gives an engine built by other means (trtexec) the manifest ``--artifact`` needs.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from quantization.cli import build_parser as _build_parser
from quantization.run_config import config_from_args
from quantization.TensorRT.trt_quantizer import TensorRTQuantizer
from quantization.workflow import prepare
from utils import cli
from utils.artifacts import check_writable
from utils.config import resolve_path
from utils.errors import SuiteError

PROG = "tensorrt_PTQ_pth2trt_int8.py"
DESCRIPTION = """.pth -> FP32 ONNX -> Q/DQ ONNX (ModelOpt int8, fp16 high precision, checked against TensorRT's
rules) -> explicitly quantized, strongly typed TensorRT engine; plus FP32 and FP16 engines of the same
model for comparison. Engines go to models/tensorrt/ with manifests (TensorRT version, GPU, compute
capability: an engine runs only where it was built)."""


def add_other_machine_args(parser: argparse.ArgumentParser) -> None:
    """The script's own modes for a Q/DQ ONNX made on another machine (not config: they name files)."""
    g = parser.add_argument_group("a Q/DQ ONNX made elsewhere (Jetson: copy it with its .manifest.json)")
    g.add_argument("--qdq-onnx", default=None, metavar="PATH",
                   help="build the INT8 engine from this checked Q/DQ ONNX (no ModelOpt, ONNX Runtime, model or "
                        "data needed here); the engine is named after it")
    g.add_argument("--adopt-engine", default=None, metavar="PATH",
                   help="with --qdq-onnx: give this engine, built elsewhere from that ONNX (e.g. trtexec "
                        "--stronglyTyped), a manifest in models/tensorrt/ so --artifact evaluates it")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _build_parser(prog, DESCRIPTION, ("tensorrt",))  # its registry line: onnx, modelopt, tensorrt
    add_other_machine_args(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = config_from_args(args)
    quantizer = TensorRTQuantizer(cfg)  # settings checked here: before any work
    check_writable(resolve_path(cfg.models_dir), "--models-dir")
    if args.adopt_engine and not args.qdq_onnx:
        raise SuiteError("--adopt-engine needs --qdq-onnx: the Q/DQ ONNX the engine was built from (its manifest "
                         "says which model and calibration sample the engine carries)")
    if args.qdq_onnx:
        if cfg.tensorrt.calibrator:
            raise SuiteError("--qdq-onnx builds the explicit (Q/DQ) engine; it cannot take --calibrator")
        qdq, report = quantizer.checked_qdq_file(args.qdq_onnx)
        print(f"Q/DQ ONNX: {qdq.path} ({len(report.quantized_layers)} INT8 layers, "
              f"{len(report.float_layers)} in high precision)")
        engine = (quantizer.adopt_engine(args.adopt_engine, qdq) if args.adopt_engine
                  else quantizer.engine_from_qdq_file(qdq))
        print(f"{engine.precision} engine: {engine.path}")
        return 0
    prepared = prepare(cfg)
    model = prepared.model_for(quantizer)
    if cfg.tensorrt.calibrator:
        int8 = quantizer.legacy_engine(model, prepared.calibration)
    else:
        qdq, report = quantizer.qdq_onnx(model, prepared.calibration)
        print(f"Q/DQ ONNX: {qdq.path} ({len(report.quantized_layers)} INT8 layers, "
              f"{len(report.float_layers)} in high precision)")
        int8 = quantizer.int8_engine(model, qdq)  # the same Q/DQ ONNX: ModelOpt runs once
    engines = [quantizer.export_fp32(prepared.model), int8, *quantizer.extra_artifacts(prepared.model)]
    for engine in engines:
        print(f"{engine.precision} engine: {engine.path}")
    return 0
