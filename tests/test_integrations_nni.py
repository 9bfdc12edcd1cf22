"""NNI 3.0: our pruners in NNI's own workflow, and a lossless ModelSpeedup replacement."""

import copy

import pytest
import torch
import torch.nn.functional as F
from _extras import require

from lrp_plugin import CallOrderError
from lrp_plugin import errors as lrp_errors
from lrp_plugin.adapters import create_resnet
from lrp_plugin.testing import randomize_batchnorm

nni = require("nni")
require("timm")
require("sklearn")

from nni.compression import TorchEvaluator  # noqa: E402
from nni.compression.pruning import L1NormPruner as NNIL1NormPruner  # noqa: E402
from schema import SchemaError  # noqa: E402

from lrp_plugin.integrations.nni import (  # noqa: E402
    CONFIG_DIR,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LosslessSpeedup,
    UnsupportedConfigError,
    load_config_list,
)
from lrp_plugin.studies.data import load_digits_split  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def _model(seed=0):
    torch.manual_seed(seed)
    return randomize_batchnorm(create_resnet("resnet18", num_classes=10, cifar_stem=True), seed)


def _evaluator(model, data, steps_seen):
    def training_step(batch, model):
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        model.train()
        for step in range(max_steps):
            idx = torch.arange(step * 32, step * 32 + 32)
            loss = training_step((data.train_x[idx], data.train_y[idx]), model)
            optimizers.zero_grad()
            loss.backward()
            optimizers.step()
            steps_seen.append(loss.item())

    optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return TorchEvaluator(training_func, optimizer, training_step, dummy_input=data.test_x[:2])


@pytest.mark.parametrize("pruner_cls", [L1NormPruner, L2NormPruner, FPGMPruner])
def test_config_list_pruner_finetune_with_torch_evaluator_then_reconstruct(pruner_cls, digits):
    model = _model()
    steps = []
    evaluator = _evaluator(model, digits, steps)
    pruner = pruner_cls(model, load_config_list("resnet_cr0.5"), evaluator)
    _, masks = pruner.compress()
    assert "bn1" in masks and torch.equal(masks["bn1"]["weight"], masks["conv1"]["weight"][:, 0, 0, 0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluator.bind_model(model)
    evaluator.train(max_steps=6)
    evaluator.unbind_model()
    assert len(steps) == 6 and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for name, targets in masks.items():  # the parameters themselves stayed exactly zero where masked
        for target, mask in targets.items():
            param = getattr(pruner._module_wrappers[name], target)
            if param is not None:
                assert param[mask == 0].abs().max() == 0, (name, target)
    model.eval()
    with torch.no_grad():
        masked_logits = model(digits.test_x)  # the network NNI fine-tuned (its wrappers apply the masks)
    pruner.unwrap_model()
    speedup = LosslessSpeedup(model, digits.test_x[:2], masks)
    pruned = speedup.speedup_model()
    assert speedup.report.lossless and speedup.report.params_after < speedup.report.params_before
    with torch.no_grad():
        logits = pruned(digits.test_x)
    assert torch.equal(logits.argmax(1), masked_logits.argmax(1))
    assert (logits - masked_logits).abs().max() <= 1e-5 * masked_logits.abs().max()


def _nni_own_l1_masks():
    model = _model()
    pruner = NNIL1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return model, masks


def test_masks_from_nnis_own_pruner_rebuild_losslessly_by_folding_constants():
    model, masks = _nni_own_l1_masks()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(CallOrderError, match="speedup_model"):
        LosslessSpeedup(model, x, masks).report
    conv_masked = copy.deepcopy(model)
    with torch.no_grad():  # what NNI's wrappers computed: masked conv weights, BN alive
        for name, targets in masks.items():
            conv_masked.get_submodule(name).weight.mul_(targets["weight"])
        expected = conv_masked.eval()(x)
    speedup = LosslessSpeedup(model, x, masks)
    pruned = speedup.speedup_model()
    report = speedup.report
    assert report.lossless and report.max_rel_error < 1e-5 and report.constants_folded > 0
    assert any("folded" in note for note in report.notes)
    with torch.no_grad():
        assert (pruned.eval()(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_masks_from_nnis_own_pruner_without_folding_report_the_bn_error():
    model, masks = _nni_own_l1_masks()
    speedup = LosslessSpeedup(model, torch.randn(2, 3, 32, 32), masks, fold_constants=False)
    with pytest.warns(UserWarning, match="not lossless"):
        speedup.speedup_model()
    report = speedup.report
    assert not report.lossless and report.max_rel_error > 1e-3
    assert any("without BatchNorm masks" in note and f"{report.max_rel_error:.3g}" in note for note in report.notes)


def test_legacy_sparsity_and_exclude_are_understood():
    model = _model()
    pruner = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparsity": 0.3},
                                  {"exclude": True, "op_names": ["layer4.1.conv2"]}],
                          dummy_input=torch.randn(1, 3, 32, 32))
    _, masks = pruner.compress()
    assert "layer4.1.conv2" not in masks and "layer4.1.conv1" in masks
    channel_masks = pruner.channel_masks()
    assert int((~channel_masks["layer1.0.conv1"]).sum()) == int(64 * 0.3)
    assert channel_masks.norm_layers["layer1.0.conv1"] == "layer1.0.bn1"


@pytest.mark.parametrize("config", [
    {"op_types": "Conv2d", "sparse_ratio": 0.5},  # not a list
    {"sparse_ratio": 0.5},  # selects nothing
    {"op_types": ["Conv2d"], "sparse_ratio": 0.5, "max_sparse_ratio": 1.5},
])
def test_configs_nni_rejects_get_nnis_error(config):
    with pytest.raises(SchemaError):
        L1NormPruner(_model(), [config], dummy_input=torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("config,named", [
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "global_group_id": 1}, "global_group_id"),
    ({"op_types": ["Conv2d"], "sparse_threshold": 0.1}, "sparse_threshold"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "granularity": "in_channel"}, "out_channel"),
    ({"op_types": ["Linear"], "sparse_ratio": 0.5}, "not Conv2d"),
    ({"op_types": ["Conv2d"]}, "sparse_ratio"),
])
def test_config_keys_we_do_not_support_are_named(config, named):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedConfigError, match=named):
        FPGMPruner(model, [config], dummy_input=torch.randn(1, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bn_masking_needs_a_dummy_input_and_wrapped_models_are_refused():
    from lrp_plugin import MaskError

    with pytest.raises(MaskError, match="dummy_input"):
        L1NormPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    model = _model()
    pruner = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], dummy_input=torch.randn(1, 3, 32, 32))
    _, masks = pruner.compress()
    with pytest.raises(MaskError, match="unwrap_model"):
        LosslessSpeedup(model, torch.randn(1, 3, 32, 32), masks)


def test_shipped_config_lists_load():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    assert {"resnet_cr0.4", "resnet_cr0.5", "resnet_cr0.7", "yolov3_cr0.5", "yolov3_cr0.9", "fcn_cr0.3"} <= set(names)
    assert load_config_list("yolov3_cr0.9")[0]["exclude_op_names_re"] == [r"bbox_head\.convs_pred\..*"]
    with pytest.raises(FileNotFoundError, match="resnet_cr0.5"):
        load_config_list("resnet_cr0.55")


def test_group_selection_and_registered_criterion_in_an_nni_pruner_rebuild_losslessly():
    """selection='group' (issue 17) with a criterion registered by a test module (issue 21)."""
    from custom_criterion import NAME

    x = torch.randn(2, 3, 32, 32)
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    with pytest.raises(lrp_errors.InvalidArgumentError, match="selection"):
        L1NormPruner(_model(), config, dummy_input=x, selection="chain")
    ratios = {}
    for selection in ("layer", "group"):
        model = _model()
        pruner = L1NormPruner(model, config, dummy_input=x, selection=selection, criterion=NAME)
        _, masks = pruner.compress()
        pruner.unwrap_model()
        speedup = LosslessSpeedup(model, x, masks)
        speedup.speedup_model()
        assert speedup.report.lossless, str(speedup.report)
        ratios[selection] = speedup.report.macs_ratio
    assert ratios["group"] < ratios["layer"] - 0.1
    # a MACs budget: NNI masks exactly the filters lrp chose, so the rebuild lands on the budget
    model = _model()
    pruner = L1NormPruner(model, config, dummy_input=x, selection="group", target_macs=0.4)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    speedup = LosslessSpeedup(model, x, masks)
    speedup.speedup_model()
    assert speedup.report.lossless and abs(speedup.report.macs_ratio - 0.4) <= 0.004, str(speedup.report)
