"""The Torch toolchains' settings (``torch:`` in a recipe) and their flags: one section for fx, eager, pt2e,
dynamic and qat. Light on purpose (no torch import): every parser and every run config is built from it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from utils.cli import option, section_group
from utils.config import Section, choice, non_negative


@dataclass(slots=True)
class TorchQuantConfig:
    mode: str = choice("fx", "eager", "pt2e", "dynamic", "qat")  # torch_PTQ.py picks the toolchain from it
    # auto: per mode and deployment target (qconfig.resolve_backend: oneDNN for FX on VNNI/AMX, x86 elsewhere)
    backend: str = choice("auto", "x86", "fbgemm", "onednn", "qnnpack")
    granularity: str = choice("per_channel", "per_tensor")
    # minmax (the default since 2026-12-06: with bias correction it beat histogram on EfficientNet-Lite0 and the
    # CIFAR ResNets x 3 seeds, and calibrates faster; docs/accuracy_recovery.md); histogram: torch.ao's L2 range
    # search on a fast exact histogram (histogram_observer.py); torchao_histogram: torch.ao's own, to compare against
    observer: str = choice("minmax", "histogram", "moving_average_minmax", "torchao_histogram", "percentile")
    percentile: float = 99.99
    # Saturation-safe bit widths on CPUs whose u8 x s8 kernels add pairs in 16 bits (no VNNI/AMX):
    # auto gives up one weight bit there (7-bit weights, 8-bit activations), none with VNNI/AMX.
    reduce_range: str = choice("auto", "on", "off")  # 7-bit activations: auto (off) | on | off
    weight_bits: str | int = choice("auto", "7", "8")
    float_layers: list[str] = field(default_factory=list)  # module names kept in float (qconfig None)
    # fx: an observer feeding only a ReLU6/clamp records the clamped values (clamped) or, as torch.ao
    # does, the unclamped conv output it shares with the ReLU6 (shared: wastes bits on MobileNets)
    clamp_observers: str = choice("clamped", "shared")
    # quantization-aware training (mode qat): a short fine-tune from the FP32 weights on the training split
    qat_engine: str = choice("fx", "eager")  # fx (prepare_qat_fx) | eager (prepare_qat on the quantizable variant)
    qat_steps: int = 300
    qat_lr: float = 1e-3  # SGD, momentum 0.9, cosine decay over the steps
    qat_batch_size: int = 64
    qat_freeze_bn_after: int = non_negative(200)  # steps; then BN running statistics stop updating
    qat_freeze_observers_after: int = non_negative(250)  # steps; then the fake-quant ranges stay fixed


def add_mode_arg(parser: argparse.ArgumentParser) -> None:
    """``--mode``: which Torch toolchain torch_PTQ.py and its evaluation script run. Not a section flag:
    resnet.run picks toolchains with --toolchains, so it does not offer --mode."""
    g = section_group(parser, "Torch toolchain", SECTION)
    option(g, "--mode", "torch.mode", "fx: static PTQ in FX graph mode (TorchScript artifact); eager: static PTQ "
           "on the model's quantizable variant; pt2e: torch.export + X86InductorQuantizer (ExportedProgram, run "
           "with torch.compile); dynamic: Linear/LSTM/GRU only; qat: quantization-aware fine-tune")


def add_torch_args(parser: argparse.ArgumentParser) -> None:
    g = section_group(parser, "Torch quantization", SECTION)
    option(g, "--backend", "torch.backend", "quantized engine; auto: onednn for fx on CPUs with VNNI/AMX (its "
           "depthwise convs keep 8-bit weights), x86 otherwise")
    option(g, "--granularity", "torch.granularity", "weight scales")
    option(g, "--observer", "torch.observer", "activation observer: minmax, moving_average_minmax, histogram "
           "(torch.ao's L2-optimal range search on a fast exact histogram), torchao_histogram (torch.ao's own, "
           "slower), percentile; PT2E takes each of them too (torchao observer classes)")
    option(g, "--percentile", "torch.percentile", "percentile for --observer percentile", type=float)
    option(g, "--reduce-range", "torch.reduce_range", "7-bit activations (torch.ao's x86 default): on, off; "
           "auto = off (the bit is taken from the weights where needed)")
    option(g, "--clamp-observers", "torch.clamp_observers", "fx: range of a conv output that feeds only a ReLU6/"
           "clamp: clamped (observe the clamped values: full 8 bits on [0, 6]) or shared (torch.ao as is: the "
           "unclamped range, shared with the ReLU6)")
    option(g, "--qat-engine", "torch.qat_engine", "QAT graph: fx (prepare_qat_fx) or eager (prepare_qat on the "
           "quantizable variant)")
    option(g, "--qat-steps", "torch.qat_steps", "QAT fine-tuning steps", type=int)
    option(g, "--qat-lr", "torch.qat_lr", "QAT learning rate (SGD, momentum 0.9, cosine decay)", type=float)
    option(g, "--qat-batch-size", "torch.qat_batch_size", "QAT batch size", type=int)
    option(g, "--qat-freeze-bn-after", "torch.qat_freeze_bn_after", "QAT step after which BN statistics freeze",
           type=int)
    option(g, "--qat-freeze-observers-after", "torch.qat_freeze_observers_after", "QAT step after which the "
           "fake-quant ranges freeze", type=int)
    option(g, "--weight-bits", "torch.weight_bits", "weight bits: auto = 7 on x86/fbgemm without VNNI/AMX "
           "(u8 x s8 kernels saturate 16-bit sums there), 8 with VNNI/AMX; fx on x86/fbgemm: depthwise convs 7 "
           "(FBGEMM's depthwise kernel sums in 16 bits on every CPU)")


SECTION = Section("torch", TorchQuantConfig, add_torch_args)
