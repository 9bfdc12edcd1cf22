"""The CNNs people bring (issue: coverage): grouped convs, split/chunk, DenseNet, no-BN nets,
channel shuffle, attention blocks, and outputs the verification must be able to see.

Real torchvision/timm models at small inputs with randomized BN statistics, through the public
API with default arguments: compute_masks -> apply_masks -> reconstruct.
"""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import pytest
import torch
from torch import nn
from toy_models import DenseLayer, SplitBranches, cbr

import lrp_plugin as lrp
from lrp_plugin.testing import randomize_batchnorm

torchvision = pytest.importorskip("torchvision")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _prune(model, x, ratio=0.5):
    """The new user's path; returns (result, masks) after checking the caller's model is untouched."""
    masks = lrp.compute_masks(model, x, "l1", ratio)
    lrp.apply_masks(model, masks)
    before = _state(model)
    result = lrp.reconstruct(model, x)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "reconstruct changed the caller's model"
    return result, masks


def _rel_err(a_model, b_model, x):
    with torch.no_grad():
        a = lrp.core.graph.flatten_tensors(a_model.eval()(x))
        b = lrp.core.graph.flatten_tensors(b_model.eval()(x))
    assert a, "no tensors compared"
    return max(((p - q).abs().max() / p.abs().max()).item() for p, q in zip(a, b))


def _torchvision(name, **kwargs):
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.get_model(name, weights=None, **kwargs).eval())


@pytest.mark.parametrize("name", ["regnet_x_400mf", "resnext50_32x4d"])
def test_grouped_convs_any_group_count(name):
    model = _torchvision(name)
    x = torch.randn(2, 3, 32, 32)
    result, _ = _prune(model, x)
    report = result.report
    assert report.lossless and report.params_after < report.params_before, str(report)
    assert _rel_err(model, result.model, torch.randn(2, 3, 32, 32)) < 1e-5
    grouped = [m for m in result.model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert grouped and all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in grouped)
    assert report.zero_channels_kept > 0  # balancing the conv groups kept some masked channels


class _SplitNet(nn.Module):
    """conv -> chunk into 3 parts -> three convs (each part read by a different consumer) -> concat -> conv."""

    def __init__(self, fixed_size: bool = False):
        super().__init__()
        self.fixed_size = fixed_size
        self.stem = cbr(3, 24, 3)
        self.heads = nn.ModuleList(cbr(8, 4, 3) for _ in range(3))
        self.fuse = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        y = self.stem(x)
        parts = y.split(8, dim=1) if self.fixed_size else y.chunk(3, dim=1)
        return self.fuse(torch.cat([head(p) for head, p in zip(self.heads, parts)], dim=1))


class _CSPNet(nn.Module):
    """A CSP/C2f-style block: chunk in two, new convs on one half, concat both halves, fuse."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16, 3)
        self.csp = SplitBranches(16, 8, 2)
        self.fuse = nn.Conv2d(16, 6, 1)

    def forward(self, x):
        return self.fuse(self.csp(self.stem(x)))


@pytest.mark.parametrize("net", [_SplitNet, _CSPNet])
def test_split_and_chunk_consumers_map_through_their_offsets(net):
    torch.manual_seed(0)
    model = randomize_batchnorm(net().eval())
    x = torch.randn(2, 3, 16, 16)
    result, _ = _prune(model, x)
    assert result.report.lossless and result.report.params_after < result.report.params_before
    assert _rel_err(model, result.model, torch.randn(2, 3, 16, 16)) < 1e-5
    assert result.model.stem[0].out_channels < 24  # channels inside the chunk parts went too


def test_a_split_size_written_in_code_keeps_its_channels():
    torch.manual_seed(0)
    model = randomize_batchnorm(_SplitNet(fixed_size=True).eval())
    x = torch.randn(2, 3, 16, 16)
    result, _ = _prune(model, x)  # the first rebuild breaks split(8); the second keeps the stem whole
    assert result.report.lossless and result.model.stem[0].out_channels == 24
    assert "stem.0" in result.report.skipped and result.report.params_after < result.report.params_before


def test_densenet_pre_activation_batchnorms_are_masked_too():
    model = _torchvision("densenet121")
    x = torch.randn(1, 3, 32, 32)
    result, masks = _prune(model, x)
    assert masks.norm_masks, "BatchNorms after the concats were not masked"
    assert any(name.endswith("norm1") for name in masks.norm_masks)
    assert result.report.lossless and result.report.params_after < 0.6 * result.report.params_before
    assert result.report.constants_folded == 0  # the removed channels are exactly zero everywhere
    assert _rel_err(model, result.model, torch.randn(1, 3, 32, 32)) < 1e-5


def test_dense_layers_in_a_toy_net_hold_their_downstream_norm_masks_in_training():
    torch.manual_seed(0)
    model = randomize_batchnorm(nn.Sequential(cbr(3, 8), DenseLayer(8, 6), DenseLayer(14, 6), nn.Conv2d(20, 3, 1)))
    x = torch.randn(2, 3, 8, 8)
    masks = lrp.compute_masks(model, x, "l2", 0.5)
    lrp.apply_masks(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        opt.step()
    assert lrp.masks_hold(model)
    model.eval()
    assert lrp.reconstruct(model, x).report.lossless


@pytest.mark.parametrize("name", ["squeezenet1_1", "alexnet"])
def test_nets_without_batchnorm_mask_just_the_convs(name):
    model = _torchvision(name)
    x = torch.randn(1, 3, 64, 64) if name == "squeezenet1_1" else torch.randn(1, 3, 224, 224)
    result, masks = _prune(model, x)
    assert not masks.norm_layers and result.report.lossless
    assert result.report.params_after < result.report.params_before


def test_channel_shuffle_is_answered_in_seconds_and_lossless():
    model = _torchvision("shufflenet_v2_x0_5")
    x = torch.randn(1, 3, 64, 64)
    result, masks = _prune(model, x)
    assert result.report.lossless and result.report.params_after < result.report.params_before
    assert masks.meta.get("skipped"), "layers coupled through the shuffle should be skipped and reported"
    reasons = " ".join(masks.meta["skipped"].values())
    assert "shuffle" in reasons or "reorders" in reasons


@pytest.mark.parametrize("name,size", [("swin_t", 224), ("convnext_tiny", 64)])
def test_layernorm_coupled_models_are_skipped_not_refused(name, size):
    model = _torchvision(name)
    x = torch.randn(1, 3, size, size)
    masks = lrp.compute_masks(model, x, "l1", 0.5)  # bounded: no endless index mapping
    assert masks.meta.get("skipped") and any("LayerNorm" in r for r in masks.meta["skipped"].values())
    lrp.apply_masks(model, masks)
    result = lrp.reconstruct(model, x)
    assert result.report.lossless
    with pytest.raises(lrp.UnsupportedLayerError, match="LayerNorm|mixes"):  # asked explicitly: refused
        lrp.compute_masks(model, x, "l1", 0.5, ratio_dict={next(iter(masks.meta["skipped"])): 0.5})


@dataclasses.dataclass
class _Detections:
    boxes: torch.Tensor
    scores: torch.Tensor


_Pair = namedtuple("_Pair", "logits features")


class _DataclassNet(nn.Module):
    def __init__(self, wrap):
        super().__init__()
        self.body = nn.Sequential(cbr(3, 8), cbr(8, 8))
        self.boxes, self.scores = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 2, 1)
        self.wrap = wrap

    def forward(self, x):
        f = self.body(x)
        return self.wrap(self.boxes(f), self.scores(f))


@pytest.mark.parametrize("wrap", [_Detections, _Pair, lambda a, b: {"out": {"a": a, "b": [b]}}])
def test_outputs_are_found_through_dataclasses_namedtuples_and_mappings(wrap):
    torch.manual_seed(0)
    model = randomize_batchnorm(_DataclassNet(wrap).eval())
    x = torch.randn(2, 3, 8, 8)
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    assert "boxes" not in masks and "scores" not in masks  # output layers found through the wrapper
    lrp.apply_masks(model, masks)
    result = lrp.reconstruct(model, x)
    assert result.report.lossless and result.report.max_abs_error is not None


class _Opaque:
    def __init__(self, t):
        self._t = [t]

    __slots__ = ("_t",)


def test_verification_refuses_when_no_tensor_can_be_compared():
    torch.manual_seed(0)
    model = nn.Sequential(cbr(3, 8), nn.Conv2d(8, 2, 1))
    x = torch.randn(1, 3, 8, 8)
    masks = {"0.0": torch.tensor([True, False] * 4)}
    lrp.apply_masks(model, masks, example_inputs=x)
    with pytest.raises(lrp.TraceError, match="forward_fn"):
        lrp.reconstruct(model, x, forward_fn=lambda m, inp: _Opaque(m(inp)))
