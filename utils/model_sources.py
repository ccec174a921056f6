"""Where the FP32 model comes from: one grammar for ``--arch`` (alias ``--model``) in every script.

- a registry name (``demo``, ``resnet20``, ``resnet50``, ``efficientnet_lite0``): utils.models, as before;
- ``torchvision:NAME`` and ``timm:NAME``: the library's architecture, weights from a local ``--weights``
  (``.pth`` or ``.safetensors``: no model hub is reachable from a run);
- ``package.module:callable``: the user's own code, imported from the current directory or ``PYTHONPATH``,
  called with no arguments, returning an ``nn.Module`` (``--weights`` optional);
- a TorchScript file (``torch.jit.save``) or a ``torch.export`` archive (``.pt2``);
- an ONNX file (``.onnx``): only the ONNX toolchains run on it (it becomes their ``--onnx`` input); the
  PyTorch-only toolchains are skipped with the reason.

A source that knows its preprocessing (timm's data config, torchvision's weights transforms) gives it to the
data unless a flag says otherwise (:func:`source_preprocessing`); the result is in every manifest.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.errors import SuiteError, missing_package

log = logging.getLogger(__name__)

LIBRARIES = ("torchvision", "timm")
FILE_SUFFIXES = {".onnx": "onnx", ".pt2": "export", ".pt": "torchscript", ".ts": "torchscript",
                 ".jit": "torchscript", ".torchscript": "torchscript"}


@dataclass(frozen=True)
class ModelSource:
    """A parsed ``--arch``: ``kind`` is registry | torchvision | timm | callable | torchscript | export | onnx."""

    kind: str
    spec: str  # as the user wrote it
    target: str  # the registry/library name, the ``module:callable``, or the file path

    @property
    def name(self) -> str:
        """What artifacts and reports are named after: the architecture name, the callable, or the file's stem."""
        if self.is_file:
            return Path(self.target).stem
        return self.target.replace(":", ".") if self.kind == "callable" else self.target

    @property
    def is_file(self) -> bool:
        return self.kind in ("torchscript", "export", "onnx")

    @property
    def path(self) -> Path | None:
        return Path(self.target).expanduser() if self.is_file else None


def parse_source(spec: str) -> ModelSource:
    """The kind of ``spec``, from its form alone (no file is read: see :func:`check_source`)."""
    suffix = Path(spec).suffix.lower()
    if suffix in FILE_SUFFIXES:
        return ModelSource(FILE_SUFFIXES[suffix], spec, spec)
    if ":" in spec:
        prefix, _, name = spec.partition(":")
        if prefix in LIBRARIES:
            if not name:
                raise SuiteError(f"--arch {spec}: name the {prefix} architecture after the colon")
            return ModelSource(prefix, spec, name)
        if not prefix or not name or not all(part.isidentifier() for part in [*prefix.split("."), name]):
            raise SuiteError(f"--arch {spec}: expected package.module:callable, torchvision:NAME or timm:NAME")
        return ModelSource("callable", spec, spec)
    if "/" in spec or os.sep in spec:
        raise SuiteError(f"--arch {spec}: a model file must end in .onnx, .pt2 (torch.export) or .pt/.ts (TorchScript)")
    return ModelSource("registry", spec, spec)


def check_source(source: ModelSource) -> None:
    """A model file exists and is of its kind, before any work (one line, exit 2). An ONNX file's own check is
    the ONNX toolchains' (quantization.onnx_export.check_onnx_file, which quantization.workflow.prepare runs)."""
    if not source.is_file:
        return
    path = source.path
    if not path.is_file():
        raise SuiteError(f"model file not found: {path}")
    if source.kind != "onnx" and not zipfile.is_zipfile(path):
        what = "a torch.export .pt2 archive" if source.kind == "export" else "a TorchScript file"
        raise SuiteError(f"{path}: not {what} (not a zip archive)")


def source_preprocessing(source: ModelSource) -> dict[str, Any]:
    """The preprocessing the source itself documents (resize, crop, mean, std, interpolation), or {}."""
    if source.kind == "timm":
        timm = _import_timm()
        from timm.data import resolve_data_config

        pretrained = timm.get_pretrained_cfg(source.target)
        if pretrained is None:
            return {}
        data = resolve_data_config(pretrained_cfg=pretrained.to_dict())
        crop = int(data["input_size"][-1])
        return {"image_size": crop, "resize": int(round(crop / data.get("crop_pct", 0.875))),
                "mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]],
                "interpolation": str(data.get("interpolation", "bilinear"))}
    if source.kind == "torchvision":
        from torchvision import models

        try:
            transforms = models.get_model_weights(source.target).DEFAULT.transforms()
        except (ValueError, KeyError, AttributeError):  # an architecture without published weights
            return {}
        return {"image_size": int(transforms.crop_size[0]), "resize": int(transforms.resize_size[0]),
                "mean": [float(v) for v in transforms.mean], "std": [float(v) for v in transforms.std],
                "interpolation": str(transforms.interpolation.value)}
    return {}


def with_source_preprocessing(data: Any, source: ModelSource) -> Any:
    """``data`` (a DataConfig of image files) with the source's preprocessing where no flag or config set it."""
    if getattr(data, "dataset", None) != "imagenet":  # demo and CIFAR-10 arrays have their own fixed size
        return data
    given = source_preprocessing(source)
    fill = {key: value for key, value in given.items() if hasattr(data, key) and getattr(data, key) is None}
    if fill:
        log.info("preprocessing from %s: %s", source.spec, ", ".join(f"{k}={v}" for k, v in fill.items()))
    return replace(data, **fill) if fill else data


def _import_timm():
    try:
        import timm
    except ImportError as exc:
        raise missing_package("timm: models", "timm", "requirements/timm.txt") from exc
    return timm


def _import_callable(target: str) -> nn.Module:
    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the user's own code, as `python -c` would see it
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SuiteError(f"--arch {target}: cannot import {module_name} ({exc}); run from its folder or set "
                         "PYTHONPATH") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SuiteError(f"--arch {target}: {module_name} has no callable {attr}")
    built = factory()
    if not isinstance(built, nn.Module):
        raise SuiteError(f"--arch {target}: returned {type(built).__name__}, not a torch.nn.Module")
    return built


def read_tensors(path: Path, allow_unsafe_load: bool) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors, or a ``.pth`` through utils.models (weights_only unless allowed)."""
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise SuiteError(f"weights file not found: {path}")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise SuiteError(f"{path}: not a readable .safetensors file ({exc})") from exc
    from utils.models import read_state_dict

    return read_state_dict(path, allow_unsafe_load)


def build_source_module(source: ModelSource, num_classes: int | None) -> nn.Module:
    """The untrained (library, callable) or saved (TorchScript, torch.export) module of a non-registry source."""
    if source.kind == "timm":
        return _import_timm().create_model(source.target, pretrained=False,
                                           **({"num_classes": num_classes} if num_classes else {}))
    if source.kind == "torchvision":
        from torchvision import models

        if source.target not in models.list_models(module=models):
            raise SuiteError(f"--arch {source.spec}: torchvision has no classifier {source.target}")
        return models.get_model(source.target, weights=None, **({"num_classes": num_classes} if num_classes else {}))
    if source.kind == "callable":
        return _import_callable(source.target)
    if source.kind == "torchscript":
        try:
            return torch.jit.load(str(source.path), map_location="cpu")
        except RuntimeError as exc:
            raise SuiteError(f"{source.path}: not a TorchScript file ({str(exc).splitlines()[0][:160]})") from exc
    if source.kind == "export":
        try:
            return ExportedModule(torch.export.load(str(source.path)).module())
        except Exception as exc:  # torch.export.load raises several kinds on a foreign archive
            raise SuiteError(f"{source.path}: not a torch.export archive ({str(exc).splitlines()[0][:160]})") from exc
    raise SuiteError(f"--arch {source.spec}: an {source.kind} source has no PyTorch module")


def output_classes(module: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """The width of the module's output for a batch of two: how many classes it predicts (a torch.export
    program with a fixed batch size, which the suite's batches cannot run, is refused here)."""
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(2, *input_shape))
    except SuiteError:
        raise
    except Exception as exc:  # the user's module on the data's input shape: any error is theirs
        hint = (": export it with a dynamic batch (dynamic_shapes={'x': {0: torch.export.Dim('batch')}})"
                if isinstance(module, ExportedModule) else "")
        raise SuiteError(f"the model does not run on a batch of 2 x {' x '.join(map(str, input_shape))} inputs "
                         f"({str(exc).splitlines()[0][:160]}){hint}") from exc
    if isinstance(out, (tuple, list)):
        out = out[0]
    return int(out.shape[-1])


def onnx_output_classes(path: Path) -> int | None:
    """The fixed last dimension of an ONNX file's first output (None where it is symbolic)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.output[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if dims and dims[-1].HasField("dim_value") else None


class OnnxOnly(nn.Module):
    """The stand-in module of an ONNX source: the ONNX toolchains read the file, never this; anything else that
    tried to run it gets one line instead of a wrong answer."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def forward(self, *_: Any) -> torch.Tensor:
        raise SuiteError(f"{self.path.name} is an ONNX model: this step needs a PyTorch model")


class ExportedModule(nn.Module):
    """A ``torch.export`` program's module, which refuses ``.train()``/``.eval()`` (it is always in the mode it was
    exported in): the suite's steps call ``.eval()`` on every model."""

    def __init__(self, program_module: nn.Module):
        super().__init__()
        self.program = program_module

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, *args: Any) -> Any:
        return self.program(*args)


def needs_python_module(source: ModelSource) -> str | None:
    """Why the PyTorch toolchains (FX, eager, PT2E, QAT, dynamic) cannot take this source, or None."""
    if source.kind == "onnx":
        return f"needs a PyTorch model ({source.spec} is ONNX)"
    if source.kind in ("torchscript", "export"):  # FX cannot trace either; PT2E/eager/QAT need the Python module
        what = "TorchScript" if source.kind == "torchscript" else "a torch.export program"
        return f"needs a PyTorch model in Python ({source.spec} is {what}; the ONNX toolchains take it)"
    return None
