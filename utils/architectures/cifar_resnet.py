"""The CIFAR-10 ResNets of He et al. (2016), matching the akamaster/pytorch_resnet_cifar10 keys.

ResNet-20/32/44/56: a 3x3 stem, three stages of n BasicBlocks (16/32/64 channels), global average
pooling and a linear head. The shortcut is "option A": stride-2 subsampling plus zero channel
padding, no parameters, so the published checkpoints load as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, zero-pad channels by planes//4 on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    block: type[BasicBlock] = BasicBlock  # the eager-mode quantizable variant swaps it

    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks_per_stage):
                layers.append(self.block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def cifar_resnet(name: str, num_classes: int = 10) -> CifarResNet:
    return CifarResNet(CIFAR_DEPTHS[name], num_classes)


# torchvision ResNets with the CIFAR stem (3x3 stride-1 first conv, no max-pool), for 32x32 inputs;
# their state_dict keys are torchvision's, so torchvision tooling (quantizable twins) applies.
CIFAR_STEM_RESNETS = {"resnet18_cifar": "resnet18", "resnet34_cifar": "resnet34", "resnet50_cifar": "resnet50"}


def cifar_stem_resnet(name: str, num_classes: int = 10) -> nn.Module:
    from torchvision import models

    model = models.get_model(CIFAR_STEM_RESNETS[name], weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model
