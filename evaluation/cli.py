"""The comprehensive evaluation scripts: FP32 vs INT8 of one toolchain, through the shared loop.

Without ``--artifact`` the toolchain quantizes first (same settings flags as its quantization
script); with it, the given INT8 artifact is evaluated after checking that it was not calibrated on
the evaluation images. The FP32 reference is always rebuilt from the model, in the artifact's kind.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from evaluation.pipelines.workflow import evaluate_and_report, run_folder
from quantization.workflow import check_disjoint, make_quantizer, prepare, run_toolchain
from utils import cli
from utils.artifacts import load_artifact
from utils.config import RunConfig

log = logging.getLogger(__name__)


def build_parser(prog: str, description: str,
                 add_toolchain_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    cli.add_config_arg(parser)
    parser.add_argument("--artifact", action="append", default=None, metavar="PATH",
                        help="INT8 artifact(s) to evaluate (repeatable); default: quantize now with the flags below")
    cli.add_model_args(parser)
    cli.add_data_args(parser)
    cli.add_calibration_args(parser)
    cli.add_target_args(parser)
    cli.add_transform_args(parser)
    add_toolchain_args(parser)
    cli.add_benchmark_args(parser)
    cli.add_output_args(parser)
    return parser


def evaluation_main(argv: Sequence[str] | None, *, prog: str, description: str, folder: str,
                    add_toolchain_args: Callable[[argparse.ArgumentParser], None],
                    toolchain_for: Callable[[RunConfig], str]) -> int:
    args = build_parser(prog, description, add_toolchain_args).parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = cli.config_from_args(args)
    prepared = prepare(cfg)
    toolchain = toolchain_for(cfg)
    if args.artifact:
        int8 = [load_artifact(p) for p in args.artifact]
        for artifact in int8:
            check_disjoint(artifact, prepared.splits, cfg.data.allow_overlap)
        artifacts = [make_quantizer(toolchain, cfg).export_fp32(prepared.model), *int8]
    else:
        artifacts = list(run_toolchain(toolchain, cfg, prepared))
    out_dir = run_folder(cfg, folder)
    report = evaluate_and_report(f"{prog}: FP32 vs INT8", artifacts, prepared.splits, cfg, out_dir)
    for row in report["rows"]:
        log.info("%-55s %-12s top-1 %.2f%%", row["artifact"], row["runtime"], 100 * row["top1"])
    print(f"report: {out_dir / 'report.md'}")
    return 0
