"""``torch_PTQ.py``: quantize a model with the PyTorch toolchain and write the artifacts."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from quantization.workflow import prepare, run_toolchain
from utils import cli

log = logging.getLogger(__name__)

DESCRIPTION = """Post-training INT8 quantization with PyTorch.
  fx       static PTQ in FX graph mode (torch.ao prepare_fx/convert_fx), TorchScript artifact
  pt2e     torch.export + torchao X86InductorQuantizer, ExportedProgram run with torch.compile
  dynamic  dynamic PTQ of nn.Linear layers (qint8 weights), TorchScript artifact
Writes the INT8 artifact and its FP32 reference (same kind) into models/torch/ with manifests."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torch_PTQ.py", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arg(parser)
    cli.add_model_args(parser)
    cli.add_data_args(parser)
    cli.add_calibration_args(parser)
    cli.add_torch_args(parser)
    cli.add_output_args(parser)
    return parser


def toolchain_for_mode(mode: str) -> str:
    return "torch_pt2e" if mode == "pt2e" else "torch_fx"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = cli.config_from_args(args)
    prepared = prepare(cfg)
    fp32, int8, *_ = run_toolchain(toolchain_for_mode(cfg.torch.mode), cfg, prepared)
    print(f"FP32 reference: {fp32.path}\nINT8 artifact:  {int8.path}\nmanifest:       {int8.manifest_path}")
    return 0
