"""ResNet32, the SPIN backbone (PaddleOCR ``rec_resnet_32.ResNet32``, from DAVAR-Lab's ConvNet)."""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, kernel: int = 3, stride=1, padding=1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity (or 1x1 conv-BN ``downsample``), then ReLU."""

    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        self.conv1 = _conv(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, planes, 1, 1, bias=False), nn.BatchNorm2d(planes))
            if inplanes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNet(nn.Module):
    """The ConvNet of ResNet32: channels ``out/16, out/8`` in the stem, then ``out/4, out/2, out, out``.

    Input ``[B, C, 32, 100]`` -> output ``[B, out, 1, 26]``.
    """

    def __init__(self, input_channel: int, output_channel: int, layers: tuple[int, int, int, int] = (1, 2, 5, 3)):
        super().__init__()
        blocks = [output_channel // 4, output_channel // 2, output_channel, output_channel]
        stem = output_channel // 8
        self.conv0_1 = _conv(input_channel, output_channel // 16)
        self.bn0_1 = nn.BatchNorm2d(output_channel // 16)
        self.conv0_2 = _conv(output_channel // 16, stem)
        self.bn0_2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.maxpool1 = nn.MaxPool2d(2, 2)
        self.layer1 = self._make_layer(stem, blocks[0], layers[0])
        self.conv1 = _conv(blocks[0], blocks[0])
        self.bn1 = nn.BatchNorm2d(blocks[0])
        self.maxpool2 = nn.MaxPool2d(2, 2)
        self.layer2 = self._make_layer(blocks[0], blocks[1], layers[1])
        self.conv2 = _conv(blocks[1], blocks[1])
        self.bn2 = nn.BatchNorm2d(blocks[1])
        self.maxpool3 = nn.MaxPool2d(2, (2, 1), (0, 1))
        self.layer3 = self._make_layer(blocks[1], blocks[2], layers[2])
        self.conv3 = _conv(blocks[2], blocks[2])
        self.bn3 = nn.BatchNorm2d(blocks[2])
        self.layer4 = self._make_layer(blocks[2], blocks[3], layers[3])
        self.conv4_1 = _conv(blocks[3], blocks[3], 2, (2, 1), (0, 1))
        self.bn4_1 = nn.BatchNorm2d(blocks[3])
        self.conv4_2 = _conv(blocks[3], blocks[3], 2, 1, 0)
        self.bn4_2 = nn.BatchNorm2d(blocks[3])

    @staticmethod
    def _make_layer(inplanes: int, planes: int, n: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(inplanes, planes), *(BasicBlock(planes, planes) for _ in range(1, n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0_1(self.conv0_1(x)))
        x = self.relu(self.bn0_2(self.conv0_2(x)))
        x = self.relu(self.bn1(self.conv1(self.layer1(self.maxpool1(x)))))
        x = self.relu(self.bn2(self.conv2(self.layer2(self.maxpool2(x)))))
        x = self.relu(self.bn3(self.conv3(self.layer3(self.maxpool3(x)))))
        x = self.relu(self.bn4_1(self.conv4_1(self.layer4(x))))
        return self.relu(self.bn4_2(self.conv4_2(x)))


class ResNet32(nn.Module):
    """PaddleOCR's ``ResNet32`` backbone config: ``in_channels`` -> ``out_channels`` (512) feature map.

    ``[B, in_channels, 32, 100]`` -> ``[B, out_channels, 1, 26]``. A smaller ``out_channels`` scales every
    layer's width (used by the compact default model).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 512):
        super().__init__()
        self.out_channels = out_channels
        self.ConvNet = ResNet(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ConvNet(x)
