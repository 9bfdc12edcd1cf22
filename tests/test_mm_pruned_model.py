"""LRPPruned (pruned_model.py): the stock model shrunk to a saved spec, loaded with strict shapes."""

from __future__ import annotations

import pytest
import torch
from _extras import require

require("mmengine")
require("mmcv.ops")
require("mmdet")

import lrp_plugin as lrp  # noqa: E402

pytestmark = pytest.mark.slow


def test_fcn_pruned_checkpoint_loads_strictly_into_stock_syncbn_config(tmp_path):
    """mmseg: the pruned FCN (decode + auxiliary heads) from the stock SyncBN config, rebuilt by
    LRPPruned under the mmseg scope, loads with MMEngine's own checkpoint loader and matches."""
    require("mmseg")
    from mmengine.config import Config
    from mmengine.model.utils import _BatchNormXd
    from mmengine.registry import DefaultScope
    from mmengine.runner.checkpoint import load_checkpoint

    from lrp_plugin.adapters.base import find_adapter
    from lrp_plugin.adapters.mmseg_fcn import FCN_R50_CONFIG, build_fcn
    from lrp_plugin.adapters.openmmlab import stock_config_path
    from lrp_plugin.integrations.mmengine import build_pruned_model, write_pruned_checkpoint
    from lrp_plugin.testing import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(build_fcn(FCN_R50_CONFIG))  # SyncBN reverted to _BatchNormXd
    assert any(isinstance(m, _BatchNormXd) for m in model.modules())
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    model.backbone.norm_eval = True
    adapter = find_adapter(model)
    x = torch.randn(1, 3, 64, 64)
    lrp.apply_masks(model, lrp.compute_masks(model, x, "l2", 0.3, forward_fn=adapter.forward_fn))
    result = lrp.reconstruct(model, x, forward_fn=adapter.forward_fn)
    assert result.report.lossless and result.report.params_after < result.report.params_before
    bns = [m for m in result.model.train().backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert result.model.backbone.norm_eval and bns and not any(m.training for m in bns)  # norm_eval kept
    path = write_pruned_checkpoint(result.model, tmp_path / "pruned.pth")
    stock = Config.fromfile(stock_config_path("mmseg", FCN_R50_CONFIG)).model  # SyncBN, as shipped
    with DefaultScope.overwrite_default_scope("mmseg"):
        pruned = build_pruned_model(str(path), base=stock)
    load_checkpoint(pruned, str(path), map_location="cpu", strict=True)
    with torch.no_grad():
        a = adapter.forward_fn(model.eval(), x)
        b = adapter.forward_fn(pruned.eval(), x)
    assert len(a) == len(b) == 2
    for p, q in zip(a, b):
        assert ((p - q).abs().max() / p.abs().max()).item() < 1e-5
