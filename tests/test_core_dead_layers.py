"""Layers whose output never reaches a model output (a backbone stage past the last out_index)."""

import torch
from torch import nn

import lrp_plugin as lrp
from lrp_plugin.core.graph import probe_model
from lrp_plugin.testing import randomize_batchnorm


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DeadTail(nn.Module):
    """Like mmdet's MobileNetV2 with out_indices=(2, 4, 6): the last conv runs, its output is dropped."""

    def __init__(self):
        super().__init__()
        self.stem, self.mid, self.tail = _block(3, 8), _block(8, 16), _block(16, 32)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.mid(self.stem(x))
        self.tail(y)  # computed, never used
        return self.head(y)


def test_dead_layers_and_their_feeders_are_found_and_left_unmasked():
    torch.manual_seed(0)
    model = randomize_batchnorm(DeadTail()).eval()
    x = torch.randn(2, 3, 16, 16)
    probe = probe_model(model, x)
    assert probe.dead_layers == {"tail.0"} and probe.feeds_dead == {"mid.0": "tail.0"}
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    assert "mid.0" not in masks and "tail.0" not in masks and "stem.0" in masks
    assert "tail.0" in masks.meta["skipped"]["mid.0"]
    lrp.apply_masks(model, masks)
    result = lrp.reconstruct(model, x)
    assert result.report.lossless and result.model.stem[0].out_channels == 4
    result.model(x)  # the dead layer still runs, with the width it expects
