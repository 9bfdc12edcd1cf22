"""LosslessPruningHook with selection='group', target_macs and a registered criterion (tests/mm_toy.py):
lossless after finetune-then-reconstruct; bad values refused when the hook is built, before any data."""

from __future__ import annotations

import pytest
import torch
from _extras import require

require("mmengine")

import lrp_plugin as lrp  # noqa: E402
from lrp_plugin.integrations.mmengine import LosslessPruningHook  # noqa: E402


def _train(cfg):
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, next(h for h in runner.hooks if isinstance(h, LosslessPruningHook))


def test_group_selection_with_a_registered_criterion_finetune_then_reconstruct(tmp_path):
    from custom_criterion import NAME
    from mm_toy import toy_config

    runner, hook = _train(toy_config(tmp_path / "work", criterion=NAME, selection="group"))
    assert hook.masks.meta["selection"] == "group" and hook.masks.meta["criterion"] == NAME
    # stem and body are summed (x + body(x)): one shared mask
    assert torch.equal(hook.masks["stem.0"], hook.masks["body.0"])
    assert hook.report.lossless and hook.report.selection == "group"
    assert hook.report.params_after < hook.report.params_before


def test_target_macs_in_the_hook(tmp_path):
    from mm_toy import toy_config

    _, hook = _train(toy_config(tmp_path / "work", ratio=None, target_macs=0.4))
    # 8-16 channels: the closest reachable step, predicted exactly by the planned MACs
    assert hook.report.lossless and hook.report.target_macs == 0.4
    assert hook.report.macs_ratio == pytest.approx(hook.masks.meta["planned_macs_ratio"], abs=1e-6)


def test_bad_selection_and_budget_are_refused_before_data(tmp_path):
    from mm_toy import toy_config

    with pytest.raises(lrp.InvalidArgumentError, match="selection"):
        LosslessPruningHook(selection="everything")
    with pytest.raises(lrp.InvalidArgumentError, match="not both"):
        LosslessPruningHook(ratio=0.5, target_macs=0.3)
    with pytest.raises(lrp.UnknownCriterionError):
        LosslessPruningHook(criterion="nope")
    cfg = toy_config(tmp_path / "work", ratio=None, target_macs=0.001)
    with pytest.raises(lrp.BudgetError, match="smallest reachable"):
        _train(cfg)  # raised in before_train, before the first batch
    assert not list((tmp_path / "work").rglob("*.pth"))
