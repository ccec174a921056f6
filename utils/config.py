"""One run's configuration: a YAML recipe, overridden by CLI flags, into a dataclass.

Every script builds the same run config (quantization.run_config.RunConfig: the toolchain-agnostic sections
here, composed with each registered toolchain's own :class:`Section`), so a recipe in ``configs/`` works with
any entry point and a flag always means the same thing. Precedence: dataclass defaults < YAML < CLI flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from utils.errors import SuiteError
from utils.names import check_output_name
from utils.strict_yaml import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
C = TypeVar("C", bound="CommonConfig")


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


def choice(*choices: str, optional: bool = False) -> Any:
    """A field whose value must be one of ``choices`` (compared as text, so a YAML ``7`` matches ``"7"``), the
    first by default (None if ``optional``): :func:`validate_config` checks it once, when the config is built,
    and the CLI offers the same list, so the values are written down in one place."""
    return field(default=None if optional else choices[0], metadata={"choices": choices})


@dataclass
class TransformConfig:
    """Model -> model passes applied to the FP32 model before every toolchain's quantizer."""

    cle: bool = False  # cross-layer equalization over conv -> ReLU -> conv pairs (BN folded first)
    cle_relu6: str = "skip"  # pairs through ReLU6: skip (exact) | relu (replace ReLU6 by ReLU, as DFQ/AIMET)
    # empirical: fold the mean weight-rounding error into each bias. On by default, as NNCF's fast bias
    # correction is: measured over 4 CIFAR ResNets x 3 calibration seeds and EfficientNet-Lite0 (docs/accuracy_recovery.md)
    bias_correction: bool = True
    # fast: one streaming FP32 pass, each layer's own rounding (NNCF's default kind); sequential: each layer
    # given the quantized layers before it (a second pass, the whole sample's activations in memory)
    bias_correction_method: str = choice("fast", "sequential")


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


@dataclass(frozen=True)
class Section:
    """A toolchain's own settings: ``cfg.<name>`` holds a ``settings`` instance (YAML key ``<name>:``), and
    ``add_flags`` adds its flag group to a parser. Declared in the toolchain's folder (its ``config.py``) and
    named by its registry line (quantization/registry.py), so utils/ knows no toolchain."""

    name: str
    settings: type
    add_flags: Callable[[argparse.ArgumentParser], None]


@dataclass
class CommonConfig:
    """The toolchain-agnostic part of one run's configuration; ``sections`` holds the toolchains' own sections by
    name (``cfg.torch`` reads ``cfg.sections["torch"]``). quantization.run_config.RunConfig composes it with
    every registered toolchain's sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # deployment target, a name in utils/targets.py TARGETS (auto: this machine's CPU); each toolchain derives
    # its saturation-safe scheme from it
    target: str = "auto"
    toolchains: list[str] | None = None  # resnet.run: which toolchains (default: all runnable)
    runtimes: list[str] | None = None  # which runtimes (default: every installed one that fits)
    models_dir: str = "models"
    results_dir: str = "results"
    run_name: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)  # toolchain section name -> its settings

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are no field: a toolchain section (self.__dict__: safe while unpickling)
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no config section '{name}'")

    def to_dict(self) -> dict[str, Any]:
        """Every section by name, the toolchains' beside the common ones (as the YAML keys them)."""
        return {name: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
                for name, value in children(self).items()}


def children(obj: Any) -> dict[str, Any]:
    """The config keys directly below ``obj`` and their values: a section's fields; for the run config, its
    fields and its toolchain sections (so YAML, flags and validation treat both alike)."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "sections"}
    if isinstance(obj, CommonConfig):
        values.update(obj.sections)
    return values


def _replaced(obj: Any, changes: dict[str, Any]) -> Any:
    if isinstance(obj, CommonConfig):
        own = {k: v for k, v in changes.items() if k not in obj.sections}
        sections = {k: changes.get(k, v) for k, v in obj.sections.items()}
        return dataclasses.replace(obj, **own, sections=sections)
    return dataclasses.replace(obj, **changes)


def replace_section(cfg: C, name: str, **changes: Any) -> C:
    """A copy of ``cfg`` whose section ``name`` has ``changes`` (a variant: ``cfg`` itself is left as it was)."""
    return _replaced(cfg, {name: dataclasses.replace(getattr(cfg, name), **changes)})


def _merged(obj: Any, values: dict[str, Any], where: str) -> Any:
    """A copy of ``obj`` with the nested mapping ``values`` merged in; an unknown key is one line naming it."""
    known = children(obj)
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise SuiteError(f"unknown config key '{where}{key}' (known: {', '.join(sorted(known))})")
        current = known[key]
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SuiteError(f"config key '{where}{key}' must be a mapping")
            changes[key] = _merged(current, value, f"{where}{key}.")
        else:
            changes[key] = value
    return _replaced(obj, changes)


#: numeric fields with an upper bound as well
AT_MOST = {"torch.percentile": 100.0}
#: numeric fields of the common sections that may be 0 (every other int/float field must be positive, unless
#: its section marks it with :func:`non_negative`)
NON_NEGATIVE = frozenset({
    "calibration.seed", "training.seed", "benchmark.warmup", "training.momentum", "training.weight_decay",
    "tuning.max_drop", "tuning.max_float_layers",
})
_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def non_negative(default: float) -> Any:
    """A numeric field that may be 0 (a step count such as ``torch.qat_freeze_bn_after``)."""
    return field(default=default, metadata={"non_negative": True})


def may_be_zero(dotted: str, f: dataclasses.Field) -> bool:
    return dotted in NON_NEGATIVE or bool(f.metadata.get("non_negative"))


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


def annotation_text(f: dataclasses.Field) -> str:
    """A field's annotation as written (``int | None``), whether or not its module postpones annotations."""
    return f.type if isinstance(f.type, str) else re.sub(r"<class '(\w+)'>", r"\1", str(f.type))


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def validate_config(cfg: C) -> C:
    """Every field's type, range and choices, checked once when the config is built: a wrong value is one line,
    before any work (e.g. ``calibration.size: "thirty-two"``, ``data.batch_size: 0``, ``ort.granularity: layer``)."""
    def walk(obj: Any, where: str) -> None:
        fields = {f.name: f for f in dataclasses.fields(obj)}
        for name, value in children(obj).items():
            dotted = f"{where}{name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{dotted}.")
                continue
            f = fields[name]
            annotation = annotation_text(f)
            if not _accepts(annotation, value):
                raise SuiteError(f"config key '{dotted}' must be {annotation} (got {value!r})")
            low = 0 if may_be_zero(dotted, f) else None
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


def field_of(root: Any, dotted: str) -> tuple[Any, dataclasses.Field | None]:
    """The value and the dataclass field behind a config key such as ``ort.calibration_method`` in ``root``."""
    *parents, leaf = dotted.split(".")
    node: Any = root
    for part in parents:
        node = children(node)[part]
    known = {f.name: f for f in dataclasses.fields(node)}
    return getattr(node, leaf), known.get(leaf)


def field_choices(root: Any, dotted: str) -> tuple[str, ...] | None:
    """The values a config key accepts, where it is a :func:`choice` field of ``root``'s sections."""
    _, f = field_of(root, dotted)
    return f.metadata.get("choices") if f is not None else None


def load_into(cfg: C, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """``cfg`` (the defaults), then the YAML recipe at ``path``, then dotted ``overrides`` ({'model.arch': ...})."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SuiteError(f"config file not found: {path}")
        data = load_yaml(path) or {}  # a duplicate key, non-UTF-8 bytes: one line
        if not isinstance(data, dict):
            raise SuiteError(f"config file {path} must hold a mapping at top level")
        cfg = _merged(cfg, data, "")
    nested: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate_config(_merged(cfg, nested, ""))


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


def with_overrides(cfg: C, values: dict[str, Any]) -> C:
    """A copy of ``cfg`` with a nested mapping of config values merged in (``cfg`` itself is left as it was)."""
    return validate_config(_merged(cfg, values, ""))


def resolve_path(path: str | Path) -> Path:
    """Relative output folders live under the repository root, whatever the working directory."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path
