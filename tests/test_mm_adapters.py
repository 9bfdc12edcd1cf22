"""The generic MMDetection and MMSegmentation adapters on the paper's YOLOv3 and FCN: lossless
reconstruction on random models.

Randomly initialised, BN statistics randomized (so a channel removed while BN still emits
``beta - gamma*mean/std`` would show). YOLOv3-D53 runs once at the paper's 416x416; the other
criteria run at 128x128 (same graph, a tenth of the time). FCN runs at 64x64 (fully
convolutional, the traced graph does not depend on the size). Every output is checked:
the three YOLO scales, and FCN's decode AND auxiliary logits.
"""

from __future__ import annotations

import pytest
import torch
from _extras import require

require("mmengine")
require("mmcv.ops")

import lrp_plugin as lrp  # noqa: E402
from lrp_plugin.adapters.base import find_adapter  # noqa: E402
from lrp_plugin.testing import randomize_batchnorm  # noqa: E402

pytestmark = pytest.mark.slow
YOLOV3_D53_PARAMS = 61_626_049  # paper Table 5 / METHOD.md: Darknet-53, 20 VOC classes


def _outputs(adapter, model, x):
    with torch.no_grad():
        return lrp.core.graph.flatten_tensors(adapter.forward_fn(model.eval(), x))


def _check_lossless(model, x, criterion: str, ratio: float) -> lrp.ReconstructionResult:
    """Mask, reconstruct (verified, strict) and compare every output ourselves as well."""
    adapter = find_adapter(model)
    assert adapter is not None
    masks = lrp.compute_masks(model, x, criterion=criterion, ratio=ratio,
                              ignored_layers=adapter.ignored_layers(model), forward_fn=adapter.forward_fn)
    for name in adapter.ignored_layers(model):
        assert name not in masks, f"{name} is output-bound and must never be pruned"
    lrp.apply_masks(model, masks)
    assert lrp.masks_hold(model)
    result = lrp.reconstruct(model, x, forward_fn=adapter.forward_fn)
    report = result.report
    assert report.lossless and report.max_rel_error < 1e-5, str(report)
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    expected, got = _outputs(adapter, model, x), _outputs(adapter, result.model, x)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        rel = ((e - g).abs().max() / e.abs().max().clamp_min(1e-12)).item()
        assert rel < 1e-5, rel
    print(f"\n{type(model).__name__} {criterion} CR {ratio} input {tuple(x.shape)}: params "
          f"{report.params_before:,} -> {report.params_after:,}, MACs {report.macs_before:,} -> "
          f"{report.macs_after:,}, max rel error {report.max_rel_error:.3g}")
    return result


# -- YOLOv3 --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yolo_factory():
    require("mmdet")
    from lrp_plugin.adapters.mmdet_yolo import build_yolov3

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return randomize_batchnorm(build_yolov3(num_classes=20), seed=seed)

    return make


def test_yolov3_d53_baseline_params_match_paper(yolo_factory):
    model = yolo_factory()
    assert sum(p.numel() for p in model.parameters()) == YOLOV3_D53_PARAMS
    assert find_adapter(model).name == "mmdet-detector"
    convs_pred = [f"bbox_head.convs_pred.{i}" for i in range(3)]  # found by tracing, not by name
    assert find_adapter(model).ignored_layers(model) == convs_pred


def test_yolov3_d53_416_cr09_l1_lossless(yolo_factory):
    model = yolo_factory()
    x = torch.randn(1, 3, 416, 416)
    result = _check_lossless(model, x, "l1", 0.9)
    pred = result.model.bbox_head.convs_pred
    assert [m.out_channels for m in pred] == [3 * 25] * 3  # prediction convs intact
    macs, params = lrp.count_macs_params(model, x, forward_fn=find_adapter(model).forward_fn)
    assert params == YOLOV3_D53_PARAMS
    assert 2 * macs / 1e9 == pytest.approx(65.658, rel=0.02)  # paper: 65.658 GFLOPs = 2 x MACs


@pytest.mark.parametrize(("criterion", "ratio"), [("l2", 0.5), ("gm", 0.9)])
def test_yolov3_d53_small_input_lossless(yolo_factory, criterion, ratio):
    model = yolo_factory(seed=1)
    _check_lossless(model, torch.randn(1, 3, 128, 128), criterion, ratio)


# -- FCN -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fcn_factory():
    require("mmseg")
    from lrp_plugin.adapters.mmseg_fcn import FCN_R50_CONFIG, FCN_R101_CONFIG, build_fcn

    def make(depth: int, seed: int = 0):
        torch.manual_seed(seed)
        return randomize_batchnorm(build_fcn(FCN_R101_CONFIG if depth == 101 else FCN_R50_CONFIG), seed=seed)

    return make


@pytest.mark.parametrize(("depth", "criterion"), [(101, "l1"), (50, "l2"), (50, "gm")])
def test_fcn_cr03_lossless_decode_and_auxiliary(fcn_factory, depth, criterion):
    from torch import nn

    model = fcn_factory(depth)
    assert model.backbone.depth == depth
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())  # reverted
    assert model.decode_head.concat_input
    x = torch.randn(1, 3, 64, 64)
    adapter = find_adapter(model)
    assert adapter.name == "mmseg-segmentor"
    assert adapter.ignored_layers(model) == ["auxiliary_head.conv_seg", "decode_head.conv_seg"]
    assert len(_outputs(adapter, model, x)) == 2  # decode + auxiliary logits are both traced
    result = _check_lossless(model, x, criterion, 0.3)
    pruned = result.model
    assert pruned.decode_head.conv_seg.out_channels == model.decode_head.conv_seg.out_channels
    assert pruned.auxiliary_head.conv_seg.out_channels == model.auxiliary_head.conv_seg.out_channels
    assert pruned.auxiliary_head.convs[0].conv.out_channels < model.auxiliary_head.convs[0].conv.out_channels
    # conv_cat reads [backbone output, head features]: its input width follows both parts
    cat_in = pruned.decode_head.conv_cat.conv.in_channels
    assert cat_in == pruned.backbone.layer4[-1].conv3.out_channels + pruned.decode_head.convs[-1].conv.out_channels


# -- bad input -----------------------------------------------------------------------------
def test_ratio_that_empties_layers_is_refused(yolo_factory):
    model = yolo_factory()
    with pytest.raises(lrp.InvalidRatioError, match="ratio"):
        lrp.compute_masks(model, torch.randn(1, 3, 64, 64), "l1", 1.0, forward_fn=find_adapter(model).forward_fn)


def test_yolo_input_size_not_divisible_by_32(yolo_factory):
    model = yolo_factory()
    with pytest.raises(ValueError, match="divisible by 32"):
        find_adapter(model).example_inputs(model, image_size=100)


@pytest.mark.parametrize("criterion", ["l1", "gm"])
def test_yolov3_d53_bn_alive_folded_is_lossless(yolo_factory, criterion):
    """NNI-style conv-only masks (BN alive, non-zero beta): the constants are folded, exact."""
    model = yolo_factory(seed=2)
    adapter = find_adapter(model)
    x = torch.randn(1, 3, 128, 128)
    masks = lrp.compute_masks(model, x, criterion, 0.5, ignored_layers=adapter.ignored_layers(model),
                              forward_fn=adapter.forward_fn)
    lrp.apply_masks(model, masks, mask_bn=False)
    result = lrp.reconstruct(model, x, forward_fn=adapter.forward_fn)
    assert result.report.lossless and result.report.max_rel_error < 1e-5, str(result.report)
    assert result.report.constants_folded > 0
    assert result.report.params_after < 0.5 * result.report.params_before
