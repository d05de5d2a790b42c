"""Faithful minimal copies of other libraries' ResNets, for testing ``probes.adapters.tapping``.

torchvision's PyPI build does not import beside the torch 2.13.0 CPU build this suite is
tested with ("operator torchvision::nms does not exist"), and timm needs torchvision; so the
blocks are written out here with exactly their structure -- the same attribute names, the
same module tree and the same forward, in-place operations included:

* torchvision ``models/resnet.py``: ``BasicBlock``, ``Bottleneck`` and ``ResNet`` (stem,
  ``layer1..layer4`` of blocks built by ``_make_layer``, pool, fc); ``resnet18``, ``resnet50``.
* timm ``models/resnetv2.py``: ``PreActBasic``, ``PreActBottleneck``, ``DownsampleConv``,
  ``ResNetStage`` (``stages.N.blocks``) and a ``ResNetV2`` with its stem and final norm, with
  timm's ``StdConv2d``, ``GroupNormAct`` and ``DropPath`` layers.

Only what the tests need is kept (no dilation, groups, pretrained weights or feature API).
"""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


# ---- torchvision.models.resnet ----------------------------------------------------------------

def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=None):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=None):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet18(num_classes=1000):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes=1000):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


# ---- timm.models.resnetv2 (and the timm.layers it uses) -----------------------------------------

class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardization (timm.layers.std_conv)."""

    def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 groups=1, bias=False, eps=1e-6):
        if padding is None:
            padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        super().__init__(in_channel, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              training=True, momentum=0., eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm followed by an in-place activation (timm.layers.norm_act)."""

    def __init__(self, num_channels, num_groups=32, eps=1e-5, affine=True, apply_act=True):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.drop = nn.Identity()
        self.act = nn.ReLU(inplace=True) if apply_act else nn.Identity()

    def forward(self, x):
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        x = self.drop(x)
        return self.act(x)


def drop_path(x, drop_prob=0., training=False, scale_by_keep=True):
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob=0., scale_by_keep=True):
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


class DownsampleConv(nn.Module):
    def __init__(self, in_chs, out_chs, stride=1, preact=True, conv_layer=None, norm_layer=None):
        super().__init__()
        self.conv = conv_layer(in_chs, out_chs, 1, stride=stride)
        self.norm = nn.Identity() if preact else norm_layer(out_chs, apply_act=False)

    def forward(self, x):
        return self.norm(self.conv(x))


class PreActBasic(nn.Module):
    def __init__(self, in_chs, out_chs=None, bottle_ratio=1.0, stride=1, conv_layer=None,
                 norm_layer=None, proj_layer=None, drop_path_rate=0.):
        super().__init__()
        conv_layer = conv_layer or StdConv2d
        norm_layer = norm_layer or partial(GroupNormAct, num_groups=32)
        out_chs = out_chs or in_chs
        mid_chs = int(out_chs * bottle_ratio)
        if proj_layer is not None and (stride != 1 or in_chs != out_chs):
            self.downsample = proj_layer(in_chs, out_chs, stride=stride, preact=True,
                                         conv_layer=conv_layer, norm_layer=norm_layer)
        else:
            self.downsample = None
        self.norm1 = norm_layer(in_chs)
        self.conv1 = conv_layer(in_chs, mid_chs, 3, stride=stride)
        self.norm2 = norm_layer(mid_chs)
        self.conv2 = conv_layer(mid_chs, out_chs, 3)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.drop_path(x)
        return x + shortcut


class PreActBottleneck(nn.Module):
    def __init__(self, in_chs, out_chs=None, bottle_ratio=0.25, stride=1, conv_layer=None,
                 norm_layer=None, proj_layer=None, drop_path_rate=0.):
        super().__init__()
        conv_layer = conv_layer or StdConv2d
        norm_layer = norm_layer or partial(GroupNormAct, num_groups=32)
        out_chs = out_chs or in_chs
        mid_chs = int(out_chs * bottle_ratio)
        if proj_layer is not None:
            self.downsample = proj_layer(in_chs, out_chs, stride=stride, preact=True,
                                         conv_layer=conv_layer, norm_layer=norm_layer)
        else:
            self.downsample = None
        self.norm1 = norm_layer(in_chs)
        self.conv1 = conv_layer(in_chs, mid_chs, 1)
        self.norm2 = norm_layer(mid_chs)
        self.conv2 = conv_layer(mid_chs, mid_chs, 3, stride=stride)
        self.norm3 = norm_layer(mid_chs)
        self.conv3 = conv_layer(mid_chs, out_chs, 1)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        x = self.drop_path(x)
        return x + shortcut


class ResNetStage(nn.Module):
    def __init__(self, in_chs, out_chs, stride, depth, block_fn, bottle_ratio, norm_layer,
                 block_dpr=None):
        super().__init__()
        proj_layer = DownsampleConv
        prev_chs = in_chs
        self.blocks = nn.Sequential()
        for block_idx in range(depth):
            self.blocks.add_module(str(block_idx), block_fn(
                prev_chs, out_chs, stride=stride if block_idx == 0 else 1, bottle_ratio=bottle_ratio,
                conv_layer=StdConv2d, norm_layer=norm_layer, proj_layer=proj_layer,
                drop_path_rate=block_dpr[block_idx] if block_dpr else 0.))
            prev_chs = out_chs
            proj_layer = None

    def forward(self, x):
        return self.blocks(x)


class ResNetV2(nn.Module):
    """Pre-activation ResNetV2: stem (7x7 StdConv, max pool), stages, final norm, head."""

    def __init__(self, layers, channels=(64, 128), num_classes=10, stem_chs=32, basic=False,
                 num_groups=8, drop_path_rate=0.):
        super().__init__()
        norm_layer = partial(GroupNormAct, num_groups=num_groups)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", StdConv2d(3, stem_chs, kernel_size=7, stride=2))
        self.stem.add_module("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        block_fn, ratio = (PreActBasic, 1.0) if basic else (PreActBottleneck, 0.25)
        dprs = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(layers)).split(layers)]
        self.stages = nn.Sequential()
        prev_chs = stem_chs
        for stage_idx, (d, c, dpr) in enumerate(zip(layers, channels, dprs)):
            self.stages.add_module(str(stage_idx), ResNetStage(
                prev_chs, c, 1 if stage_idx == 0 else 2, d, block_fn, ratio, norm_layer, dpr))
            prev_chs = c
        self.norm = norm_layer(prev_chs)
        self.fc = nn.Linear(prev_chs, num_classes)

    def forward(self, x):
        x = self.norm(self.stages(self.stem(x)))
        return self.fc(x.mean((2, 3)))
