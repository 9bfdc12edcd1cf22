"""Union reconstruction is lossless on timm ResNets; the paper's ablations are not."""

import pytest
import torch
from _extras import require

import lrp_plugin as lrp
from lrp_plugin.adapters import create_resnet
from lrp_plugin.testing import randomize_batchnorm


@pytest.fixture(autouse=True, scope="module")
def _needs_timm():
    require("timm")




def _masked_resnet(name, criterion, ratio, *, dtype=torch.float32, mask_bn=True, seed=0):
    torch.manual_seed(seed)
    model = randomize_batchnorm(create_resnet(name, num_classes=10), seed).to(dtype)
    x = torch.randn(2, 3, 64, 64, dtype=dtype)
    masks = lrp.compute_masks(model, x, criterion=criterion, ratio=ratio)
    lrp.apply_masks(model, masks, mask_bn=mask_bn)
    return model, x, masks


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("criterion", ["l1", "l2", "gm"])
@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_union_reconstruction_is_lossless(name, criterion, ratio):
    model, x, masks = _masked_resnet(name, criterion, ratio)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lrp.reconstruct(model, x)
    report = result.report
    assert report.lossless and report.max_rel_error < 1e-5
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    # the caller's model is untouched and still masked
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert lrp.get_masks(model) is not None
    # a conv outside residual chains keeps exactly its mask; the stem shares layer1's chain (union)
    modules = dict(result.model.named_modules())
    assert modules["layer1.0.conv1"].out_channels == int(masks["layer1.0.conv1"].sum())
    assert int(masks["conv1"].sum()) <= modules["conv1"].out_channels < 64
    assert all(m.out_channels > 0 for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    # and still runs at another input size, with the same answer as the masked model
    other = torch.randn(1, 3, 97, 80)
    model.eval(), result.model.eval()
    with torch.no_grad():
        ref, out = model(other), result.model(other)
    assert (ref - out).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_union_is_lossless_in_float64(name):
    model, x, _ = _masked_resnet(name, "gm", 0.5, dtype=torch.float64)
    report = lrp.reconstruct(model, x).report
    assert report.dtype == "float64" and report.max_rel_error < 1e-10


def test_intersection_is_lossy_and_names_the_worst_group():
    model, x, _ = _masked_resnet("resnet50", "l1", 0.5)
    with pytest.raises(lrp.LosslessError) as info:
        lrp.reconstruct(model, x, merge="intersection")
    assert "worst group" in str(info.value) and "union" in str(info.value)
    report = lrp.reconstruct(model, x, merge="intersection", strict=False).report
    assert not report.lossless and report.max_rel_error > 1e-3
    assert report.worst_group is not None


def test_unmasked_batchnorm_is_lossy_without_folding():
    """The paper's Table 8; folding the constants (the default) makes the same masks exact."""
    model, x, _ = _masked_resnet("resnet50", "l2", 0.5, mask_bn=False)
    with pytest.raises(lrp.LosslessError, match="mask_bn=True"):
        lrp.reconstruct(model, x, fold_constants=False)
    report = lrp.reconstruct(model, x, strict=False, fold_constants=False).report
    assert report.max_rel_error > 1e-3 and any("BatchNorm was not masked" in n for n in report.notes)
    folded = lrp.reconstruct(model, x).report
    assert folded.lossless and any("folded" in n for n in folded.notes)


def test_explicit_masks_on_an_unmasked_model_use_the_masked_model_as_reference():
    torch.manual_seed(0)
    model = randomize_batchnorm(create_resnet("resnet18", num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    result = lrp.reconstruct(model, x, masks=masks)
    assert result.report.lossless
    assert lrp.get_masks(model) is None  # nothing was attached to the caller's model


def test_inplace_prunes_the_callers_model():
    model, x, _ = _masked_resnet("resnet18", "l1", 0.5)
    result = lrp.reconstruct(model, x, inplace=True)
    assert result.model is model and model.layer1[0].conv1.out_channels == 32


def test_report_serialises(tmp_path):
    model, x, _ = _masked_resnet("resnet18", "l1", 0.5)
    report = lrp.reconstruct(model, x).report
    data = report.to_dict()
    assert data["params_before"] > data["params_after"] and data["groups"]
    group = next(g for g in data["groups"] if len(g["kept_by_producer"]) > 1)  # a residual chain
    assert group["channels_after"] >= max(v for v in group["kept_by_producer"].values() if v is not None)
    report.to_json(tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text().startswith("{")
    assert "params" in str(report) and "lossless" in str(report)
