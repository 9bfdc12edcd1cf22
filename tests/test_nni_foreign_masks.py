"""Masks from NNI 3.0's own pruners: rebuilt exactly against the model NNI masked, or refused by name."""

import copy

import pytest
import torch
from _extras import require

from lrp_plugin import ForeignMaskError, LosslessError, MaskError
from lrp_plugin.adapters import create_resnet
from lrp_plugin.testing import randomize_batchnorm

nni = require("nni")
require("timm")

from nni.compression import TorchEvaluator  # noqa: E402
from nni.compression.pruning import L1NormPruner as NNIL1NormPruner  # noqa: E402
from nni.compression.pruning import LevelPruner, SlimPruner  # noqa: E402

from lrp_plugin.integrations.nni import (  # noqa: E402
    L1NormPruner,
    LosslessSpeedup,
    UnsupportedConfigError,
    nni_masked_copy,
)

X = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _model(seed=0):
    torch.manual_seed(seed)
    return randomize_batchnorm(create_resnet("resnet18", num_classes=10, cifar_stem=True), seed).eval()


def _slim_masks(model):
    def training_step(batch, model):
        return model(batch).square().mean()

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for _ in range(max_steps or 1):
            loss = training_step(X, model)
            optimizers.zero_grad()
            loss.backward()
            optimizers.step()

    optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.0)
    evaluator = TorchEvaluator(training_func, optimizer, training_step, dummy_input=X[:2])
    pruner = SlimPruner(model, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.3}], evaluator, training_steps=2)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


def _changed_predictions(pruned, reference):
    with torch.no_grad():
        return int((pruned.eval()(X).argmax(1) != reference.eval()(X).argmax(1)).sum())


def test_slimpruner_bn_only_masks_rebuild_exactly_against_the_nni_masked_model():
    model = _model()
    masks = _slim_masks(model)
    assert all(m.dim() == 1 for targets in masks.values() for m in targets.values() if m is not None)
    reference = nni_masked_copy(model.eval(), masks)
    speedup = LosslessSpeedup(model, X[:2], masks, inplace=False)
    pruned = speedup.speedup_model()
    report = speedup.report
    assert report.lossless and report.params_after < 0.8 * report.params_before
    assert any("SlimPruner" in note for note in report.notes)
    assert _changed_predictions(pruned, reference) == 0
    with torch.no_grad():
        want = reference(X)
        assert (pruned(X) - want).abs().max() <= 1e-5 * want.abs().max()


def test_levelpruner_element_wise_masks_are_refused_by_family():
    model = _model()
    pruner = LevelPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ForeignMaskError, match="LevelPruner.*does not shrink a model"):
        LosslessSpeedup(model, X[:2], masks).speedup_model()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before any rebuild


def test_masks_on_the_classifier_are_refused_up_front_naming_it():
    model = _model()
    pruner = NNIL1NormPruner(model, [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    with pytest.raises(ForeignMaskError, match=r"feed model outputs: \['fc'\]"):
        LosslessSpeedup(model, X[:2], masks).speedup_model()


def test_without_folding_strict_raises_and_its_advice_works():
    model = _model()
    pruner = NNIL1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    with pytest.raises(LosslessError, match="strict=False"):
        LosslessSpeedup(model, X[:2], masks, inplace=False, fold_constants=False, strict=True).speedup_model()
    with pytest.warns(UserWarning, match="not lossless"):
        LosslessSpeedup(model, X[:2], masks, inplace=False, fold_constants=False, strict=False).speedup_model()


def test_nni_config_and_mask_errors_are_typed_and_name_the_entry():
    model = _model()
    with pytest.raises(UnsupportedConfigError, match="layer9.0.conv1"):
        L1NormPruner(model, [{"op_names": ["layer9.0.conv1"], "sparse_ratio": 0.5}], dummy_input=X[:2])
    with pytest.raises(MaskError, match=r"bn1.weight: mask of shape \(3,\)"):
        LosslessSpeedup(model, X[:2], {"bn1": {"weight": torch.ones(3)}}).speedup_model()
    with pytest.raises(MaskError, match="'layer1.0.bn9' is not a module"):
        LosslessSpeedup(model, X[:2], {"layer1.0.bn9": {"weight": torch.ones(64)}}).speedup_model()
