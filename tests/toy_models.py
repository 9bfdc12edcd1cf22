"""Small CNNs built from a description, for property tests and DDP tests."""

from __future__ import annotations

import torch
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(cbr(cin, cout), nn.Conv2d(cout, cout, 3, padding=1, bias=True),
                                  nn.BatchNorm2d(cout))
        self.proj = None if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        skip = x if self.proj is None else self.proj(x)
        return torch.relu(self.body(x) + skip)


class Concat(nn.Module):
    def __init__(self, cin: int, a: int, b: int):
        super().__init__()
        self.left, self.right = cbr(cin, a, 1), cbr(cin, b, 3)

    def forward(self, x):
        return torch.cat([self.left(x), self.right(x)], dim=1)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.dw, self.pw = cbr(cin, cin, 3, groups=cin), cbr(cin, cout, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class GroupedBottleneck(nn.Module):
    """ResNeXt/RegNet-style: 1x1 -> grouped 3x3 -> 1x1, with a residual add."""

    def __init__(self, cin: int, groups: int, width: int):
        super().__init__()
        mid = groups * width
        self.body = nn.Sequential(cbr(cin, mid, 1), cbr(mid, mid, 3, groups=groups),
                                  nn.Conv2d(mid, cin, 1, bias=False), nn.BatchNorm2d(cin))

    def forward(self, x):
        return torch.relu(self.body(x) + x)


class SplitBranches(nn.Module):
    """One conv whose output is chunked into parts read by different convs (CSP/C2f style), then concatenated."""

    def __init__(self, cin: int, part: int, parts: int):
        super().__init__()
        self.parts = parts
        self.expand = cbr(cin, part * parts, 1)
        self.branches = nn.ModuleList(cbr(part, part, 3) for _ in range(parts - 1))

    def forward(self, x):
        chunks = list(self.expand(x).chunk(self.parts, dim=1))
        outs = [chunks[0]] + [branch(c) for branch, c in zip(self.branches, chunks[1:])]
        return torch.cat(outs, dim=1)


class DenseLayer(nn.Module):
    """DenseNet-style: BN + ReLU *before* the conv, on the concatenated features."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(torch.relu(self.norm(x)))], dim=1)


class ToyNet(nn.Module):
    """stem -> blocks -> two heads (a classifier and a dense 1x1-conv map)."""

    def __init__(self, blocks: list[tuple], stem: int = 8, classes: int = 5, dense: int = 3):
        super().__init__()
        self.stem = cbr(3, stem)
        layers, width = [], stem
        for kind, *args in blocks:
            if kind == "res":
                layers.append(Residual(width, args[0]))
                width = args[0]
            elif kind == "cat":
                layers.append(Concat(width, args[0], args[1]))
                width = args[0] + args[1]
            elif kind == "grp":
                layers.append(GroupedBottleneck(width, args[0], args[1]))
            elif kind == "split":
                layers.append(SplitBranches(width, args[0], args[1]))
                width = args[0] * args[1]
            elif kind == "dense":
                layers.append(DenseLayer(width, args[0]))
                width = width + args[0]
            else:
                layers.append(DepthwiseSeparable(width, args[0]))
                width = args[0]
        self.blocks = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, classes)
        self.dense = nn.Conv2d(width, dense, 1)

    def forward(self, x):
        features = self.blocks(self.stem(x))
        return self.classifier(features.mean((2, 3))), self.dense(features)
