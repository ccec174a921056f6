"""The toolchain registry: one line per toolchain names its Quantizer class and the settings sections it reads.

Both are ``"module:NAME"`` strings, imported on first use: a section's module is light (a dataclass and its
flag group, quantization/<Toolchain>/config.py), so parsers and run configs are built without importing any
toolchain package, and a quantizer module is imported only when its toolchain runs or is asked about. A new
toolchain is one module plus one line here (or ``TOOLCHAINS[name] = Toolchain(...)`` from a test).
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from utils.config import Section
from utils.errors import SuiteError

if TYPE_CHECKING:
    from quantization.base import Quantizer

TORCH = "quantization.Torch.config:SECTION"
ONNX = "quantization.onnx_config:SECTION"
MODELOPT = "quantization.ModelOpt.config:SECTION"
ORT = "quantization.ORT.config:SECTION"
TENSORRT = "quantization.TensorRT.config:SECTION"


@dataclass(frozen=True)
class Toolchain:
    quantizer: str  # "module:Class" of its Quantizer
    settings: tuple[str, ...] = ()  # "module:NAME" of each Section it reads, its own (Quantizer.section) last


TOOLCHAINS: dict[str, Toolchain] = {
    "torch_fx": Toolchain("quantization.Torch.fx_quantizer:FxQuantizer", (TORCH,)),
    "torch_pt2e": Toolchain("quantization.Torch.pt2e_quantizer:PT2EQuantizer", (TORCH,)),
    "torch_dynamic": Toolchain("quantization.Torch.dynamic_quantizer:DynamicQuantizer", (TORCH,)),
    "torch_eager": Toolchain("quantization.Torch.eager_quantizer:EagerQuantizer", (TORCH,)),
    "torch_qat": Toolchain("quantization.Torch.qat_quantizer:QatQuantizer", (TORCH,)),
    "modelopt": Toolchain("quantization.ModelOpt.modelopt_quantizer:ModelOptQuantizer", (ONNX, MODELOPT)),
    "ort": Toolchain("quantization.ORT.ort_quantizer:OrtQuantizer", (ONNX, ORT)),
    "tensorrt": Toolchain("quantization.TensorRT.trt_quantizer:TensorRTQuantizer", (ONNX, MODELOPT, TENSORRT)),
}


def _load(ref: str) -> Any:
    module_name, name = ref.split(":")
    return getattr(importlib.import_module(module_name), name)


def _known(name: str) -> Toolchain:
    if name not in TOOLCHAINS:
        raise SuiteError(f"unknown toolchain '{name}' (known: {', '.join(TOOLCHAINS)})")
    return TOOLCHAINS[name]


def quantizer_class(name: str) -> type[Quantizer]:
    return _load(_known(name).quantizer)


def sections_of(names: Iterable[str] | None = None) -> list[Section]:
    """The settings sections toolchains ``names`` read (default: every registered one), in registry order, each
    once; two toolchains naming one section name must name the same section."""
    found: dict[str, Section] = {}
    for name in TOOLCHAINS if names is None else names:
        for ref in _known(name).settings:
            section = _load(ref)
            if found.setdefault(section.name, section) is not section:
                raise SuiteError(f"toolchain {name}: config section '{section.name}' is declared twice")
    return list(found.values())


def add_toolchain_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """The flag group of every section toolchains ``names`` read (default: every registered toolchain)."""
    for section in sections_of(names):
        section.add_flags(parser)
