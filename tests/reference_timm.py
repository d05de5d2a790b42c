"""A faithful minimal copy of timm's post-activation ResNet (``timm/models/resnet.py``, timm
1.0.31), for testing ``probes.adapters.tapping`` where timm does not import (see reference_resnets.py).

The blocks have timm's class names, attribute names and forward (what the two share is
written once, in ``_Block``), in-place addition and activation included: ``BasicBlock`` (conv1 bn1 drop_block act1 aa conv2 bn2 se drop_path,
``x += shortcut``, act2) and ``Bottleneck`` (conv1 bn1 act1 conv2 bn2 drop_block act2 aa conv3
bn3 se drop_path, act3), with timm's ``SEModule`` as the attention, ``nn.AvgPool2d`` as the
anti-aliasing layer (timm's resnetaa models) and timm's ``DropPath``. A ``ResNet`` builds them
as timm's ``make_blocks`` does (``layer1..layer4``, downsample by conv or, ``avg_down``, by
average pooling then conv; drop_path rate rising linearly over the blocks), with narrower
channels so that the tests stay fast. DropBlock is left out (``drop_block`` is timm's default
``nn.Identity``); tests/test_ecosystem.py runs the real one.
"""
import torch
from torch import nn

from reference_resnets import DropPath


class SEModule(nn.Module):
    """timm.layers.squeeze_excite.SEModule (the ``se`` attention of seresnet*)."""

    def __init__(self, channels, rd_channels=8):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.fc1(x_se)
        x_se = self.act(self.bn(x_se))
        x_se = self.fc2(x_se)
        return x * self.gate(x_se)


def _aa(aa, stride):
    """timm's create_aa for aa_layer=nn.AvgPool2d: a 2x2 average pool where the block strides."""
    return nn.AvgPool2d(stride) if aa and stride == 2 else nn.Identity()


class _Block(nn.Module):
    """What timm's BasicBlock and Bottleneck share: the end of __init__ and of forward."""

    def _end(self, outplanes, attn, act, downsample, stride, drop_path):
        self.se = SEModule(outplanes) if attn else None
        setattr(self, act, nn.ReLU(inplace=True))   # act2 (BasicBlock) / act3 (Bottleneck)
        self.downsample = downsample
        self.stride = stride
        self.drop_path = drop_path

    def _add(self, x, shortcut, act):
        """timm's forward after the last BN: attention, drop_path, shortcut, in-place add, act."""
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        x = act(x)
        return x


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn=False, aa=False,
                 drop_path=None):
        super().__init__()
        use_aa = aa and stride == 2
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1 if use_aa else stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.drop_block = nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.aa = _aa(aa, stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self._end(planes, attn, "act2", downsample, stride, drop_path)

    def forward(self, x):
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        x = self.bn2(x)
        return self._add(x, shortcut, self.act2)


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn=False, aa=False,
                 drop_path=None):
        super().__init__()
        use_aa = aa and stride == 2
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1 if use_aa else stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop_block = nn.Identity()
        self.act2 = nn.ReLU(inplace=True)
        self.aa = _aa(aa, stride)
        self.conv3 = nn.Conv2d(planes, outplanes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self._end(outplanes, attn, "act3", downsample, stride, drop_path)

    def forward(self, x):
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        x = self.aa(x)
        x = self.conv3(x)
        x = self.bn3(x)
        return self._add(x, shortcut, self.act3)


def _downsample(inplanes, outplanes, stride, avg_down):
    """timm's downsample_conv (1x1 strided conv, BN) or downsample_avg (2x2 average pool, 1x1
    conv, BN)."""
    if not avg_down:
        return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(outplanes))
    pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, stride, ceil_mode=True,
                                                          count_include_pad=False)
    return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """timm's ResNet: stem (7x7 conv, BN, act, max pool), layer1..layer4, pool, fc."""

    def __init__(self, block, layers, channels=(16, 32, 64, 128), num_classes=10, avg_down=False,
                 drop_path_rate=0., **block_args):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes, net_block_idx = 16, 0
        for stage_idx, (planes, num_blocks) in enumerate(zip(channels, layers)):
            stride = 1 if stage_idx == 0 else 2
            outplanes = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                downsample = _downsample(inplanes, outplanes, stride, avg_down)
            blocks = []
            for block_idx in range(num_blocks):
                dpr = drop_path_rate * net_block_idx / (sum(layers) - 1)   # linear decay rule
                blocks.append(block(inplanes, planes, stride if block_idx == 0 else 1,
                                    downsample if block_idx == 0 else None,
                                    drop_path=DropPath(dpr) if dpr > 0. else None, **block_args))
                inplanes, net_block_idx = outplanes, net_block_idx + 1
            self.add_module(f"layer{stage_idx + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))
