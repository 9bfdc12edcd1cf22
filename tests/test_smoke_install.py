"""One smoke test per ecosystem: the installed stack is real, not just importable.

Random weights only (no downloads). Under ``CI=true`` a missing extra fails these tests
instead of skipping them (see ``tests/_extras.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _extras import require
from torch import nn


def _stock_config(tmp_path: Path, scope: str, package: str, relpath: str):
    """Load a config shipped in an OpenMMLab wheel (``<pkg>/.mim/configs``) the way our
    configs/ use it: a file inheriting ``<scope>::<relpath>`` (needs pkg_resources)."""
    mmengine = require("mmengine")
    shipped = Path(require(package).__file__).parent / ".mim" / "configs" / relpath
    assert shipped.is_file(), f"{package} does not ship {relpath} (looked in {shipped})"
    child = tmp_path / "inherits_stock.py"
    child.write_text(f"_base_ = ['{scope}::{relpath}']\n")
    return mmengine.Config.fromfile(child)


def test_mmcv_ops_nms_runs_on_cpu():
    ops = require("mmcv.ops")
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],
                          [1.0, 1.0, 11.0, 11.0],
                          [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert dets.shape == (2, 5)
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7]))


@pytest.mark.slow
def test_mmdet_yolov3_builds_and_predicts(tmp_path):
    require("mmcv.ops")
    require("mmdet")
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    cfg = _stock_config(tmp_path, "mmdet", "mmdet", "yolo/yolov3_d53_8xb8-ms-416-273e_coco.py")
    cfg.model.bbox_head.num_classes = 20
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmdet"):
        model = MODELS.build(cfg.model).eval()
    assert type(model.backbone).__name__ == "Darknet"
    assert model.bbox_head.num_classes == 20

    x = torch.randn(1, 3, 416, 416)
    with torch.no_grad():
        (pred_maps,) = model(x, mode="tensor")  # one tuple of maps per scale
        assert [tuple(p.shape) for p in pred_maps] == [
            (1, 3 * (5 + 20), 13, 13), (1, 3 * (5 + 20), 26, 26), (1, 3 * (5 + 20), 52, 52)]

        sample = DetDataSample(metainfo=dict(
            img_shape=(416, 416), ori_shape=(416, 416), pad_shape=(416, 416),
            batch_input_shape=(416, 416), scale_factor=(1.0, 1.0)))
        (result,) = model(x, [sample], mode="predict")
    inst = result.pred_instances
    assert inst.bboxes.ndim == 2 and inst.bboxes.shape[1] == 4
    assert len(inst.bboxes) == len(inst.scores) == len(inst.labels)
    if len(inst.labels):
        assert 0 <= int(inst.labels.min()) and int(inst.labels.max()) < 20


@pytest.mark.slow
def test_mmseg_fcn_r101_builds_and_runs(tmp_path):
    require("mmcv.ops")
    require("mmseg")
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    cfg = _stock_config(tmp_path, "mmseg", "mmseg",
                        "fcn/fcn_r101-d8_4xb2-40k_cityscapes-512x1024.py")
    bn = dict(type="BN", requires_grad=True)  # SyncBN needs a process group; BN does not
    cfg.norm_cfg = bn
    for part in ("backbone", "decode_head", "auxiliary_head"):
        cfg.model[part].norm_cfg = bn
    cfg.model.data_preprocessor.size = (64, 128)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmseg"):
        model = MODELS.build(cfg.model).eval()
    assert cfg.model.backbone.depth == 101
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())

    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        logits = model(x, mode="tensor")
    assert tuple(logits.shape) == (1, 19, 8, 16)  # 19 Cityscapes classes, output stride 8
    assert torch.isfinite(logits).all()


def test_nni_l1norm_pruner_masks_timm_resnet18():
    timm = require("timm")
    require("nni")
    from nni.compression.pruning import L1NormPruner

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    pruner = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    assert len(masks) == n_convs
    for name, mask in masks.items():
        w = mask["weight"]
        kept = w.flatten(1).any(dim=1)  # output channels kept
        assert w.flatten(1).all(dim=1).eq(kept).all(), f"{name}: mask is not per-channel"
        assert kept.float().mean().item() == pytest.approx(0.5), name


def test_torch_pruning_dependency_graph_timm_resnet50():
    timm = require("timm")
    import torch_pruning as tp

    model = timm.create_model("resnet50", pretrained=False).eval()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
    groups = list(dg.get_all_groups(root_module_types=[nn.Conv2d]))
    assert groups
    # a residual stage couples the outputs of several convs into one group
    biggest = max(groups, key=lambda g: sum(isinstance(dep.target.module, nn.Conv2d)
                                            for dep, _ in g))
    coupled = {dep.target.module for dep, _ in biggest if isinstance(dep.target.module, nn.Conv2d)}
    assert len(coupled) >= 4


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    require("onnx")
    require("onnxscript")  # torch's default (torch.export-based) ONNX exporter needs it
    ort = require("onnxruntime")

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    x = torch.randn(1, 3, 16, 16)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=1e-4, atol=1e-5)
