"""selection="group" (one mask per coupled group), target_macs (a MACs budget) and the criterion
registry, through compute_masks, LosslessPruner and the NNI pruners (issues 17 and 21)."""

import pytest
import torch
import torch_pruning as tp
import torchvision
from custom_criterion import NAME, max_abs

import lrp_plugin as lrp
from lrp_plugin.core.criteria import keep_mask_from_scores
from lrp_plugin.testing import randomize_batchnorm


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.resnet18(num_classes=10), 0).eval(), torch.randn(1, 3, 32, 32)


def test_group_selection_masks_coupled_producers_alike_and_rebuilds_smaller_losslessly(resnet):
    model, x = resnet
    layer = lrp.reconstruct(model, x, lrp.compute_masks(model, x, "l1", 0.5)).report
    masks = lrp.compute_masks(model, x, "l1", 0.5, selection="group")
    assert masks.meta["selection"] == "group"
    # the residual stream of layer1: the stem conv and each block's last conv share one mask
    stream = ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert all(torch.equal(masks[stream[0]], masks[n]) for n in stream)
    assert int((~masks["conv1"]).sum()) == 32
    report = lrp.reconstruct(model, x, masks).report
    assert report.lossless and report.selection == "group"
    assert report.macs_ratio < layer.macs_ratio - 0.1
    assert "fc" not in masks  # the output layer stays whole


@pytest.mark.parametrize("selection", ["layer", "group"])
def test_target_macs_is_met_within_one_percent_and_recorded(resnet, selection):
    model, x = resnet
    masks = lrp.compute_masks(model, x, "l1", selection=selection, target_macs=0.3)
    report = lrp.reconstruct(model, x, masks).report
    assert abs(report.macs_ratio - 0.3) <= 0.003, report.macs_ratio
    assert report.lossless and report.target_macs == 0.3 and 0 < report.ratio < 1
    assert report.to_dict()["ratio"] == masks.meta["ratio"] and "target_macs 0.3" in str(report)


def test_target_macs_across_a_rounding_step_is_still_met():
    """MobileNetV2's widths are all even: at ratio 0.5 every group drops a channel at once and the
    MACs jump from 0.304 to 0.291 over the 1% window around 0.3; the search rounds some units up."""
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.mobilenet_v2(), 0).eval()
    x = torch.randn(1, 3, 224, 224)
    masks = lrp.compute_masks(model, x, "l1", selection="group", target_macs=0.3)
    report = lrp.reconstruct(model, x, masks).report
    assert report.lossless and abs(report.macs_ratio - 0.3) <= 0.003, report.macs_ratio
    assert masks.meta["rounded_up_units"] > 0 and masks.meta["ratio"] < masks.meta["ratio_upper"]


def test_selection_and_budget_errors_are_typed(resnet):
    model, x = resnet
    with pytest.raises(lrp.InvalidArgumentError, match="'layer'.*'group'"):
        lrp.compute_masks(model, x, selection="groups")
    with pytest.raises(lrp.InvalidArgumentError, match="not both"):
        lrp.compute_masks(model, x, ratio=0.5, target_macs=0.3)
    with pytest.raises(lrp.BudgetError, match="smallest reachable") as caught:
        lrp.compute_masks(model, x, target_macs=0.001)
    assert 0.001 < caught.value.smallest < 0.2


def test_registered_criterion_by_name_and_tp_importance(resnet):
    model, x = resnet
    masks = lrp.compute_masks(model, x, NAME, 0.5)
    assert masks.meta["criterion"] == NAME
    assert torch.equal(masks["layer2.0.conv1"], keep_mask_from_scores(max_abs(model.layer2[0].conv1.weight), 0.5))
    assert torch.equal(lrp.compute_masks(model, x, "TestsMaxAbs2", 0.5)["conv1"], masks["conv1"])  # an alias
    with pytest.raises(lrp.UnknownCriterionError, match=NAME):
        lrp.compute_masks(model, x, "no-such-criterion")
    # a Torch-Pruning Importance scores Torch-Pruning's own group of each layer / coupled group
    importance = tp.importance.GroupMagnitudeImportance(p=1)
    report = lrp.reconstruct(model, x, lrp.compute_masks(model, x, importance, 0.5, selection="group")).report
    assert report.lossless and report.macs_ratio < 0.4


def test_lossless_pruner_group_selection_at_a_budget(resnet):
    from lrp_plugin.integrations.torch_pruning import GroupCriterionImportance, LosslessPruner

    model = randomize_batchnorm(torchvision.models.resnet18(num_classes=10), 1).eval()
    x = resnet[1]
    with pytest.raises(lrp.InvalidArgumentError, match="selection"):
        LosslessPruner(model, x, selection="all")
    pruner = LosslessPruner(model, x, importance=NAME, selection="group", target_macs=0.4, mode="hard")
    report = pruner.step()
    assert report.lossless and abs(report.macs_ratio - 0.4) <= 0.004
    # the same group score drives Torch-Pruning's own MetaPruner
    tp_model = randomize_batchnorm(torchvision.models.resnet18(num_classes=10), 1).eval()
    tp.pruner.MetaPruner(tp_model, x, importance=GroupCriterionImportance("l1"), pruning_ratio=0.5,
                         ignored_layers=[tp_model.fc]).step()
    assert tp_model.conv1.out_channels == 32


def test_property_style_group_masks_on_toy_nets_are_lossless():
    """Concats, depthwise, grouped convs and splits: group masks rebuild exactly (see also the
    property test, which draws the selection)."""
    from toy_models import ToyNet

    blocks = [("res", 6), ("cat", 4, 5), ("dw", 6), ("grp", 2, 3), ("split", 2, 2), ("dense", 4)]
    torch.manual_seed(0)
    model = randomize_batchnorm(ToyNet(blocks, stem=6), 0).eval()
    x = torch.randn(2, 3, 12, 12)
    masks = lrp.compute_masks(model, x, "l2", 0.5, selection="group", ignored_layers=["dense"])
    result = lrp.reconstruct(model, x, masks, strict=False, round_to=2)
    assert result.report.lossless, str(result.report)


def test_latency_job_checks_selection_and_budget_before_building():
    from lrp_plugin.latency.api import LatencyJob

    assert LatencyJob(["timm:resnet18"], target_macs=0.3, selection="group").validate().target_macs == 0.3
    with pytest.raises(lrp.UsageError, match="not both"):
        LatencyJob(["timm:resnet18"], prune_ratio=0.5, target_macs=0.3).validate()
    with pytest.raises(lrp.UsageError, match="selection"):
        LatencyJob(["timm:resnet18"], prune_ratio=0.5, selection="blocks").validate()
