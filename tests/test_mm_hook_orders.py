"""LosslessPruningHook in the Runner's other modes, on a small model (tests/mm_toy.py):
tools/test.py on a training checkpoint (test mode) and --resume, for both orders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _extras import require

require("mmengine")

import lrp_plugin as lrp  # noqa: E402
from lrp_plugin.integrations.mmengine import LosslessPruningHook  # noqa: E402


def _hook(runner) -> LosslessPruningHook:
    return next(h for h in runner.hooks if isinstance(h, LosslessPruningHook))


def _train(cfg):
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


@pytest.fixture(scope="module")
def reconstruct_first(tmp_path_factory):
    from mm_toy import toy_config

    cfg = toy_config(tmp_path_factory.mktemp("rf") / "work", order="reconstruct_then_finetune")
    runner = _train(cfg)
    return cfg, runner, _hook(runner)


def test_test_mode_on_a_reconstruct_first_checkpoint(reconstruct_first, tmp_path):
    """Issue 14 item 2: tools/test.py CONFIG iter_N.pth crashed remapping an unbuilt optimizer."""
    from mm_toy import toy_config
    from mmengine.runner import Runner

    cfg, runner, hook = reconstruct_first
    ckpt = Path(cfg.work_dir) / "iter_2.pth"
    test_cfg = toy_config(tmp_path / "test", order="reconstruct_then_finetune")
    test_cfg.load_from = str(ckpt)
    tester = Runner.from_cfg(test_cfg)
    metrics = tester.test()
    assert set(metrics) == {"accuracy"}
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    own = tester.model.state_dict()
    assert own.keys() == saved.keys() and all(torch.equal(own[k], saved[k]) for k in own)
    assert sum(p.numel() for p in tester.model.parameters()) == hook.report.params_after
    assert _hook(tester).report.to_dict() == hook.report.to_dict()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(tester.model.eval().logits(x), runner.model.eval().logits(x))


def test_resume_after_reconstruct_first_keeps_the_report(reconstruct_first):
    """Issue 14 item 4: after --resume the report was None in the log and in pruned.pth."""
    from mm_toy import toy_config

    cfg, _, hook = reconstruct_first
    resume_cfg = toy_config(Path(cfg.work_dir), max_iters=3, order="reconstruct_then_finetune")
    resume_cfg.resume, resume_cfg.load_from = True, str(Path(cfg.work_dir) / "iter_2.pth")
    resumed = _train(resume_cfg)
    report = _hook(resumed).report
    assert report is not None and report.to_dict() == hook.report.to_dict()
    meta = torch.load(Path(cfg.work_dir) / "pruned.pth", map_location="cpu", weights_only=True)["meta"]
    assert meta["lrp_report"] == json_round_trip(hook.report.to_dict())
    assert resumed.iter == 3 and sum(p.numel() for p in resumed.model.parameters()) == hook.report.params_after


def json_round_trip(data):
    import json

    return json.loads(json.dumps(data, default=str))


def test_test_mode_and_resume_with_masks_held(tmp_path):
    """The paper's order: test mode evaluates the masked model; resume brings the same masks back."""
    from mm_toy import toy_config
    from mmengine.runner import Runner

    cfg = toy_config(tmp_path / "work")
    runner = _train(cfg)
    hook = _hook(runner)
    ckpt = Path(cfg.work_dir) / "iter_2.pth"
    test_cfg = toy_config(tmp_path / "test")
    test_cfg.load_from = str(ckpt)
    tester = Runner.from_cfg(test_cfg)
    assert set(tester.test()) == {"accuracy"}
    assert _hook(tester).masks.keys() == hook.masks.keys()
    assert lrp.masks_hold(tester.model)  # the checkpoint holds the masked weights

    resume_cfg = toy_config(tmp_path / "work", max_iters=4)
    resume_cfg.resume, resume_cfg.load_from = True, str(ckpt)
    resumed = _train(resume_cfg)
    back = _hook(resumed).masks
    assert all(torch.equal(back[k], hook.masks[k]) for k in hook.masks)
    assert lrp.masks_hold(resumed.model) and _hook(resumed).report.lossless
