"""What the quantization scripts share: one parser layout and one main (quantize, print the paths)."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from quantization.registry import add_toolchain_flags
from quantization.run_config import RunConfig, config_from_args
from quantization.workflow import prepare, run_toolchain
from utils import cli
from utils.artifacts import check_writable
from utils.config import resolve_path


def build_parser(prog: str, description: str, toolchains: Sequence[str],
                 script_args: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """A quantize-only script's parser: the flags of ``toolchains`` (registry names) and ``script_args`` (a
    flag of the script's own, such as --mode); no evaluation or report flags."""
    parser = cli.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arg(parser)
    add_quantize_args(parser, toolchains, script_args, evaluates=False)
    cli.add_output_args(parser, reports=False)
    return parser


def add_quantize_args(parser: argparse.ArgumentParser, toolchains: Sequence[str],
                      script_args: Callable[[argparse.ArgumentParser], None] | None = None,
                      evaluates: bool = True) -> None:
    """The flags that decide an INT8 artifact: the quantization scripts and the evaluation scripts (which
    quantize when given no --artifact) take the same ones, in the same order; each toolchain's flag group
    comes from its registry line."""
    cli.add_model_args(parser)
    cli.add_data_args(parser, evaluates=evaluates)
    cli.add_calibration_args(parser)
    cli.add_target_args(parser)
    cli.add_transform_args(parser)
    if script_args is not None:
        script_args(parser)
    add_toolchain_flags(parser, toolchains)


def quantize_main(argv: Sequence[str] | None, parser: argparse.ArgumentParser,
                  toolchain_for: Callable[[RunConfig], str]) -> int:
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = config_from_args(args)
    check_writable(resolve_path(cfg.models_dir), "--models-dir")
    fp32, int8, *_ = run_toolchain(toolchain_for(cfg), cfg, prepare(cfg))
    print(f"FP32 reference: {fp32.path}\nINT8 artifact:  {int8.path}\nmanifest:       {int8.manifest_path}")
    return 0
