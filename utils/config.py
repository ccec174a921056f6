"""One run's configuration: a YAML recipe, overridden by CLI flags, into a dataclass.

Every script builds the same :class:`RunConfig`, so a recipe in ``configs/`` works with any entry
point and a flag always means the same thing. Precedence: dataclass defaults < YAML < CLI flags.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import SuiteError
from utils.names import check_output_name
from utils.strict_yaml import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ModelConfig:
    arch: str = "demo"  # registry name: demo, resnet20..56, any torchvision classifier, efficientnet_lite0
    weights: str | None = None  # .pth state_dict or {'state_dict': ...} checkpoint
    num_classes: int | None = None  # replace the classifier head before loading weights
    allow_unsafe_load: bool = False  # torch.load(weights_only=False): only for files you trust


@dataclass
class DataConfig:
    dataset: str = "demo"  # demo | imagenet | cifar10
    root: str | None = None  # dataset folder (imagenet: class folders or images/ + labels.tsv)
    calib_root: str | None = None  # separate calibration folder (else a seeded split of root/train)
    allow_overlap: bool = False  # let calibration images also be evaluation images (biased figures)
    batch_size: int = 32
    limit: int | None = None  # evaluate on a seeded class-stratified subset of N evaluation images
    image_size: int | None = None  # centre-crop size (dataset default if unset)
    resize: int | None = None  # resize before the crop (dataset default if unset)
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None  # resize interpolation: bilinear | bicubic | nearest (model source's if unset)


@dataclass
class CalibrationConfig:
    size: int = 256  # images drawn for calibration
    seed: int = 0
    batch_size: int | None = None  # images per forward pass; None: the toolchain's (Quantizer.calibration_batch_size)


@dataclass
class TorchQuantConfig:
    mode: str = "fx"  # fx | pt2e | dynamic | eager | qat (torch_PTQ.py picks the toolchain from it)
    backend: str = "x86"  # x86 | fbgemm | onednn | qnnpack
    granularity: str = "per_channel"  # per_channel | per_tensor
    observer: str = "histogram"  # minmax | moving_average_minmax | histogram | torchao_histogram | percentile
    percentile: float = 99.99
    # Saturation-safe bit widths on CPUs whose u8 x s8 kernels add pairs in 16 bits (no VNNI/AMX):
    # auto gives up one weight bit there (7-bit weights, 8-bit activations), none with VNNI/AMX.
    reduce_range: str = "auto"  # 7-bit activations: auto (off) | on | off
    weight_bits: str | int = "auto"  # auto | 7 | 8
    float_layers: list[str] = field(default_factory=list)  # module names kept in float (qconfig None)
    # fx: an observer feeding only a ReLU6/clamp records the clamped values (clamped) or, as torch.ao
    # does, the unclamped conv output it shares with the ReLU6 (shared: wastes bits on MobileNets)
    clamp_observers: str = "clamped"
    # quantization-aware training (mode qat): a short fine-tune from the FP32 weights on the training split
    qat_engine: str = "fx"  # fx (prepare_qat_fx) | eager (prepare_qat on the quantizable variant)
    qat_steps: int = 300
    qat_lr: float = 1e-3  # SGD, momentum 0.9, cosine decay over the steps
    qat_batch_size: int = 64
    qat_freeze_bn_after: int = 200  # steps; then BN running statistics stop updating
    qat_freeze_observers_after: int = 250  # steps; then the fake-quant ranges stay fixed


def choice(*choices: str, optional: bool = False) -> Any:
    """A field whose value must be one of ``choices`` (compared as text, so a YAML ``7`` matches ``"7"``), the
    first by default (None if ``optional``): :func:`validate_config` checks it once, when the config is built,
    and the CLI offers the same list, so the values are written down in one place."""
    return field(default=None if optional else choices[0], metadata={"choices": choices})


@dataclass(slots=True)  # slots, here and in the toolchain sections: a stale key (cfg.modelopt.granularity) fails
class OnnxConfig:
    """What every ONNX toolchain (modelopt, ort, tensorrt) shares: the FP32 export and the calibration input."""

    opset: int = 17
    onnx_path: str | None = None  # start from this FP32 ONNX instead of exporting the model
    calibration_data: str | None = None  # .npz keyed by input name instead of the seeded sample


@dataclass(slots=True)
class ModelOptQuantConfig:
    """NVIDIA ModelOpt ONNX PTQ (also the TensorRT toolchain's Q/DQ step, which derives fp16 itself)."""

    calibration_method: str = choice("max", "entropy")
    calibration_eps: list[str] | None = None  # ModelOpt's calibration providers (default: what this machine has)
    exclude_nodes: list[str] = field(default_factory=list)  # regexes of node names kept float
    exclude_op_types: list[str] = field(default_factory=list)
    high_precision_dtype: str = choice("fp32", "fp16")  # fp32 for CPU runtimes, fp16 for TensorRT
    # auto = 7 where the target's u8 x s8 kernels add pairs in 16 bits (x86-avx2), else 8: weights re-gridded
    # with doubled scales (NNCF's fix)
    weight_bits: str | int = choice("auto", "7", "8")


@dataclass(slots=True)
class OrtQuantConfig:
    """ONNX Runtime ``quantize_static`` (QDQ)."""

    calibration_method: str = choice("minmax", "entropy", "percentile")
    granularity: str = choice("per_channel", "per_tensor")  # weight scales
    activation_type: str = choice("auto", "uint8", "int8")  # auto: uint8, what x86 integer kernels take
    exclude_nodes: list[str] = field(default_factory=list)  # regexes of node names kept float
    exclude_op_types: list[str] = field(default_factory=list)
    # auto = 7 where the target's u8 x s8 kernels add pairs in 16 bits (x86-avx2), else 8: reduce_range=True
    weight_bits: str | int = choice("auto", "7", "8")


@dataclass
class TransformConfig:
    """Model -> model passes applied to the FP32 model before every toolchain's quantizer."""

    cle: bool = False  # cross-layer equalization over conv -> ReLU -> conv pairs (BN folded first)
    cle_relu6: str = "skip"  # pairs through ReLU6: skip (exact) | relu (replace ReLU6 by ReLU, as DFQ/AIMET)
    bias_correction: bool = False  # empirical: fold the mean weight-rounding error into each bias


@dataclass(slots=True)
class TensorRTConfig:
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16", "int8"])
    calibrator: str | None = choice("entropy", "minmax", optional=True)  # legacy implicit INT8 (TensorRT <= 10)
    workspace_gib: float = 4.0
    max_batch: int = 64
    opt_batch: int = 16


@dataclass
class TuningConfig:
    """Calibration sweeps, per-layer sensitivity and accuracy-aware layer fallback (resnet.run)."""

    calibrations: list[str] | None = None  # sweep: minmax, percentile, entropy, mse
    granularities: list[str] | None = None  # sweep: per_tensor, per_channel
    sensitivity: bool = False  # rank layers by the effect of keeping each one in float
    max_drop: float | None = None  # pp on the held-out slice: keep sensitive layers float until met
    max_float_layers: int = 5  # layer budget of the fallback
    heldout_size: int = 500  # images (never evaluation images) for sensitivity and fallback
    toolchains: list[str] | None = None  # default: every toolchain of the run whose class has layer fallback


@dataclass
class SgdRecipe:
    """The suite's one optimizer recipe (SGD with momentum and weight decay, cosine decay over all steps):
    resnet.train, the demo model and QAT fine-tuning all train with it, so it is one set of fields."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0


@dataclass
class TrainingConfig(SgdRecipe):
    """resnet.train: the SGD recipe, plus how long, on what and how, with a checkpoint each epoch."""

    epochs: int = 30
    limit: int | None = None  # train on the first N training images only (short runs, tests)
    augment: bool = True  # random shifts of up to 2 pixels
    resume: bool = True  # continue from the newest checkpoint of the same run


@dataclass
class BenchmarkConfig:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16])
    warmup: int = 5
    rounds: int = 30
    threads: int | None = None  # intra-op threads (default: all cores)
    # compute precisions to measure: fp32 (true FP32, always: the baseline of every drop), bf16 (FP32 artifacts run
    # in BF16 where the CPU has AMX-BF16/AVX512-BF16), int8 (the INT8 artifacts); None = every one this CPU runs natively
    eval_precisions: list[str] | None = field(default=None, metadata={"item_choices": ("fp32", "bf16", "int8")})


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    torch: TorchQuantConfig = field(default_factory=TorchQuantConfig)
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    modelopt: ModelOptQuantConfig = field(default_factory=ModelOptQuantConfig)
    ort: OrtQuantConfig = field(default_factory=OrtQuantConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # deployment target (utils/targets.py): auto (this machine's CPU) | x86-amx | x86-vnni | x86-avx2 | arm64 | tensorrt;
    # each toolchain derives its saturation-safe scheme from it
    target: str = "auto"
    toolchains: list[str] | None = None  # resnet.run: which toolchains (default: all runnable)
    runtimes: list[str] | None = None  # which runtimes (default: every installed one that fits)
    models_dir: str = "models"
    results_dir: str = "results"
    run_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise SuiteError(f"unknown config key '{where}{key}' (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SuiteError(f"config key '{where}{key}' must be a mapping")
            _merge(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, value)


#: numeric fields with an upper bound as well
AT_MOST = {"torch.percentile": 100.0}
#: numeric fields that may be 0 (every other int/float field must be positive)
NON_NEGATIVE = frozenset({
    "calibration.seed", "training.seed", "benchmark.warmup", "training.momentum", "training.weight_decay",
    "torch.qat_freeze_bn_after", "torch.qat_freeze_observers_after", "tuning.max_drop", "tuning.max_float_layers",
})
_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def _accepts(annotation: str, value: Any) -> bool:
    """Whether ``value`` fits a field annotation such as ``int | None`` or ``list[float]`` (YAML and CLI types)."""
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None" and value is None:
            return True
        if part.startswith("list[") and isinstance(value, list):
            inner = part[5:-1]
            if all(_accepts(inner, v) for v in value):
                return True
        scalar = _SCALARS.get(part)
        if scalar is None:
            continue
        if scalar is bool:
            if isinstance(value, bool):
                return True
        elif scalar is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif scalar is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif isinstance(value, scalar):
            return True
    return False


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def validate_config(cfg: RunConfig) -> RunConfig:
    """Every field's type, range and choices, checked once when the config is built: a wrong value is one line,
    before any work (e.g. ``calibration.size: "thirty-two"``, ``data.batch_size: 0``, ``ort.granularity: layer``)."""
    def walk(obj: Any, where: str) -> None:
        for f in dataclasses.fields(obj):
            value, dotted = getattr(obj, f.name), f"{where}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{dotted}.")
                continue
            if not _accepts(str(f.type), value):
                raise SuiteError(f"config key '{dotted}' must be {f.type} (got {value!r})")
            low = 0 if dotted in NON_NEGATIVE else None
            for number in _numbers(value):
                if not math.isfinite(number):  # NaN passes every comparison below
                    raise SuiteError(f"config key '{dotted}' must be a finite number (got {value!r})")
                if dotted.endswith("seed") and number >= 2**32:  # numpy and torch seeds: 32 bits, checked late
                    raise SuiteError(f"config key '{dotted}' must be below 2**32 (got {value!r})")
                if dotted in AT_MOST and number > AT_MOST[dotted]:
                    raise SuiteError(f"config key '{dotted}' must be at most {AT_MOST[dotted]:g} (got {value!r})")
                if (low is None and number <= 0) or (low is not None and number < low):
                    bound = "non-negative" if low is not None else "positive"
                    raise SuiteError(f"config key '{dotted}' must be {bound} (got {value!r})")
            if f.name == "exclude_nodes":  # regexes: a bad one failed only after the FP32 export
                for pattern in value:
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise SuiteError(f"config key '{dotted}': {pattern!r} is not a regex ({exc})") from exc
            choices = f.metadata.get("choices")
            if choices and value is not None and str(value) not in choices:
                raise SuiteError(f"config key '{dotted}' must be one of {', '.join(choices)} (got {value!r})")
            items = f.metadata.get("item_choices")  # a list field whose every item is one of these
            for item in value if items and value is not None else []:
                if str(item) not in items:
                    raise SuiteError(f"config key '{dotted}' must be one of {', '.join(items)} (got {item!r})")
    walk(cfg, "")
    if cfg.run_name is not None:  # a name inside the results folder, never a path (issue #30)
        check_output_name(cfg.run_name, "--run-name")
    if cfg.benchmark.eval_precisions is not None and "fp32" not in cfg.benchmark.eval_precisions:
        raise SuiteError("--eval-precisions must include fp32: fp32 is the baseline every drop and speedup is measured "
                         f"against (got {','.join(map(str, cfg.benchmark.eval_precisions))})")
    return cfg


def field_choices(dotted: str) -> tuple[str, ...] | None:
    """The values a config key such as ``ort.calibration_method`` accepts, where it is a :func:`choice` field."""
    node: Any = RunConfig()
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = getattr(node, part)
    known = {f.name: f for f in dataclasses.fields(node)}
    return known[leaf].metadata.get("choices") if leaf in known else None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML recipe at ``path``, then dotted ``overrides`` ({'model.arch': ...})."""
    cfg = RunConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SuiteError(f"config file not found: {path}")
        data = load_yaml(path) or {}  # a duplicate key, non-UTF-8 bytes: one line
        if not isinstance(data, dict):
            raise SuiteError(f"config file {path} must hold a mapping at top level")
        _merge(cfg, data, "")
    nested: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    _merge(cfg, nested, "")
    return validate_config(cfg)


RECIPES_DIR = REPO_ROOT / "configs" / "recipes"


def load_recipe(name: str) -> dict[str, dict[str, Any]]:
    """A named per-toolchain recipe (configs/recipes/<name>.yaml): toolchain -> config overrides."""
    path = RECIPES_DIR / f"{check_output_name(name, '--recipe').replace('-', '_')}.yaml"
    if not path.is_file():
        known = sorted(p.stem.replace("_", "-") for p in RECIPES_DIR.glob("*.yaml"))
        raise SuiteError(f"unknown recipe '{name}' (known: {', '.join(known)})")
    data = load_yaml(path, "recipe") or {}
    toolchains = data.get("toolchains")
    if not isinstance(toolchains, dict) or not all(isinstance(v, dict) for v in toolchains.values()):
        raise SuiteError(f"recipe {path} must map 'toolchains' to per-toolchain config mappings")
    return toolchains


def with_overrides(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with a nested mapping of config values merged in."""
    merged = copy.deepcopy(cfg)
    _merge(merged, values, "")
    return validate_config(merged)


def resolve_path(path: str | Path) -> Path:
    """Relative output folders live under the repository root, whatever the working directory."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path
