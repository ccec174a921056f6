"""The Quantizer interface (the toolchain registry: quantization/registry.py).

A Quantizer writes two artifacts of the same kind: the FP32 reference (so FP32 and INT8 run on the
same runtime) and the quantized model. Toolchain packages are imported inside the quantizer modules,
so a missing package only stops that toolchain, with a message naming what to install.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from quantization.run_config import RunConfig
from quantization.transforms import BIAS_CORRECTION
from quantization.transforms.weight_scheme import WeightScheme
from utils.artifacts import Artifact
from utils.config import replace_section, resolve_path
from utils.data import CalibrationSet
from utils.models import LoadedModel
from utils.names import fit_name
from utils.targets import Target, resolve_target

TRANSFORM_TAGS = {"cle": "cle", "cle_relu6_to_relu": "cle6", "bias_correction": "bc", "bias_correction_sequential": "bcs"}

#: images per calibration forward pass when ``--calib-batch-size`` is not given, for ranges that do not
#: depend on the batching (running min/max, an exact histogram): small batches keep each layer's
#: activations in cache (EfficientNet-Lite0, 2 cores, AVX2: FX calibrates 300 images in 26 s at 4
#: vs 50 s at 32; ONNX Runtime's calibration graph runs 34-43 ms per image at 1-4 vs 100 ms at 30)
RANGE_ONLY_BATCH = 4
#: ... and for ranges that do: histograms sized from the first batch, moving averages
HISTOGRAM_BATCH = 32


def float_suffix(layers: list[str]) -> str:
    """A short, stable artifact-name suffix for a set of layers kept in float."""
    if not layers:
        return ""
    import hashlib

    return f"_float{len(layers)}-{hashlib.sha1(','.join(sorted(layers)).encode()).hexdigest()[:6]}"


class Quantizer(ABC):
    toolchain: ClassVar[str]
    folder: ClassVar[str]  # models/<folder>/
    #: the RunConfig section holding this toolchain's own settings (cfg.<section>): code asks the class
    section: ClassVar[str]

    needs_training_data: ClassVar[bool] = False  # QAT: trains on the dataset's training split
    #: runtimes that run this toolchain's artifacts, the recommended one first (recorded in every manifest)
    runtimes: ClassVar[tuple[str, ...]] = ()
    #: why ``--cluster`` builds this toolchain on the driver instead of in a Ray worker (None: in a worker, the
    #: same bytes as one process)
    driver_only: ClassVar[str | None] = None
    #: whether ``python -m resnet.run`` runs it when --toolchains is not given
    runs_by_default: ClassVar[bool] = False
    #: the library modules quantize() imports on first use: bench/quantize_time.py imports them before its clock
    #: starts, as it imports nncf before NNCF's, so both sides time the work and report the imports beside it
    library_modules: ClassVar[tuple[str, ...]] = ()
    #: whether quantizable_layers/with_float_layers keep single layers in float (sensitivity, --max-drop)
    layer_fallback: ClassVar[bool] = False
    #: whether it takes an ONNX or TorchScript model source (through ONNX); the others need an nn.Module in Python
    accepts_onnx_model: ClassVar[bool] = False
    #: the sweep's calibration names (minmax, percentile, entropy, mse) -> this toolchain's own setting;
    #: a name mapped to a string that is not a setting is the reason it is not supported
    calibrations: ClassVar[dict[str, str]] = {}
    unsupported_calibrations: ClassVar[dict[str, str]] = {}
    #: weight granularities the sweep may set, and why the others cannot be
    granularities: ClassVar[tuple[str, ...]] = ()
    granularity_note: ClassVar[str] = ""
    #: where the sweep writes a variant's settings in the class's section: (calibration field, granularity
    #: field, None where the toolchain has a single granularity)
    calibration_fields: ClassVar[tuple[str, str | None] | None] = None

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.target: Target = resolve_target(cfg.target)  # what the artifact is built for (auto: this CPU)
        #: where artifacts go (``<models_dir>/<folder>/``); tuning trials point it at a scratch folder
        self.models_dir: Path = resolve_path(cfg.models_dir)
        self.train_data: tuple[Any, list[str]] | None = None  # (dataset, ids), set by the workflow

    @property
    def options(self) -> Any:
        """This toolchain's own config section (``cfg.<section>``)."""
        return getattr(self.cfg, self.section)

    def ranges_depend_on_batching(self) -> bool:
        """Whether this toolchain's calibration result, as configured, changes with the batch size (a
        histogram sized from the first batch, a moving average): the subclass knows its methods."""
        return True

    def calibration_batch_size(self) -> int:
        """Images per calibration forward pass: ``--calib-batch-size`` where given; else the fast small
        batch where the batching cannot change the ranges, and the larger one where it can."""
        asked = self.cfg.calibration.batch_size
        if asked is not None:
            return asked
        return HISTOGRAM_BATCH if self.ranges_depend_on_batching() else RANGE_ONLY_BATCH

    def set_training_data(self, dataset: Any, ids: list[str]) -> None:
        self.train_data = (dataset, ids)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None where this toolchain can run here, else one line saying what is missing."""
        return None

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The settings that shape the artifact (recorded in its manifest and the report)."""

    @abstractmethod
    def export_fp32(self, model: LoadedModel) -> Artifact:
        """The FP32 model in this toolchain's artifact kind, for a same-runtime comparison."""

    @abstractmethod
    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        """Calibrate and write the INT8 artifact (atomically, with its manifest)."""

    @classmethod
    def calibration_of(cls, cfg: RunConfig) -> str:
        """The calibration setting this toolchain runs with in ``cfg`` (its own name for it)."""
        if cls.calibration_fields is None:
            raise NotImplementedError(f"toolchain {cls.toolchain} has no calibration setting")
        method, _ = cls.calibration_fields
        return getattr(getattr(cfg, cls.section), method)

    @classmethod
    def with_calibration(cls, cfg: RunConfig, setting: str | None, granularity: str | None) -> RunConfig:
        """A copy of ``cfg`` calibrating with ``setting`` (this toolchain's name) and ``granularity``."""
        if cls.calibration_fields is None:
            raise NotImplementedError(f"toolchain {cls.toolchain} has no calibration sweep")
        method, gran = cls.calibration_fields
        section = getattr(cfg, cls.section)
        changes = {method: setting or getattr(section, method)}
        if gran is not None:
            changes[gran] = granularity or getattr(section, gran)
        return replace_section(cfg, cls.section, **changes)

    @classmethod
    def has_layer_fallback(cls) -> bool:
        """Whether sensitivity and --max-drop can keep single layers of this toolchain in float."""
        return cls.layer_fallback

    def quantizable_layers(self, model: LoadedModel) -> list[str]:
        """Layer names that can be kept in float one at a time (sensitivity, fallback)."""
        raise NotImplementedError(f"toolchain {self.toolchain} has no per-layer fallback")

    def with_float_layers(self, layers: list[str]) -> Quantizer:
        """The same quantizer with ``layers`` kept in float."""
        raise NotImplementedError(f"toolchain {self.toolchain} has no per-layer fallback")

    def extra_artifacts(self, model: LoadedModel) -> list[Artifact]:
        """Further references some toolchains build (TensorRT: the FP16 engine)."""
        return []

    def output_dir(self) -> Path:
        return self.models_dir / self.folder

    def weight_scheme(self) -> WeightScheme:
        """The INT8 weight grid this toolchain writes (bias correction simulates exactly this one).

        The ONNX toolchains' default: symmetric per-channel, scale = absmax / 127."""
        return WeightScheme(per_channel=True, qmin=-127, qmax=127, divisor=127.0)

    def bias_correction_excluded(self) -> str | None:
        """Why this toolchain takes no bias correction even when it is on (None: it takes it)."""
        return None if self.reads_torch_model() else "the source is an ONNX file (the correction runs on the PyTorch model)"

    def gathers_bias_statistics(self) -> bool:
        """Whether its own calibration pass runs the FP32 layers and gathers the fast bias correction's statistics
        there (``LoadedModel.bias_correction_pending``), so the transforms need no pass of their own."""
        return False

    def reads_torch_model(self) -> bool:
        """Whether :meth:`quantize` reads the PyTorch model, so the transforms (which change that model) apply;
        a toolchain given an ONNX file to quantize says False."""
        return True

    def bias_correction_state(self, model: LoadedModel) -> str:
        """What the manifest of a calibrated artifact says about bias correction: applied, off, or why not."""
        for method, name in BIAS_CORRECTION.items():
            if name in model.transforms:
                return f"applied ({method})"
        if "bias_correction" in model.not_applied:
            return f"not applied: {model.not_applied['bias_correction']}"
        return "on" if self.cfg.transforms.bias_correction else "off"

    def model_facts(self, model: LoadedModel) -> dict[str, Any]:
        """What a runner needs to know about the model, and the target it was built for: in every manifest."""
        return {"arch": model.arch, "num_classes": model.num_classes, "input_shape": list(model.input_shape),
                "transforms": list(model.transforms), "bias_correction": self.bias_correction_state(model),
                "graph_rewrites": list(model.graph_rewrites),
                "class_names": list(model.class_names),
                "preprocess": dict(model.preprocess), "target": self.target.name,
                "calibration": dict(model.calibration),  # kept by build_manifest for calibrated artifacts only
                "target_requested": self.cfg.target, "recommended_runtime": self.runtimes[0] if self.runtimes else None}

    def artifact_stem(self, model: LoadedModel, tag: str) -> str:
        weights = model.weights_path.stem if model.weights_path else "random"
        passes = "".join(f"_{TRANSFORM_TAGS[t]}" for t in model.transforms)
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model.arch}-{fit_name(weights, 80)}_{tag}{passes}")
