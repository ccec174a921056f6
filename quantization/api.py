"""The Python API of the quantize half: ``quantize(model_or_path, calibration, toolchain=..., target=...)``.

The same steps as the scripts (quantization.workflow.run_toolchain: the FP32 reference, then the INT8 artifact
with its manifest), from objects instead of flags::

    from quantization.api import quantize
    int8 = quantize(my_module, my_loader, toolchain="ort")   # -> utils.artifacts.Artifact

``model_or_path`` is an ``nn.Module`` or anything ``--arch`` takes (a registry name, ``timm:NAME``,
``package.module:callable``, a TorchScript, ``.pt2`` or ``.onnx`` file); ``calibration`` is a DataLoader, an
iterable of ``(images, labels)`` batches (or of image batches), or an array/tensor of N x C x H x W images,
already preprocessed as the model expects.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quantization.run_config import RunConfig
from quantization.workflow import make_quantizer
from utils.artifacts import Artifact, check_writable, write_bytes
from utils.config import replace_section, resolve_path, with_overrides
from utils.data import CalibrationSet, TensorDataset
from utils.errors import SuiteError
from utils.model_sources import output_classes
from utils.models import LoadedModel, load_model

#: the in-memory FP32 reference of each INT8 artifact quantize() made (evaluation.api.compare adds it)
REFERENCE_KEY = "fp32_reference"


def as_tensors(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float32, N x C x H x W) and labels (int64; -1 where none were given) from a DataLoader, an
    iterable of batches or an array."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        images = torch.as_tensor(np.asarray(data) if isinstance(data, np.ndarray) else data)
        return _checked(images.float(), torch.full((len(images),), -1, dtype=torch.int64), what)
    if not isinstance(data, Iterable):
        raise SuiteError(f"{what}: expected a DataLoader, an iterable of (images, labels) batches or an array, "
                         f"got {type(data).__name__}")
    images, labels = [], []
    for batch in data:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        x = torch.as_tensor(x).float()
        images.append(x)
        labels.append(torch.full((len(x),), -1, dtype=torch.int64) if y is None else torch.as_tensor(y).long())
    if not images:
        raise SuiteError(f"{what}: no batches")
    return _checked(torch.cat(images), torch.cat(labels), what)


def _checked(images: torch.Tensor, labels: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.dim() != 4:
        raise SuiteError(f"{what}: images must be N x C x H x W, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise SuiteError(f"{what}: images hold NaN or infinite values")
    return images.contiguous(), labels


def module_model(module: nn.Module, input_shape: tuple[int, int, int], name: str, models_dir: Path) -> LoadedModel:
    """An in-memory module as a LoadedModel whose weights are a file (models_dir/inputs/NAME-SHA.pth), so every
    manifest records the weights' sha256 as a script run does."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:12]
    weights = models_dir / "inputs" / f"{name}-{digest}.pth"
    if not weights.is_file():
        weights.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(weights, buffer.getbuffer())
    module = module.eval()
    return LoadedModel(module, name, output_classes(module, input_shape), input_shape, weights)


def quantize(model_or_path: nn.Module | str | Path, calibration: Any, toolchain: str = "ort", target: str = "auto",
             *, models_dir: str | Path = "models", name: str | None = None,
             settings: dict[str, Any] | None = None) -> Artifact:
    """Quantize with one toolchain; returns the INT8 artifact (file + manifest), its FP32 reference written beside.

    ``settings`` are config values as in a YAML recipe (``{"ort": {"calibration_method": "entropy"}}``);
    ``models_dir`` relative: under the repository, as ``--models-dir``."""
    cfg = with_overrides(RunConfig(), {"target": target, "models_dir": str(models_dir), **(settings or {})})
    check_writable(resolve_path(cfg.models_dir), "models_dir")
    images, labels = as_tensors(calibration, "calibration")
    shape = tuple(int(s) for s in images.shape[1:])
    if isinstance(model_or_path, nn.Module):
        model = module_model(model_or_path, shape, name or type(model_or_path).__name__.lower(),
                             resolve_path(cfg.models_dir))
    else:
        cfg = replace_section(cfg, "model", arch=str(model_or_path))
        model = load_model(cfg.model, None, input_shape=shape)
        model = replace(model, arch=name or model.arch)
    sample = CalibrationSet(TensorDataset(images, labels), [f"calibration[{i}]" for i in range(len(images))])
    quantizer = make_quantizer(toolchain, cfg)
    if quantizer.needs_training_data:  # QAT fine-tunes on the calibration images, which then need labels
        if (labels < 0).any():
            raise SuiteError(f"toolchain {toolchain} trains on the calibration images: give (images, labels) batches")
        quantizer.set_training_data(sample.dataset, sample.ids)
    fp32 = quantizer.export_fp32(model)
    int8 = quantizer.quantize(model, sample)
    int8.manifest[REFERENCE_KEY] = str(fp32.path)  # in memory only: the file's manifest stays as written
    return int8
