"""Bad input gets a clear LRPError naming the fix, and the caller's model is unchanged."""

import pytest
import torch
from _extras import require
from torch import nn
from toy_models import ToyNet, cbr

import lrp_plugin as lrp
from lrp_plugin.adapters import create_resnet
from lrp_plugin.testing import randomize_batchnorm


@pytest.fixture(autouse=True, scope="module")
def _needs_timm():
    require("timm")


BLOCKS = [("res", 8), ("cat", 4, 4)]


@pytest.fixture
def toy():
    torch.manual_seed(0)
    model = randomize_batchnorm(ToyNet(BLOCKS))
    return model, torch.randn(2, 3, 12, 12), {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "half"])
def test_ratio_outside_0_1(toy, ratio):
    model, x, before = toy
    with pytest.raises(lrp.InvalidRatioError, match=r"\[0, 1\)"):
        lrp.compute_masks(model, x, "l1", ratio)
    assert _unchanged(model, before)


def test_ratio_none_means_the_default_half(toy):
    model, x, _ = toy
    assert lrp.compute_masks(model, x, "l1", None).meta["ratio"] == 0.5


def test_unknown_criterion(toy):
    model, x, _ = toy
    with pytest.raises(lrp.UnknownCriterionError, match="l1.*l2.*gm"):
        lrp.compute_masks(model, x, "taylor", 0.5)


def test_masks_naming_absent_modules(toy):
    model, x, before = toy
    with pytest.raises(lrp.MaskError, match="not a module"):
        lrp.apply_masks(model, {"stem.9": torch.ones(8, dtype=torch.bool)}, example_inputs=x)
    with pytest.raises(lrp.MaskError, match="not a module"):
        lrp.reconstruct(model, x, masks={"nope": torch.ones(8, dtype=torch.bool)})
    assert _unchanged(model, before) and lrp.get_masks(model) is None


def test_masks_of_wrong_length(toy):
    model, x, before = toy
    with pytest.raises(lrp.MaskError, match="8 output channels but its mask has 5"):
        lrp.apply_masks(model, {"stem.0": torch.ones(5, dtype=torch.bool)}, example_inputs=x)
    with pytest.raises(lrp.MaskError, match="BatchNorm"):
        lrp.apply_masks(model, {"stem.1": torch.ones(8, dtype=torch.bool)})
    assert _unchanged(model, before)


def test_no_masks_at_all(toy):
    model, x, _ = toy
    with pytest.raises(lrp.MaskError, match="apply_masks"):
        lrp.reconstruct(model, x)


def test_hand_masks_need_inputs_to_find_batchnorm(toy):
    model, x, before = toy
    masks = {"stem.0": torch.tensor([True, False] * 4)}
    with pytest.raises(lrp.MaskError, match="example_inputs"):
        lrp.apply_masks(model, masks)
    assert _unchanged(model, before)
    held = lrp.apply_masks(model, masks, example_inputs=x)
    assert held.norm_layers == {"stem.0": "stem.1"}


def test_untraceable_model(toy):
    model, _, before = toy
    with pytest.raises(lrp.TraceError, match="example_inputs"):
        lrp.compute_masks(model, torch.randn(2, 5, 12, 12), "l1", 0.5)  # wrong channel count
    with pytest.raises(lrp.TraceError):
        lrp.compute_masks(model, "not a tensor", "l1", 0.5)
    assert _unchanged(model, before)


class _GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)))


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_channels_coupled_through_groupnorm_or_layernorm(norm):
    model = _GroupNormNet()
    if norm == "layer":
        model.norm = nn.Sequential(nn.Flatten(2), nn.Unflatten(2, (6, 6)))  # shape-preserving stand-in
        model.norm = _ChannelLayerNorm(8)
    x = torch.randn(1, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = lrp.compute_masks(model, x, "l1", 0.5)  # skipped and reported, not refused
    assert "conv" not in masks and "conv" in masks.meta["skipped"]
    with pytest.raises(lrp.UnsupportedLayerError, match="ignored_layers"):  # asked for explicitly
        lrp.compute_masks(model, x, "l1", 0.5, ratio_dict={"conv": 0.5})
    with pytest.raises(lrp.UnsupportedLayerError, match="GroupNorm/LayerNorm"):
        lrp.reconstruct(model, x, masks={"conv": torch.tensor([True, False] * 4)}, mask_bn=False)
    assert _unchanged(model, before)
    assert lrp.compute_masks(model, x, "l1", 0.5, ignored_layers=["conv"]) == {}


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over channels of an NCHW map, as ConvNeXt does."""

    def __init__(self, channels):
        super().__init__()
        self.ln = nn.LayerNorm(channels)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_bad_merge_and_round_to(toy):
    model, x, _ = toy
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    with pytest.raises(lrp.InvalidArgumentError, match="union"):
        lrp.reconstruct(model, x, masks=masks, merge="xor")
    with pytest.raises(lrp.InvalidArgumentError, match="round_to"):
        lrp.reconstruct(model, x, masks=masks, round_to=0)


def test_ignored_layers_and_output_layers_are_never_masked():
    model = create_resnet("resnet18", num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    masks = lrp.compute_masks(model, x, "l1", 0.5, ignored_layers=["layer4"])
    assert "fc" not in masks and not any(k.startswith("layer4") for k in masks)
    assert "conv1" in masks and "layer1.0.conv1" in masks
    toy = ToyNet(BLOCKS)
    toy_masks = lrp.compute_masks(toy, torch.randn(1, 3, 12, 12), "gm", 0.5)
    assert "dense" not in toy_masks  # a conv whose output is a model output keeps its meaning
    with pytest.raises(lrp.MaskError, match="not a module"):
        lrp.compute_masks(model, x, "l1", 0.5, ignored_layers=["head"])


def test_masks_on_a_model_output_layer_are_kept_physically():
    toy = randomize_batchnorm(ToyNet(BLOCKS))
    x = torch.randn(1, 3, 12, 12)
    masks = lrp.compute_masks(toy, x, "l1", 0.5)
    masks["dense"] = torch.tensor([True, False, True])
    result = lrp.reconstruct(toy, x, masks=masks)
    assert result.model.dense.out_channels == 3 and result.report.lossless
    assert any("dense" in note for note in result.report.notes)


def test_cbr_helper_is_a_real_conv_bn_relu():  # guards the toy models the other tests rely on
    block = cbr(3, 4)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


ALIASES = ["l1", "L1", "l1norm", "L1Norm", "l1_norm", "L1-Norm", "l2", "L2Norm", "l2_norm", "gm", "GM", "fpgm",
           "FPGM", "geometric_median"]


@pytest.mark.parametrize("alias", ALIASES)
def test_every_criterion_alias_works_in_every_entry_point(alias):
    """One table of names: the core, Torch-Pruning's LosslessPruner and the MMEngine hook agree."""
    from lrp_plugin.core.criteria import CRITERIA, criterion_name
    from lrp_plugin.integrations.torch_pruning import LosslessPruner

    name = criterion_name(alias)
    assert lrp.get_criterion(alias) is CRITERIA[name]
    model = ToyNet(BLOCKS)
    x = torch.randn(1, 3, 12, 12)
    assert lrp.compute_masks(model, x, alias, 0.5).meta["criterion"] == alias
    assert LosslessPruner(model, x, alias, pruning_ratio=0.5).criterion == name
    from lrp_plugin.cli import build_parser

    assert build_parser().parse_args(["latency", "timm:resnet18", "--criterion", alias]).criterion == name
    with pytest.raises(lrp.UnknownCriterionError, match="l1"):
        LosslessPruner(model, x, alias + "x", pruning_ratio=0.5)
