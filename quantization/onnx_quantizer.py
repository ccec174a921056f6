"""What the ONNX toolchains share: the FP32 ONNX reference, the named calibration feed, exclusions.

ModelOpt and ONNX Runtime both quantize an FP32 ONNX file into a Q/DQ ONNX file from the same seeded
calibration sample; only the quantize call differs, so everything around it lives here once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
import zipfile
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quantization.base import Quantizer, float_suffix
from quantization.onnx_export import INPUT_NAME, check_onnx_file, export_onnx, onnx_input_names
from quantization.run_config import RunConfig
from quantization.transforms import BIAS_CORRECTION
from utils.artifacts import Artifact, build_manifest, load_artifact, sha256_file, write_artifact
from utils.config import replace_section
from utils.data import CalibrationSet, DataSplits, TensorDataset, check_disjoint_content
from utils.errors import SuiteError
from utils.input_checks import check_calibration_arrays
from utils.models import LoadedModel
from utils.stages import StageTimer

log = logging.getLogger(__name__)


def _digest_of(value: Any) -> str:
    """A short hash of a JSON-able value (calibration content digests, preprocessing) for the export reuse check."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def onnx_node_names(path: Path) -> list[tuple[str, str]]:
    """(name, op_type) of every node of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [(n.name, n.op_type) for n in model.graph.node]


def resolve_exclusions(path: Path, patterns: list[str], op_types: list[str], section: str) -> list[str]:
    """Node names matched by the regexes (``re.match``, as ModelOpt does); warn on a pattern that matches none.

    Messages name the config keys (``<section>.exclude_nodes``): each ONNX toolchain has its own."""
    nodes = onnx_node_names(path)
    matched: list[str] = []
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise SuiteError(f"{section}.exclude_nodes pattern '{pattern}' is not a valid regex: {exc}") from exc
        hits = [name for name, _ in nodes if regex.match(name)]
        if not hits:
            log.warning("%s.exclude_nodes pattern '%s' matches no node of %s; nothing excluded for it",
                        section, pattern, path.name)
        matched.extend(h for h in hits if h not in matched)
    present = {op for _, op in nodes}
    for op_type in op_types:
        if op_type not in present:
            log.warning("%s.exclude_op_types %s: the model has no such node", section, op_type)
    return matched


def read_calibration_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays as stored (never cast: uint8 pixels are refused by the door check, not silently floated)."""
    if not path.is_file():
        raise SuiteError(f"calibration data not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SuiteError(f"{path}: not a readable .npz of arrays ({exc})") from exc


def check_onnx_input(onnx_path: Path, input_shape: tuple[int, ...]) -> None:
    """A given ``--onnx`` takes the dataset's images (C x H x W of its fixed axes): a mismatch was an ONNX Runtime
    InvalidArgument traceback in the middle of calibration."""
    import onnx

    check_onnx_file(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    for graph_input in (i for i in model.graph.input if i.name not in initializers):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
        fixed = dims[1:]
        if len(fixed) != len(input_shape) or any(d is not None and d != s for d, s in zip(fixed, input_shape, strict=True)):
            shown = " x ".join("?" if d is None else str(d) for d in fixed)
            raise SuiteError(f"--onnx {onnx_path.name} takes {graph_input.name} of N x {shown}, but the dataset's "
                             f"images are {' x '.join(str(s) for s in input_shape)} (check --dataset, --image-size)")


def check_calibration_data(path: Path, onnx_path: Path | None, model: LoadedModel, splits: DataSplits,
                           allow_overlap: bool) -> None:
    """``--calibration-data`` at the door, before the FP32 export: keyed by the inputs of the ONNX it calibrates
    (``--onnx``, else the suite's export), float32, finite, the model's input shape, values in the dataset's
    normalised pixel range (utils.input_checks), and no evaluation image in it (the content-digest check of the
    seeded sample, on the arrays' bytes; ``--allow-overlap`` lets it through)."""
    feed = read_calibration_npz(path)
    if onnx_path is not None:
        check_onnx_file(onnx_path)
    names = onnx_input_names(onnx_path) if onnx_path is not None else [INPUT_NAME]
    if sorted(feed) != sorted(names):
        raise SuiteError(f"calibration data inputs {sorted(feed)} do not match the model's inputs {names} ({path.name})")
    check_calibration_arrays(path, feed, model.input_shape, splits.preprocess)
    for name, array in feed.items():
        images = torch.from_numpy(np.ascontiguousarray(array))
        sample = CalibrationSet(TensorDataset(images, torch.zeros(len(images), dtype=torch.int64)),
                                [f"{path.name}['{name}'][{i}]" for i in range(len(images))])
        check_disjoint_content(sample, splits, allow_overlap)


def calibration_step(sample_size: int, asked: int, histogram: bool = True) -> int:
    """Images per calibration forward pass: the largest divisor of the sample size up to the one asked.

    ORT's histogram calibrators (which ModelOpt's entropy runs on) stack the batches and fail on a
    short last one, and they size their histogram from the first batch's range, so both ONNX
    toolchains step through the sample in the same equal batches (300 images, 32 asked: 30). A small
    step only matters for those (``histogram``): min/max ranges do not depend on it."""
    step = max(d for d in range(1, max(1, min(asked, sample_size)) + 1) if sample_size % d == 0)
    if histogram and 2 * step < min(asked, sample_size):
        log.warning("%d calibration images step %d at a time (no divisor nearer to --calib-batch-size %d): "
                    "histogram calibration (entropy, percentile) then starts from a small batch's range; "
                    "pick a --calib-size with a divisor near the batch size", sample_size, step, asked)
    return step


def check_feed(onnx_path: Path, feed: dict[str, np.ndarray]) -> None:
    """The calibration arrays must be keyed by the model's input names."""
    names = onnx_input_names(onnx_path)
    if sorted(feed) != sorted(names):
        raise SuiteError(f"calibration data inputs {sorted(feed)} do not match the model's inputs {names} "
                         f"({onnx_path.name})")


class OnnxQuantizer(Quantizer):
    """Base of the ONNX toolchains: subclasses implement :meth:`_quantize_file`.

    The export and the calibration input come from ``cfg.onnx`` (shared); exclusions and weight bits from the
    subclass's own section (``self.options``: ``cfg.modelopt``, ``cfg.ort``)."""

    runtimes = ("onnxruntime", "openvino", "onnxruntime_reference")
    layer_fallback = True
    accepts_onnx_model = True

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.onnx_path = Path(cfg.onnx.onnx_path) if cfg.onnx.onnx_path else None
        self.calibration_data = Path(cfg.onnx.calibration_data) if cfg.onnx.calibration_data else None
        self._fp32: Artifact | None = None
        self.float_layers: list[str] = []

    @abstractmethod
    def tag(self) -> str: ...

    @abstractmethod
    def _quantize_file(self, fp32: Path, feed: dict[str, np.ndarray], exclude: list[str], out: Path,
                       timer: StageTimer, pending_correction: bool) -> None:
        """Write the Q/DQ ONNX for ``fp32`` into ``out``, its stages timed in ``timer``; with
        ``pending_correction``, apply the fast bias correction from the calibration session's own input sums
        (quantization/transforms/onnx_bias_correction.py)."""

    def reads_torch_model(self) -> bool:
        return self.onnx_path is None

    def export_fp32(self, model: LoadedModel) -> Artifact:
        if self._fp32 is not None:
            return self._fp32
        if self.onnx_path is not None:
            check_onnx_file(self.onnx_path)
            try:
                self._fp32 = load_artifact(self.onnx_path)
            except SuiteError:  # a user's own ONNX without our manifest: its source is the file itself
                self._fp32 = Artifact(self.onnx_path, "onnx", "onnx", "fp32",
                                {"name": self.onnx_path.stem, "settings": {"mode": "fp32"},
                                 **self.model_facts(model), **self.source_facts(model)})
            return self._fp32
        self._fp32 = self._export(model)
        return self._fp32

    def _export(self, model: LoadedModel) -> Artifact:
        final = self.output_dir().parent / "onnx" / f"{self.artifact_stem(model, f'fp32_opset{self.cfg.onnx.opset}')}.onnx"
        extra = self.model_facts(model)
        if model.transforms:  # a file of an earlier run is reused only if made from the same images and grid
            extra["transform_inputs"] = {"calibration_ids_sha256": model.calibration.get("ids_sha256"),
                                         "calibration_content": _digest_of(model.calibration.get("digests")),
                                         "preprocess": _digest_of(model.preprocess),
                                         "weight_scheme": repr(self.weight_scheme())}
        return export_onnx(model.module, model.input_shape, final, name=f"{model.arch} FP32 ONNX",
                           opset=self.cfg.onnx.opset, source_weights=model.weights_path, extra=extra)

    def source_facts(self, model: LoadedModel) -> dict[str, Any]:
        """Every source file by its own sha256: a given ``--onnx`` is the source of the weights (not ``--weights``,
        which it may not have been made from), and ``--calibration-data`` is recorded beside it."""
        facts: dict[str, Any] = {}
        if self.onnx_path is not None:
            facts.update(source_weights=str(self.onnx_path), source_weights_sha256=sha256_file(self.onnx_path))
        if self.calibration_data is not None:
            facts.update(calibration_data=str(self.calibration_data),
                         calibration_data_sha256=sha256_file(self.calibration_data))
        return facts

    def source_onnx(self, model: LoadedModel) -> Artifact:
        """The FP32 ONNX to quantize: the reference itself (also for a bias correction made on the ONNX graph), or
        the transformed model's own export."""
        if model.bias_correction_pending:  # corrected on the ONNX graph: exported (and named) without the correction
            model = dataclasses.replace(model, transforms=[t for t in model.transforms if t not in BIAS_CORRECTION.values()],
                                        bias_correction_pending=False)
        if not model.transforms:
            return self.export_fp32(model)
        if self.onnx_path is not None:
            raise SuiteError("transforms (--cle, --bias-correction) work on the PyTorch model and cannot apply "
                             "to an ONNX model source")
        return self._export(model)

    def quantizable_layers(self, model: LoadedModel) -> list[str]:
        return [name for name, op in onnx_node_names(self.export_fp32(model).path) if op in ("Conv", "Gemm", "MatMul")]

    def with_float_layers(self, layers: list[str]) -> OnnxQuantizer:
        own = self.options
        twin = type(self)(replace_section(self.cfg, self.section, exclude_nodes=[
            *own.exclude_nodes, *("^" + re.escape(n) + "$" for n in layers)]))
        twin._fp32, twin.float_layers = self._fp32, list(layers)
        return twin

    def calibration_feed(self, fp32: Path, calibration: CalibrationSet) -> dict[str, np.ndarray]:
        if self.calibration_data is not None:
            feed = read_calibration_npz(self.calibration_data)
        else:
            feed = {onnx_input_names(fp32)[0]: calibration.as_array()}
        check_feed(fp32, feed)
        return feed

    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        """Stages in the manifest: export (the FP32 ONNX, reused when cached), feed (the calibration
        arrays), the toolchain's own (ORT: prepare, calibrate, quantize; ModelOpt: quantize, one library
        call), save (the ONNX check)."""
        timer = StageTimer(self.toolchain)
        start = time.perf_counter()
        with timer.stage("export"):
            fp32 = self.source_onnx(model)
        with timer.stage("feed"):
            feed = self.calibration_feed(fp32.path, calibration)
        m = self.options
        exclude = resolve_exclusions(fp32.path, m.exclude_nodes, m.exclude_op_types, self.section)
        tag = self.tag() + float_suffix(self.float_layers)
        final = self.output_dir() / f"{self.artifact_stem(model, tag)}.onnx"
        settings = {**self.settings(), "nodes_excluded": exclude}
        ids = calibration.ids if self.calibration_data is None else [f"{self.calibration_data}:{i}" for i in
                                                                     range(len(next(iter(feed.values()))))]

        def write(tmp: Path) -> None:
            self._quantize_file(fp32.path, feed, exclude, tmp, timer, model.bias_correction_pending)
            with timer.stage("save"):
                check_onnx_file(tmp)
            manifest["quantize_seconds"] = round(time.perf_counter() - start, 2)
            manifest["quantize_seconds_by_stage"] = dict(timer.seconds)

        manifest = build_manifest(name=f"{model.arch} {tag}", toolchain=self.toolchain, kind="onnx_qdq",
                                  precision="int8", settings=settings, source_weights=model.weights_path,
                                  calibration_ids=ids,
                                  extra={**self.model_facts(model), "fp32_onnx": str(fp32.path),
                                         **self.source_facts(model)})
        return write_artifact(final, write, manifest, toolchain=self.toolchain, kind="onnx_qdq", precision="int8")

    def weight_bits(self) -> int:
        """7 where the target's kernels add u8 x s8 pairs in saturating 16-bit lanes, else 8 (or the user's)."""
        return self.target.weight_bits(self.options.weight_bits)  # auto | 7 | 8, checked when the config was built

    def bits_tag(self) -> str:
        return "_w7" if self.weight_bits() == 7 else ""

    def common_settings(self) -> dict[str, Any]:
        m = self.options
        return {"target": self.target.name, "weight_bits": self.weight_bits(),
                "calibration_size": self.cfg.calibration.size, "calibration_seed": self.cfg.calibration.seed,
                "calibration_batch_size": self.calibration_batch_size(),
                "exclude_nodes": list(m.exclude_nodes), "exclude_op_types": list(m.exclude_op_types),
                "opset": self.cfg.onnx.opset}
