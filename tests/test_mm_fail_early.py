"""LosslessPruningHook refuses what cannot work before training, not after it (tools/train.py path)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _extras import require
from mm_runner import YOLOV3_MOBILENETV2, pruning_hook, yolo_config

require("mmengine")
require("mmcv.ops")
require("mmdet")

import lrp_plugin as lrp  # noqa: E402


def test_unknown_criterion_and_bad_ignored_layers_are_refused_when_the_hook_is_built():
    from lrp_plugin.integrations.mmengine import LosslessPruningHook

    with pytest.raises(lrp.UnknownCriterionError, match="foo"):
        LosslessPruningHook(criterion="foo")
    with pytest.raises(lrp.InvalidArgumentError, match="ignored_layers"):
        LosslessPruningHook(ignored_layers="backbone.conv1")
    with pytest.raises(lrp.InvalidRatioError):
        LosslessPruningHook(ratio_dict={"backbone.conv1": 1.5})


@pytest.mark.slow
def test_misspelt_ignored_layer_is_refused_before_weights_and_training(tmp_path):
    from mmengine.runner import Runner

    runner = Runner.from_cfg(yolo_config(tmp_path, base=YOLOV3_MOBILENETV2, ignored_layers=["backbone.layr7"]))
    with pytest.raises(lrp.MaskError, match=r"'backbone.layr7' \(did you mean"):
        runner.train()
    assert not list(Path(runner.work_dir).glob("*.pth")), "refused before any iteration"


@pytest.mark.slow
def test_yolov3_mobilenetv2_stock_config_trains_and_rebuilds_losslessly(tmp_path):
    """Its backbone's last conv runs but its output is unused (out_indices=(2, 4, 6)): the layer feeding
    it is found by tracing and left unmasked, so the rebuild after training runs and is lossless."""
    from mmengine.runner import Runner

    runner = Runner.from_cfg(yolo_config(tmp_path, base=YOLOV3_MOBILENETV2))
    runner.train()
    hook = pruning_hook(runner)
    assert "backbone.layer7.0.linear_conv.conv" not in hook.masks
    assert "backbone.conv2.conv" in hook.masks.meta["skipped"]["backbone.layer7.0.linear_conv.conv"]
    assert hook.report.lossless and hook.report.params_after < 0.8 * hook.report.params_before
    assert (Path(runner.work_dir) / "pruned.pth").is_file()
