"""Channel gates: ``x * y.expand_as(x)`` maps channel by channel; ECA's conv across channels is a
blocker found at once (its groups are skipped in milliseconds, with the true reason)."""

import torch
from _extras import require
from torch import nn

import lrp_plugin as lrp
from lrp_plugin.testing import randomize_batchnorm


class ExpandGateBlock(nn.Module):
    """A residual block gated per channel by its own mean through ``expand_as`` (each channel by itself)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = self.bn(self.conv(x))
        gate = torch.sigmoid(y.mean((2, 3), keepdim=True))
        return torch.relu(x + y * gate.expand_as(y))


class ExpandGateNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(ExpandGateBlock(16), ExpandGateBlock(16))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_expand_that_broadcasts_over_positions_maps_channel_by_channel():
    torch.manual_seed(0)
    model = randomize_batchnorm(ExpandGateNet()).eval()
    x = torch.randn(2, 3, 16, 16)
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    assert not masks.meta.get("skipped") and "stem.0" in masks and "blocks.1.conv" in masks
    lrp.apply_masks(model, masks)
    result = lrp.reconstruct(model, x)
    assert result.report.lossless and result.model.stem[0].out_channels < 16  # union of three producers


def test_eca_gates_are_skipped_at_once_for_their_conv_across_channels():
    timm = require("timm")
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model("ecaresnetlight", pretrained=False)).eval()
    x = torch.randn(1, 3, 64, 64)
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    skipped = masks.meta["skipped"]
    assert skipped and all("conv across channels" in why for why in skipped.values())
    assert not any("expand" in why for why in skipped.values())
    lrp.apply_masks(model, masks)
    assert lrp.reconstruct(model, x).report.lossless
