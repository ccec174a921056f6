"""``torch_PTQ.py``: quantize a model with the PyTorch toolchain and write the artifacts."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from quantization.cli import build_parser as _build_parser
from quantization.cli import quantize_main
from quantization.Torch.config import add_mode_arg

DESCRIPTION = """INT8 quantization with PyTorch.
  fx       static PTQ in FX graph mode (torch.ao prepare_fx/convert_fx), TorchScript artifact
  eager    static PTQ in eager mode (quantizable model variant: QuantStub, FloatFunctional, fuse_model)
  pt2e     torch.export + torchao X86InductorQuantizer, ExportedProgram run with torch.compile
  dynamic  dynamic PTQ of nn.Linear/LSTM/GRU layers (qint8 weights), TorchScript artifact
  qat      quantization-aware training: a short fine-tune with fake quantization (--qat-engine fx|eager)
Writes the INT8 artifact and its FP32 reference (same kind) into models/torch/ with manifests."""


MODE_TOOLCHAINS = {"fx": "torch_fx", "eager": "torch_eager", "pt2e": "torch_pt2e", "dynamic": "torch_dynamic",
                   "qat": "torch_qat"}


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("torch_PTQ.py", DESCRIPTION, tuple(MODE_TOOLCHAINS.values()), add_mode_arg)


def toolchain_for_mode(mode: str) -> str:
    from utils.errors import SuiteError

    if mode not in MODE_TOOLCHAINS:
        raise SuiteError(f"--mode must be one of {', '.join(MODE_TOOLCHAINS)} (got {mode})")
    return MODE_TOOLCHAINS[mode]


def main(argv: Sequence[str] | None = None) -> int:
    return quantize_main(argv, build_parser(), lambda cfg: toolchain_for_mode(cfg.torch.mode))
