"""Issue 20's acceptance, the tests' share: stock ``tools/train.py`` with LosslessPruningHook (two
iterations, synthetic data written here, random weights) -> the lossless rebuild -> stock
``tools/test.py`` on the pruned config and checkpoint, whose outputs equal the masked model's.

RTMDet-tiny (EMAHook and PipelineSwitchHook kept, head convs shared between levels), Faster
R-CNN-R50 (two-stage) and PSPNet-R18; the other acceptance models run in
benchmarks/openmmlab_models.py (same harness, tests/mm_stock.py).
"""

from __future__ import annotations

import pytest
import torch
from _extras import require

require("mmengine")
require("mmcv.ops")

import mm_stock  # noqa: E402

import lrp_plugin as lrp  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["RTMDet-tiny", "Faster R-CNN-R50", "PSPNet-R18"])
def test_stock_train_then_test_on_the_pruned_output(name, tmp_path):
    scope = mm_stock.MODELS[name][0]
    require(scope)
    run = mm_stock.train_and_test(name, tmp_path)
    assert run.test_error is None, run.test_log[-3000:]
    assert run.report["lossless"] and run.report["params_after"] < run.report["params_before"]
    assert mm_stock.raw_outputs_max_rel(run) < 1e-5
    if scope == "mmdet":  # both stock tools/test.py runs dump the same boxes and scores
        assert mm_stock.same_predictions(mm_stock.masked_predictions(run), tmp_path / "pruned.pkl")

    checkpoint = torch.load(run.masked, map_location="cpu", weights_only=True)
    masks = lrp.ChannelMasks.from_state_dict(checkpoint["meta"]["lrp"]["masks"])
    ema = checkpoint.get("ema_state_dict")
    if name == "RTMDet-tiny":
        hooks = [h["type"] for h in mm_stock.load_config(run.config).custom_hooks]
        assert hooks == ["EMAHook", "PipelineSwitchHook", "LosslessPruningHook"]  # the stock hooks kept
        assert ema is not None
        assert "bbox_head.cls_convs.0.0.conv" in masks  # shared between levels: pruned once for all
    for state in (checkpoint["state_dict"], ema or {}):  # the EMA copy holds the masks too
        prefix = "module." if state is ema else ""
        for layer, keep in masks.items():
            weight = state.get(f"{prefix}{layer}.weight")
            if weight is not None and not bool(keep.all()):
                assert not weight[~keep].any(), f"{layer}: masked filters must be zero"


def test_detr_like_detectors_are_refused_by_name():
    require("mmdet")
    from lrp_plugin.adapters.base import find_adapter
    from lrp_plugin.adapters.mmdet_detector import build_detector

    model = build_detector("detr/detr_r18_8xb2-500e_coco.py")
    with pytest.raises(lrp.UnknownModelError, match="DETR-like"):
        find_adapter(model)
