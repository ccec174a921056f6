"""``torch_PTQ.py``: quantize a model with the PyTorch toolchain and write the artifacts."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from quantization.cli import build_parser as _build_parser
from quantization.cli import quantize_main
from utils import cli

DESCRIPTION = """Post-training INT8 quantization with PyTorch.
  fx       static PTQ in FX graph mode (torch.ao prepare_fx/convert_fx), TorchScript artifact
  pt2e     torch.export + torchao X86InductorQuantizer, ExportedProgram run with torch.compile
  dynamic  dynamic PTQ of nn.Linear layers (qint8 weights), TorchScript artifact
Writes the INT8 artifact and its FP32 reference (same kind) into models/torch/ with manifests."""


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("torch_PTQ.py", DESCRIPTION, cli.add_torch_args)


def toolchain_for_mode(mode: str) -> str:
    return "torch_pt2e" if mode == "pt2e" else "torch_fx"


def main(argv: Sequence[str] | None = None) -> int:
    return quantize_main(argv, build_parser(), lambda cfg: toolchain_for_mode(cfg.torch.mode))
