"""QConfigs for torch.ao FX from the suite's settings (backend, observer, granularity, bit widths).

On CPUs without VNNI, u8 x s8 kernels add pairs of products in 16-bit lanes and can saturate when
both operands use their full range; torch.ao's x86/fbgemm default keeps activations to 7 bits
(``reduce_range``). Measured on EfficientNet-Lite0, taking the bit from the weights instead loses far
less, and with VNNI/AMX (32-bit accumulation) no bit needs to go: ``auto`` picks from the deployment
target (``utils.targets``; ``auto`` there is this machine's CPU), never from the build machine alone.
"""
from __future__ import annotations

import functools
import warnings

import torch
from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping
from torch.ao.quantization.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
)

from quantization.Torch.config import TorchQuantConfig
from quantization.Torch.histogram_observer import FastHistogramObserver, pt2e_fast_histogram_observer
from utils.errors import SuiteError
from utils.models import is_depthwise
from utils.targets import Target

# observers whose ranges do not depend on how the calibration sample is batched (running min/max, the fast
# exact histogram); torch.ao's histogram re-bins per batch and the moving average weights the batches
BATCH_INDEPENDENT_OBSERVERS = ("minmax", "histogram", "percentile")

warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated.*")


class _PercentileSearch:
    """Clips the activation range to a percentile of the calibration histogram.

    torch.ao has no percentile observer; this one reuses the fast histogram (folded onto 2048 bins
    over [min, max], as torch.ao's) and replaces the L2 range search by the lower/upper percentile.
    """

    def __init__(self, percentile: float = 99.99, **kwargs):
        super().__init__(**kwargs)
        self.percentile = percentile

    def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
        hist = self.histogram.float()
        total = hist.sum()
        if total <= 0:
            return self.min_val, self.max_val
        cdf = torch.cumsum(hist, 0) / total
        tail = (100.0 - self.percentile) / 100.0
        bin_width = (self.max_val - self.min_val) / self.bins
        lo_bin = int(torch.searchsorted(cdf, torch.tensor(tail)).item())
        hi_bin = int(torch.searchsorted(cdf, torch.tensor(1.0 - tail)).item())
        new_min = self.min_val + bin_width * lo_bin
        new_max = self.min_val + bin_width * min(hi_bin + 1, self.bins)
        return torch.minimum(new_min, torch.zeros_like(new_min)), torch.maximum(new_max, torch.zeros_like(new_max))


class PercentileObserver(_PercentileSearch, FastHistogramObserver):
    """The percentile observer for torch.ao (FX, eager)."""


@functools.cache
def pt2e_percentile_observer() -> type:
    """The same observer over torchao's observer classes, for PT2E."""
    return type("Pt2ePercentileObserver", (_PercentileSearch, pt2e_fast_histogram_observer()),
                {"__doc__": "The percentile observer for PT2E (torchao's observer classes).", "__module__": __name__})


def resolve_backend(backend: str, mode: str, target: Target) -> str:
    """The quantized engine of ``--backend auto``: oneDNN for FX static PTQ on x86 targets with 32-bit int8 dot
    products (VNNI/AMX), x86 everywhere else.

    On those CPUs the x86 engine runs depthwise convs on FBGEMM's kernel, which adds pairs of products in 16-bit
    lanes, so their weights get 7 bits (``depthwise_weight_bits``); oneDNN accumulates them in 32 bits and keeps
    8. Measured (x86-vnni, EfficientNet-Lite0, shared split, bias correction on): top-1 79.9 % -> 80.9 %,
    agreement with FP32 95.1 % -> 98.1 % (x86-amx: 80.9 %, 98.2 %), FP32 81.1 %; the price is batch-16 latency
    (73.5 -> 91.5 ms interleaved; batch 1 4.0 -> 3.7 ms). The CIFAR ResNets (no depthwise conv) give the same top-1
    on both engines. Without VNNI (x86-avx2) the x86 engine and its overflow fix stay; the other modes keep x86
    (not measured)."""
    if backend != "auto":
        return backend
    if mode == "fx" and target.cpu and target.name.startswith("x86") and not target.pair_sums_saturate:
        return "onednn"
    return "x86"


def saturation_risk(cfg: TorchQuantConfig, target: Target) -> bool:
    """True where the backend's u8 x s8 kernels can saturate on ``target`` (x86/fbgemm without VNNI/AMX)."""
    return cfg.backend in ("x86", "fbgemm") and target.pair_sums_saturate


def use_reduce_range(cfg: TorchQuantConfig) -> bool:
    if cfg.reduce_range == "auto":
        return False  # the bit is taken from the weights where needed (see weight_bits)
    if cfg.reduce_range in ("on", "off"):
        return cfg.reduce_range == "on"
    raise SuiteError(f"--reduce-range must be auto, on or off (got {cfg.reduce_range})")


def _fix_applies(cfg: TorchQuantConfig) -> bool:
    """Whether the target's overflow fix concerns this config: FBGEMM-style u8 x s8 kernels (x86/fbgemm) with
    full 8-bit activations (7-bit activations already keep the pair sums in range)."""
    return cfg.backend in ("x86", "fbgemm") and not use_reduce_range(cfg)


def weight_bits(cfg: TorchQuantConfig, target: Target) -> int:
    if str(cfg.weight_bits) not in ("auto", "7", "8"):  # a section built without load_config
        raise SuiteError(f"--weight-bits must be auto, 7 or 8 (got {cfg.weight_bits})")
    if str(cfg.weight_bits) == "auto" and not _fix_applies(cfg):
        return 8
    return target.weight_bits(cfg.weight_bits)


def depthwise_weight_bits(cfg: TorchQuantConfig, target: Target) -> int:
    """Weight bits of depthwise convolutions. FBGEMM's fast depthwise INT8 kernel adds pairs of u8 x s8
    products in 16-bit lanes even on VNNI CPUs, so ``auto`` gives depthwise weights 7 bits on x86/fbgemm
    (EfficientNet-Lite0, FX minmax: 80.4 % with 8-bit, 81.8 % with 7-bit, FP32 81.1 %)."""
    if str(cfg.weight_bits) == "auto" and _fix_applies(cfg):
        return target.weight_bits(fbgemm_depthwise=True)
    return weight_bits(cfg, target)


def weight_range(cfg: TorchQuantConfig, target: Target, bits: int | None = None) -> tuple[int, int]:
    """(quant_min, quant_max) of the symmetric qint8 weights: 7 or 8 bits (default: ``weight_bits``)."""
    return (-64, 63) if (bits or weight_bits(cfg, target)) == 7 else (-128, 127)


def validate(cfg: TorchQuantConfig) -> None:
    """What the section's choice() fields cannot say (they are checked when the config is built)."""
    if not 50.0 < cfg.percentile <= 100.0:
        raise SuiteError(f"--percentile must be in (50, 100] (got {cfg.percentile})")


def build_qconfig(cfg: TorchQuantConfig, target: Target, bits: int | None = None) -> QConfig:
    validate(cfg)
    reduce_range = use_reduce_range(cfg)
    act_kwargs = {"dtype": torch.quint8, "qscheme": torch.per_tensor_affine, "reduce_range": reduce_range}
    activation = {
        "minmax": MinMaxObserver.with_args(**act_kwargs),
        "moving_average_minmax": MovingAverageMinMaxObserver.with_args(**act_kwargs),
        "histogram": FastHistogramObserver.with_args(**act_kwargs),
        "torchao_histogram": HistogramObserver.with_args(**act_kwargs),
        "percentile": PercentileObserver.with_args(percentile=cfg.percentile, **act_kwargs),
    }[cfg.observer]
    return QConfig(activation=activation, weight=weight_observer(cfg, target, bits))


def weight_observer(cfg: TorchQuantConfig, target: Target, bits: int | None = None):
    """Symmetric qint8 weight observer, per channel or per tensor, 7 or 8 bits: static and dynamic PTQ share it."""
    qmin, qmax = weight_range(cfg, target, bits)
    if cfg.granularity == "per_channel":
        return PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                  quant_min=qmin, quant_max=qmax)
    return MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                    quant_min=qmin, quant_max=qmax)


def depthwise_convs(module: torch.nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d) and is_depthwise(m)]


def build_qconfig_mapping(cfg: TorchQuantConfig, target: Target, depthwise: list[str] | None = None, *,
                          qat: bool = False) -> QConfigMapping:
    """The backend's default mapping (fixed-qparams ops etc.) with our global qconfig (``qat``: the
    fake-quantize one, on the backend's QAT mapping); the modules named in ``depthwise`` get
    ``depthwise_weight_bits``; ``cfg.float_layers`` stay float. FX PTQ and FX QAT both build theirs here."""
    if qat:
        from torch.ao.quantization import get_default_qat_qconfig_mapping

        mapping = get_default_qat_qconfig_mapping(cfg.backend).set_global(build_qat_qconfig(cfg, target))
    else:
        mapping = get_default_qconfig_mapping(cfg.backend).set_global(build_qconfig(cfg, target))
    if not qat and depthwise and depthwise_weight_bits(cfg, target) != weight_bits(cfg, target):
        qconfig = build_qconfig(cfg, target, depthwise_weight_bits(cfg, target))
        for name in depthwise:
            mapping.set_module_name(name, qconfig)
    for name in cfg.float_layers:
        mapping.set_module_name(name, None)
    return mapping


def build_qat_qconfig(cfg: TorchQuantConfig, target: Target) -> QConfig:
    """Fake-quantize modules for QAT with the same bit widths and granularity as the PTQ qconfig.

    Moving-average min/max observers: the ranges follow the weights and activations as they train."""
    from torch.ao.quantization.fake_quantize import FakeQuantize
    from torch.ao.quantization.observer import MovingAveragePerChannelMinMaxObserver

    validate(cfg)
    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                        reduce_range=use_reduce_range(cfg))
    qmin, qmax = weight_range(cfg, target)
    if cfg.granularity == "per_channel":
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=qmin, quant_max=qmax,
                                        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    else:
        weight = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=qmin, quant_max=qmax,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return QConfig(activation=activation, weight=weight)
