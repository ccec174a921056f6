"""Eager-mode quantizable variants of the registry's models (QuantStub/DeQuantStub, FloatFunctional
residual adds, ``fuse_model``), built with the same parameter names so the FP32 weights load as they are.

Eager mode needs the model written for it; FX does not. Covered: the CIFAR ResNets (and the demo
model, a CIFAR ResNet-20) here, and the torchvision models that ship a quantizable twin.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub, fuse_modules

from utils.architectures.cifar_resnet import CIFAR_DEPTHS, BasicBlock, CifarResNet, PadShortcut
from utils.errors import SuiteError
from utils.models import LoadedModel

TORCHVISION_QUANTIZABLE = ("resnet18", "resnet50", "resnext101_32x8d", "resnext101_64x4d", "mobilenet_v2",
                           "mobilenet_v3_large", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "googlenet",
                           "inception_v3")


class QuantizablePadShortcut(PadShortcut):
    """Option-A shortcut on quantized tensors: the zero channel padding runs in float (no quantized pad op)."""

    def __init__(self, planes: int):
        super().__init__(planes)
        self.dequant, self.quant = DeQuantStub(), QuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant(super().forward(self.dequant(x)))


class QuantizableBasicBlock(BasicBlock):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        self.add = FloatFunctional()
        if isinstance(self.shortcut, PadShortcut):
            self.shortcut = QuantizablePadShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.add.add_relu(out, self.shortcut(x))

    def fuse_model(self, is_qat: bool = False) -> None:
        fuse = torch.ao.quantization.fuse_modules_qat if is_qat else fuse_modules
        fuse(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2"]], inplace=True)


class QuantizableCifarResNet(CifarResNet):
    block = QuantizableBasicBlock

    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__(blocks_per_stage, num_classes)
        self.quant, self.dequant = QuantStub(), DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(super().forward(self.quant(x)))

    def fuse_model(self, is_qat: bool = False) -> None:
        fuse = torch.ao.quantization.fuse_modules_qat if is_qat else fuse_modules
        fuse(self, [["conv1", "bn1", "relu"]], inplace=True)
        for module in self.modules():
            if isinstance(module, QuantizableBasicBlock):
                module.fuse_model(is_qat)


def quantizable_twin(model: LoadedModel) -> nn.Module:
    """The eager-mode quantizable variant of ``model`` carrying its FP32 weights (eval mode)."""
    arch = "resnet20" if model.arch == "demo" else model.arch
    if arch in CIFAR_DEPTHS:
        twin: nn.Module = QuantizableCifarResNet(CIFAR_DEPTHS[arch], model.num_classes)
    elif arch in TORCHVISION_QUANTIZABLE:
        from torchvision.models import quantization as tvq

        kwargs = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
        twin = getattr(tvq, arch)(weights=None, quantize=False, num_classes=model.num_classes, **kwargs)
    else:
        raise SuiteError(f"eager-mode PTQ needs a quantizable variant of the model: {model.arch} has none "
                         f"(have: demo, {', '.join(CIFAR_DEPTHS)}, {', '.join(TORCHVISION_QUANTIZABLE)}); "
                         "use --mode fx, which needs no model changes")
    source = dict(model.module.named_modules())
    for name, layer in twin.named_modules():  # bias correction gives bias-free convs a bias: the twin takes it
        bias = getattr(source.get(name), "bias", None)
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.bias is None and isinstance(bias, torch.Tensor):
            layer.bias = nn.Parameter(torch.zeros_like(bias))
    missing, unexpected = twin.load_state_dict(model.module.state_dict(), strict=False)
    if missing or unexpected:
        raise SuiteError(f"the quantizable {arch} does not match the weights (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return twin.eval()
