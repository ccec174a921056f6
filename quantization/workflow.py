"""The quantize half of a run: config -> model + data -> toolchain -> artifacts.

Shared by the per-toolchain scripts and ``python -m resnet.run`` so every path calibrates on the
same seeded sample and writes the same artifacts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from quantization.base import Quantizer
from quantization.registry import quantizer_class
from quantization.run_config import RunConfig
from quantization.transforms import apply_transforms, requested
from utils.artifacts import Artifact
from utils.config import replace_section
from utils.data import CalibrationSet, DataSplits, calibration_set, check_disjoint_content, load_splits
from utils.errors import SuiteError, ToolchainUnavailable
from utils.model_sources import ModelSource, check_source, needs_python_module, parse_source, with_source_preprocessing
from utils.models import LoadedModel, load_model

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    splits: DataSplits
    model: LoadedModel
    calibration: CalibrationSet
    _transformed: dict = field(default_factory=dict, repr=False)  # (transform settings, weight grid) -> model

    def model_for(self, quantizer: Quantizer) -> LoadedModel:
        """The model ``quantizer`` should quantize: the FP32 model after the configured transforms.

        Bias correction depends on the toolchain's weight grid, so the result is kept per grid."""
        cfg = quantizer.cfg.transforms
        model = self.model
        excluded = quantizer.bias_correction_excluded() if cfg.bias_correction else None
        if excluded:
            log.info("bias correction not applied: %s", excluded)
            cfg = replace(cfg, bias_correction=False)
            model = replace(model, not_applied={**model.not_applied, "bias_correction": excluded})
        if not requested(cfg):
            return model
        if not quantizer.reads_torch_model():  # an ONNX file is quantized as it is; --cle was asked for by name
            raise SuiteError("--cle works on the PyTorch model and cannot apply to an ONNX model source")
        gathers = quantizer.gathers_bias_statistics()
        key = (repr(cfg), quantizer.weight_scheme(), gathers)
        if key not in self._transformed:
            self._transformed[key] = apply_transforms(model, cfg, self.calibration, quantizer.weight_scheme(),
                                                      in_calibration=gathers)
        return self._transformed[key]


def prepare(cfg: RunConfig) -> Prepared:
    """Check a model file, load data (cheap errors first), then the model, then draw the calibration sample.

    The model source's own preprocessing (timm, torchvision) fills what no flag set (utils.model_sources)."""
    source = check_model_source(cfg)
    cfg = source_config(cfg)
    splits = load_splits(with_source_preprocessing(cfg.data, source), cfg.calibration)
    # the data decides the spatial size the artifacts are built for, and the class names they report
    model = load_model(cfg.model, splits.num_classes, input_shape=splits.input_shape,
                       class_names=list(splits.class_names), preprocess=dict(splits.preprocess))
    if model.num_classes < splits.num_classes:
        raise SuiteError(f"model {model.arch} has {model.num_classes} classes but dataset "
                         f"'{splits.name}' has {splits.num_classes} (set --num-classes)")
    calibration = check_disjoint_content(calibration_set(splits, cfg.calibration), splits, cfg.data.allow_overlap)
    model = replace(model, calibration=calibration.facts())  # into every calibrated artifact's manifest
    onnx_path = Path(cfg.onnx.onnx_path) if cfg.onnx.onnx_path else None
    if onnx_path is not None or cfg.onnx.calibration_data:  # the ONNX toolchains' own inputs, before any work
        from quantization.onnx_quantizer import check_calibration_data, check_onnx_input

        if onnx_path is not None:
            check_onnx_input(onnx_path, model.input_shape)
        if cfg.onnx.calibration_data:
            check_calibration_data(Path(cfg.onnx.calibration_data), onnx_path, model, splits, cfg.data.allow_overlap)
    return Prepared(splits, model, calibration.decoded())


def check_model_source(cfg: RunConfig) -> ModelSource:
    """The model file of ``--arch`` exists and is of its kind (an ONNX file: the ONNX toolchains' own check), in
    one line before any work."""
    source = parse_source(cfg.model.arch)
    check_source(source)
    if source.kind == "onnx":
        from quantization.onnx_export import check_onnx_file

        if cfg.onnx.onnx_path:
            raise SuiteError(f"--arch {source.spec} is an ONNX model already: drop --onnx")
        check_onnx_file(source.path)
    return source


def source_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with an ONNX model source as the ONNX toolchains' input file (their ``--onnx``)."""
    source = parse_source(cfg.model.arch)
    if source.kind != "onnx" or cfg.onnx.onnx_path:
        return cfg
    return replace_section(cfg, "onnx", onnx_path=str(source.path))


def make_quantizer(name: str, cfg: RunConfig) -> Quantizer:
    cls = quantizer_class(name)
    reason = cls.unavailable_reason()
    if reason:
        raise ToolchainUnavailable(f"toolchain {name} cannot run here: {reason}")
    why = None if cls.accepts_onnx_model else needs_python_module(parse_source(cfg.model.arch))
    if why:
        raise ToolchainUnavailable(f"toolchain {name} {why}")
    return cls(source_config(cfg))


def run_toolchain(name: str, cfg: RunConfig, prepared: Prepared) -> list[Artifact]:
    """The FP32 reference, the INT8 artifact, and any further references of toolchain ``name``.

    The FP32 reference is always the untransformed model: transforms are part of the INT8 recipe."""
    quantizer = make_quantizer(name, cfg)
    if quantizer.needs_training_data:  # training images: the calibration pool, never evaluation images
        quantizer.set_training_data(prepared.splits.calibration_pool, prepared.splits.calibration_pool_ids)
    fp32 = quantizer.export_fp32(prepared.model)
    log.info("%s: FP32 reference %s", name, fp32.path)
    int8 = quantizer.quantize(prepared.model_for(quantizer), prepared.calibration)
    log.info("%s: INT8 artifact %s", name, int8.path)
    return [fp32, int8, *quantizer.extra_artifacts(prepared.model)]

