"""Latency of detectors as sources: the hook's pruned.py + pruned.pth (and mmdet:CONFIG as the base),
exported as the tensor-only forward, checked, timed with ONNX Runtime and ncnn, here and over SSH.

The hook's output is written with the hook's own writers (``write_pruned_checkpoint`` and
``write_pruned_config``) from a YOLOv3-D53 pruned at CR 0.5, at 128x128 to keep it to seconds.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from _extras import require

require("mmengine")
require("mmcv.ops")
require("mmdet")
require("onnxruntime")
require("ncnn")
require("pnnx")

from test_latency import SMALL, check_result, sshd  # noqa: E402,F401  (sshd: the real loopback sshd fixture)

import lrp_plugin as lrp  # noqa: E402
from lrp_plugin.latency import cli  # noqa: E402

pytestmark = pytest.mark.slow
YOLO = "yolo/yolov3_d53_8xb8-ms-416-273e_coco.py"
SIZE = ["--input-shape", "3,128,128"]


@pytest.fixture(scope="module")
def hook_output(tmp_path_factory):
    """work_dir with pruned.py + pruned.pth as LosslessPruningHook writes them, and the pruned model itself."""
    from mmengine.config import Config

    from lrp_plugin.adapters.base import find_adapter
    from lrp_plugin.adapters.openmmlab import build_in_scope, stock_config_path
    from lrp_plugin.integrations.mmengine_hook import write_pruned_checkpoint, write_pruned_config
    from lrp_plugin.testing import randomize_batchnorm

    wd = tmp_path_factory.mktemp("work_dir")
    cfg = Config.fromfile(stock_config_path("mmdet", YOLO))
    cfg.custom_imports = dict(imports=["lrp_plugin.integrations.mmengine_hook"], allow_failed_imports=False)
    torch.manual_seed(0)
    model = randomize_batchnorm(build_in_scope("mmdet", cfg.model))
    adapter = find_adapter(model)
    x = torch.randn(1, 3, 128, 128)
    masks = lrp.compute_masks(model, x, "l1", 0.5, ignored_layers=adapter.ignored_layers(model),
                              forward_fn=adapter.forward_fn)
    lrp.apply_masks(model, masks)
    pruned = lrp.reconstruct(model, x, forward_fn=adapter.forward_fn).model.eval()
    pth = write_pruned_checkpoint(pruned, wd / "pruned.pth", base_cfg=cfg.model)
    write_pruned_config(cfg, pth)
    return wd, pruned, adapter


def test_pruned_config_loads_the_hook_weights(hook_output):
    """The latency tool's pruned.py model computes what the pruned model computed (weights loaded, not random)."""
    from lrp_plugin.latency.sources import SourceRequest, load_models

    wd, pruned, adapter = hook_output
    x = torch.randn(1, 3, 128, 128)
    entries = load_models([str(wd / "pruned.py")], SourceRequest(x=x, checkpoint=str(wd / "pruned.pth"), quiet=True))
    assert [e.name for e in entries] == ["pruned-base", "pruned"]  # reference: the stock model pruned.py wraps
    with torch.no_grad():
        want = lrp.core.graph.flatten_tensors(adapter.forward_fn(pruned, x))
        got = entries[1].module(x)
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert entries[1].macs < 0.7 * entries[0].macs


def _run(args, out):
    assert cli.main([*args, "--out", str(out)]) == 0
    return json.loads((out / "latency.json").read_text())


def test_hook_output_local_ort_and_ncnn(hook_output, tmp_path):
    wd = hook_output[0]
    result = _run([str(wd / "pruned.py"), "--checkpoint", str(wd / "pruned.pth"), "--base", f"mmdet:{YOLO}",
                   "--backend", "onnxruntime", "ncnn", *SMALL, *SIZE], tmp_path)
    check_result(result, ["onnxruntime", "ncnn"], runs=5)
    assert list(result["models"]) == ["yolov3_d53_8xb8-ms-416-273e_coco", "pruned"]
    for info in result["models"].values():
        assert info["onnx_check"]["matches"] and info["ncnn_check"]["matches"]


def test_hook_output_over_ssh_ort_and_ncnn(hook_output, sshd, tmp_path):  # noqa: F811
    wd = hook_output[0]
    result = _run([str(wd / "pruned.py"), "--checkpoint", str(wd / "pruned.pth"), "--backend", "onnxruntime", "ncnn",
                   *sshd, "--remote-python", sys.executable, *SMALL, *SIZE], tmp_path)
    assert result["mode"] == "remote"
    check_result(result, ["onnxruntime", "ncnn"], runs=5)
