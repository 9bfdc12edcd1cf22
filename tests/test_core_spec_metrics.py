"""Saving/loading pruned models, criteria, and the paper's counting convention."""

import json
import math

import pytest
import torch
from _extras import require

import lrp_plugin as lrp
from lrp_plugin.adapters import create_resnet
from lrp_plugin.testing import randomize_batchnorm


@pytest.fixture(autouse=True, scope="module")
def _needs_timm():
    require("timm")



@pytest.fixture(scope="module")
def pruned_resnet():
    torch.manual_seed(0)
    model = randomize_batchnorm(create_resnet("resnet34", num_classes=10, cifar_stem=True))
    x = torch.randn(2, 3, 32, 32)
    lrp.apply_masks(model, lrp.compute_masks(model, x, "gm", 0.5))
    return model, x, lrp.reconstruct(model, x).model


def test_save_and_load_pruned_round_trip(tmp_path, pruned_resnet):
    _, x, pruned = pruned_resnet
    path = lrp.save_pruned(pruned, tmp_path / "pruned.pt")
    assert (tmp_path / "pruned.pt.spec.json").is_file()
    base = create_resnet("resnet34", num_classes=10, cifar_stem=True)
    loaded = lrp.load_pruned(base, path)
    assert base.layer1[0].conv1.out_channels == 64  # the base model itself is not shrunk
    pruned.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(pruned(x), loaded(x))


def test_spec_that_does_not_fit_is_an_error(tmp_path, pruned_resnet):
    path = lrp.save_pruned(pruned_resnet[2], tmp_path / "pruned.pt")
    for wrong in (create_resnet("resnet18", num_classes=10, cifar_stem=True),
                  create_resnet("resnet34", num_classes=100, cifar_stem=True)):
        before = {k: v.clone() for k, v in wrong.state_dict().items()}
        with pytest.raises(lrp.SpecMismatchError, match="Build the base model"):
            lrp.load_pruned(wrong, path)
        assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items())
    with pytest.raises(FileNotFoundError):
        lrp.load_pruned(create_resnet("resnet34"), tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(lrp.SpecMismatchError, match="save_pruned"):
        lrp.load_pruned(create_resnet("resnet34"), tmp_path / "plain.pt")


def test_channel_masks_round_trip_as_json_and_tensors(tmp_path):
    model = create_resnet("resnet18", num_classes=10)
    masks = lrp.compute_masks(model, torch.randn(1, 3, 64, 64), "l2", 0.3)
    for name in ("m.json", "m.pt"):
        loaded = lrp.ChannelMasks.load(masks.save(tmp_path / name))
        assert set(loaded) == set(masks) and all(torch.equal(loaded[k], masks[k]) for k in masks)
        assert loaded.norm_layers == masks.norm_layers and loaded.meta["criterion"] == "l2"
    assert all(int((~m).sum()) == int(0.3 * m.numel() + 1e-9) for m in masks.values())


def test_criteria_match_their_definitions():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3)
    flat = w.reshape(6, -1).double()
    assert torch.allclose(lrp.l1_norm(w), flat.abs().sum(1))
    assert torch.allclose(lrp.l2_norm(w), flat.norm(dim=1))
    brute = torch.tensor([sum(float((flat[i] - flat[j]).norm()) for j in range(6)) for i in range(6)],
                         dtype=torch.float64)
    assert torch.allclose(lrp.geometric_median_distance(w), brute)
    # GM works on the raw weights: flipping a filter's sign changes its distances
    flipped = w.clone()
    flipped[0] = -flipped[0]
    assert not torch.allclose(lrp.geometric_median_distance(flipped), lrp.geometric_median_distance(w))


@pytest.mark.parametrize("name,mflops,mparams", [
    ("resnet18", 282.71, 11.68), ("resnet34", 585.31, 21.78),
    ("resnet50", 661.00, 25.54), ("resnet101", 1269.58, 44.54),
])
def test_paper_counting_convention(name, mflops, mparams):
    """The paper's Table figures: 2 x MACs (ptflops), CIFAR stem, 1000-class fc, 32x32, truncated."""
    macs, params = lrp.count_macs_params(create_resnet(name, cifar_stem=True), torch.randn(1, 3, 32, 32))
    assert math.floor(lrp.paper_flops(macs) / 1e4) / 100 == mflops
    assert math.floor(params / 1e4) / 100 == mparams


def test_timm_adapter_knows_its_models():
    from lrp_plugin.adapters import TIMM_RESNET, find_adapter

    cifar = create_resnet("resnet18", num_classes=10, cifar_stem=True)
    assert find_adapter(cifar) is TIMM_RESNET and find_adapter(torch.nn.Conv2d(3, 3, 1)) is None
    assert TIMM_RESNET.example_inputs(cifar, batch_size=2).shape == (2, 3, 32, 32)
    assert TIMM_RESNET.example_inputs(create_resnet("resnet18")).shape == (1, 3, 224, 224)
    masks = lrp.compute_masks(cifar, TIMM_RESNET.example_inputs(cifar), "l1", 0.5,
                              ignored_layers=TIMM_RESNET.ignored_layers(cifar))
    assert "fc" not in masks and cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    with pytest.raises(lrp.UnknownModelError, match="resnet18"):
        create_resnet("vgg16")


def _torch_pruning_macs(model, x):
    import contextlib
    import io

    import torch_pruning as tp

    with contextlib.redirect_stdout(io.StringIO()):
        return int(tp.utils.count_ops_and_params(model, x)[0])


def test_macs_are_torch_pruning_counts_and_the_report_counts_them_on_the_forwards_it_runs():
    """count_macs_params and the report's MACs (counted on the trace and on the check of the rebuilt
    model, with no forward of their own) equal Torch-Pruning's count_ops_and_params: a batch of 2,
    a module shared by two parents, and an nn.Sequential of counted layers."""
    torch.manual_seed(0)
    shared = torch.nn.ReLU()
    model = randomize_batchnorm(torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), shared,
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), shared),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)))
    x = torch.randn(2, 3, 12, 12)
    assert lrp.count_macs_params(model, x)[0] == _torch_pruning_macs(model, x)
    lrp.apply_masks(model, lrp.compute_masks(model, x, "l1", 0.5))
    for verify in (True, False):
        result = lrp.reconstruct(model, x, verify=verify)
        assert result.report.macs_before == _torch_pruning_macs(model, x)
        assert result.report.macs_after == _torch_pruning_macs(result.model, x) < result.report.macs_before
        assert not hasattr(result.model[0], "__flops__") and not hasattr(model[0], "__flops__")
        assert lrp.ReconstructionReport.from_dict(json.loads(result.report.to_json())) == result.report
