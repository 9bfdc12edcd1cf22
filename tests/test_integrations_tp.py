"""Torch-Pruning 1.6: the paper's importances and a pruner with soft (mask) and hard modes."""

import pytest
import torch
import torch_pruning as tp
from _extras import require

import lrp_plugin as lrp
from lrp_plugin.adapters import create_resnet
from lrp_plugin.integrations.torch_pruning import GMImportance, L1Importance, L2Importance, LosslessPruner
from lrp_plugin.testing import randomize_batchnorm


@pytest.fixture(autouse=True, scope="module")
def _needs_timm():
    require("timm")


def _resnet50(seed=0):
    torch.manual_seed(seed)
    return randomize_batchnorm(create_resnet("resnet50", num_classes=10), seed)


def _train(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.randint(0, 10, (2,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_soft_mode_masks_finetunes_then_reconstructs():
    model = _resnet50()
    x = torch.randn(1, 3, 64, 64)
    pruner = LosslessPruner(model, x, L1Importance(), pruning_ratio=0.5, ignored_layers=[model.fc], mode="soft")
    masks = pruner.step()
    assert lrp.get_masks(model) is masks or set(lrp.get_masks(model)) == set(masks)
    assert model.layer1[0].conv1.out_channels == 64  # nothing removed yet
    _train(model)
    assert lrp.masks_hold(model)
    report = pruner.reconstruct()
    assert report.lossless and report.params_after < report.params_before
    assert model.layer1[0].conv1.out_channels == 32  # in place, like Torch-Pruning's pruners


def test_hard_mode_prunes_and_reconstructs_at_once():
    model = _resnet50()
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    pruner = LosslessPruner(model, x, "gm", pruning_ratio=0.5, mode="hard")
    report = pruner.step()
    assert report.lossless and lrp.get_masks(model) is None
    assert model.layer2[0].conv2.out_channels == 64 and model.fc.out_features == 10


def test_round_to_keeps_multiples_of_8_and_stays_lossless():
    model = _resnet50()
    x = torch.randn(1, 3, 64, 64)
    original = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    pruner = LosslessPruner(model, x, L2Importance(), pruning_ratio=0.3, round_to=8, mode="soft")
    pruner.step()
    report = pruner.reconstruct()
    assert report.lossless and report.zero_channels_kept > 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.out_channels != original[name]:
            assert module.out_channels % 8 == 0 or original[name] < 8, name
    assert "zero_channels_kept" in report.to_dict()


def test_pruning_ratio_dict_and_ignored_layers():
    model = _resnet50()
    x = torch.randn(1, 3, 64, 64)
    pruner = LosslessPruner(model, x, "l1", pruning_ratio=0.5, ignored_layers=[model.layer4],
                            pruning_ratio_dict={model.layer1: 0.25}, mode="soft")
    masks = pruner.step()
    assert int((~masks["layer1.0.conv1"]).sum()) == 16 and int((~masks["layer2.0.conv1"]).sum()) == 64
    assert not any(k.startswith("layer4") for k in masks)


def test_importances_plug_into_torch_prunings_own_pruner():
    model = create_resnet("resnet18", num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    group = graph.get_pruning_group(model.layer1[0].conv1, tp.prune_conv_out_channels, list(range(64)))
    scores = GMImportance()(group)
    expected = lrp.geometric_median_distance(model.layer1[0].conv1.weight)
    assert torch.allclose(scores, expected / expected.max())  # one producer: the paper's per-filter GM
    pruner = tp.pruner.MetaPruner(model, x, importance=L1Importance(), pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    assert model.layer1[0].conv1.out_channels == 32


@pytest.mark.parametrize("kwargs,message", [
    ({"importance": "taylor"}, "unknown criterion"),
    ({"importance": 3}, "criterion name"),  # Torch-Pruning Importances are accepted (issue 21)
    ({"mode": "medium"}, "soft"),
    ({"pruning_ratio": 1.0}, r"\[0, 1\)"),
    ({"global_pruning": True}, "global_pruning"),
    ({"isomorphic": True}, "isomorphic"),
    ({"round_to": 0}, "round_to"),
])
def test_bad_arguments(kwargs, message):
    model = create_resnet("resnet18", num_classes=10)
    args = {"importance": "l1", **kwargs}
    with pytest.raises(lrp.LRPError, match=message):
        LosslessPruner(model, torch.randn(1, 3, 64, 64), **args)


def test_reconstruct_before_step_is_an_error():
    model = create_resnet("resnet18", num_classes=10)
    with pytest.raises(lrp.CallOrderError, match="step"):
        LosslessPruner(model, torch.randn(1, 3, 64, 64)).reconstruct()
