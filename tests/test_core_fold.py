"""BatchNorm not masked (NNI's own pruners, TP soft pruning, old fine-tunes): the constants that
removed channels still emit are folded into their consumers, so the rebuild is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_models import cbr

import lrp_plugin as lrp
from lrp_plugin.testing import randomize_batchnorm

timm = pytest.importorskip("timm")


def _conv_masked_only(model, x, criterion="l1", ratio=0.5):
    masks = lrp.compute_masks(model, x, criterion, ratio)
    lrp.apply_masks(model, masks, mask_bn=False)
    return masks


@pytest.mark.parametrize("name,criterion", [("resnet18", "l1"), ("resnet50", "gm")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_timm_resnets_with_bn_alive_rebuild_exactly(name, criterion, dtype):
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model(name, pretrained=False, num_classes=10)).eval().to(dtype)
    x = torch.randn(2, 3, 64, 64, dtype=dtype)
    _conv_masked_only(model, x, criterion)
    folded = lrp.reconstruct(model, x)
    report = folded.report
    assert report.lossless and report.max_rel_error < (1e-5 if dtype == torch.float32 else 1e-10)
    assert report.constants_folded > 0
    lossy = lrp.reconstruct(model, x, fold_constants=False, strict=False)  # the paper's Table 8
    assert lossy.report.max_rel_error > 1e-3
    # at most one kept channel per group above the union rebuild
    extra = report.params_after - lossy.report.params_after
    assert report.constant_channels_kept <= len(report.groups) and extra >= 0
    with torch.no_grad():
        y = torch.randn(2, 3, 64, 64, dtype=dtype)
        ref, out = model(y), folded.model(y)
    assert ((ref - out).abs().max() / ref.abs().max()).item() < (1e-5 if dtype == torch.float32 else 1e-10)


class _Padded(nn.Module):
    """A masked conv whose removed channels reach a zero-padded 3x3 conv (a bias is not exact there)
    and, through a residual add whose producers both removed them, a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 8), cbr(3, 8)
        self.padded = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.pointwise = nn.Conv2d(8, 4, 1, bias=False)

    def forward(self, x):
        s = self.a(x) + self.b(x)
        return self.padded(s), self.pointwise(s)


def test_zero_padded_consumers_get_one_representative_channel():
    torch.manual_seed(0)
    model = randomize_batchnorm(_Padded().eval())
    with torch.no_grad():  # positive beta - gamma*mean/std: every removed channel is a non-zero constant after ReLU
        for bn in (model.a[1], model.b[1]):
            bn.running_mean.zero_()
            bn.bias.uniform_(0.5, 1.0)
    x = torch.randn(2, 3, 8, 8)
    keep = torch.tensor([True, True, False, False, True, False, True, False])
    lrp.apply_masks(model, {"a.0": keep, "b.0": keep}, mask_bn=False, example_inputs=x)
    result = lrp.reconstruct(model, x, masks={"a.0": keep, "b.0": keep}, mask_bn=False)
    report = result.report
    assert report.lossless and report.max_rel_error < 1e-5
    assert report.constant_channels_kept == 1 and report.constants_folded == 3
    assert result.model.a[0].out_channels == int(keep.sum()) + 1
    assert result.model.pointwise.bias is not None  # no BN after it: a bias was added


class _AvgPoolIncludePad(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 6)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(self.pool(self.a(x)))


def test_a_channel_that_is_not_constant_is_kept_not_folded():
    torch.manual_seed(0)
    model = randomize_batchnorm(_AvgPoolIncludePad().eval())
    with torch.no_grad():  # non-zero constants after ReLU, which the pooling's zero padding makes vary
        model.a[1].running_mean.zero_()
        model.a[1].bias.uniform_(0.5, 1.0)
    x = torch.randn(2, 3, 8, 8)
    keep = torch.tensor([True, False, True, False, True, False])
    lrp.apply_masks(model, {"a.0": keep}, mask_bn=False, example_inputs=x)
    result = lrp.reconstruct(model, x)
    assert result.report.lossless
    assert result.report.not_constant_kept == 3 and result.report.constants_folded == 0
    assert result.model.a[0].out_channels == 6


def test_lossless_pruner_soft_mode_with_conv_masks_only():
    from lrp_plugin.integrations.torch_pruning import LosslessPruner

    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model("resnet18", pretrained=False, num_classes=10)).eval()
    x = torch.randn(1, 3, 64, 64)
    pruner = LosslessPruner(model, x, "l2", pruning_ratio=0.5, mode="soft", mask_bn=False)
    pruner.step()
    with torch.no_grad():
        masked = model(x)
    report = pruner.reconstruct()
    assert report.lossless and report.constants_folded > 0
    with torch.no_grad():
        assert ((model(x) - masked).abs().max() / masked.abs().max()).item() < 1e-5
