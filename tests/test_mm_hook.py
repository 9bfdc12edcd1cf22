"""LosslessPruningHook and LRPPruned through MMEngine's Runner (the tools/train.py / tools/test.py path).

A tiny COCO-format dataset (4 random 128x128 images with boxes) is written by the test; the
stock YOLOv3-D53 config is inherited with a 2-class head and a few iterations. Checked: masks
hold through training, go into checkpoints and come back on resume, the pruned checkpoint
and its test config are written, and Runner.test() + predict load it with strict shapes and
compute what the masked model computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _extras import require

require("mmengine")
require("mmcv.ops")
require("mmdet")

import lrp_plugin as lrp  # noqa: E402

pytestmark = pytest.mark.slow
SIZE = 128
CLASSES = ("cat", "dog")
REPO = Path(__file__).resolve().parents[1]


def _write_coco(root: Path, n: int = 4) -> None:
    import cv2

    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        cv2.imwrite(str(root / "imgs" / f"{i}.png"), rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
        images.append(dict(id=i, file_name=f"{i}.png", width=SIZE, height=SIZE))
        for j in range(2):
            x, y = (int(v) for v in rng.integers(0, SIZE // 2, 2))
            w, h = (int(v) for v in rng.integers(16, SIZE // 2, 2))
            annotations.append(dict(id=2 * i + j, image_id=i, category_id=j + 1, bbox=[x, y, w, h], area=w * h,
                                    iscrowd=0))
    categories = [dict(id=k + 1, name=c) for k, c in enumerate(CLASSES)]
    (root / "ann.json").write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))


def _config(tmp_path: Path, **hook):
    from mmengine.config import Config

    data = tmp_path / "data"
    if not data.exists():
        _write_coco(data)
    child = tmp_path / "cfg.py"
    child.write_text("_base_ = ['mmdet::yolo/yolov3_d53_8xb8-ms-416-273e_coco.py']\n"  # as in configs/mmdet
                     "custom_imports = dict(imports=['lrp_plugin.integrations.mmengine_hook'], "
                     "allow_failed_imports=False)\n")
    cfg = Config.fromfile(child)
    cfg.model.bbox_head.num_classes = len(CLASSES)
    cfg.model.backbone.init_cfg = None  # the stock config downloads ImageNet weights; random init here
    dataset = dict(type="CocoDataset", data_root=str(data), ann_file="ann.json", data_prefix=dict(img="imgs/"),
                   metainfo=dict(classes=CLASSES), filter_cfg=dict(filter_empty_gt=False), backend_args=None)
    train_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
                      dict(type="Resize", scale=(SIZE, SIZE), keep_ratio=True), dict(type="PackDetInputs")]
    test_pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(SIZE, SIZE), keep_ratio=True),
                     dict(type="LoadAnnotations", with_bbox=True),
                     dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                           "scale_factor"))]
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                  sampler=dict(type="DefaultSampler", shuffle=False))
    cfg.train_dataloader = dict(loader, batch_sampler=None, dataset=dict(dataset, pipeline=train_pipeline))
    cfg.test_dataloader = dict(loader, dataset=dict(dataset, pipeline=test_pipeline, test_mode=True))
    cfg.test_evaluator = dict(type="CocoMetric", ann_file=str(data / "ann.json"), metric="bbox")
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=2, val_interval=1000)
    cfg.optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=1e-4, momentum=0.9,
                                                                 weight_decay=5e-4))
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.log_processor = dict(by_epoch=False)
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=64)
    cfg.custom_hooks = [dict(type="LosslessPruningHook", **{"criterion": "l1", "ratio": 0.5, "input_size": 64,
                                                           **hook})]
    cfg.work_dir = str(tmp_path / "work")
    cfg.randomness = dict(seed=0)
    return cfg


def _hook(runner):
    from lrp_plugin.integrations.mmengine_hook import LosslessPruningHook

    return next(h for h in runner.hooks if isinstance(h, LosslessPruningHook))


def _tensor_out(model, x):
    with torch.no_grad():
        return lrp.core.graph.flatten_tensors(model.eval()._forward(x))


def _max_rel(a, b) -> float:
    return max(((p - q).abs().max() / p.abs().max().clamp_min(1e-12)).item() for p, q in zip(a, b))


def test_train_hook_prune_finetune_reconstruct_then_test_strict(tmp_path):
    from mmengine.runner import Runner

    cfg = _config(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = _hook(runner)
    model = runner.model
    assert hook.masks is not None and len(hook.masks) > 0
    assert lrp.masks_hold(model), "masks must be exactly zero after training iterations"
    assert "bbox_head.convs_pred.0" not in hook.masks

    work = Path(cfg.work_dir)
    ckpt = torch.load(work / "iter_2.pth", map_location="cpu", weights_only=True)  # allow-listed, not unsafe
    saved = lrp.ChannelMasks.from_state_dict(ckpt["meta"]["lrp"]["masks"])
    assert saved.keys() == hook.masks.keys() and all(torch.equal(saved[k], hook.masks[k]) for k in saved)
    pruned_path = work / "pruned.pth"
    assert pruned_path.is_file() and (work / "pruned.pth.spec.json").is_file() and (work / "pruned.py").is_file()
    assert hook.report.lossless and hook.report.params_after < hook.report.params_before
    print(f"\nhook report: params {hook.report.params_before:,} -> {hook.report.params_after:,}, "
          f"max rel {hook.report.max_rel_error:.3g}")

    # tools/test.py path: the written config (model = LRPPruned) + the pruned checkpoint
    from mmengine.config import Config

    test_cfg = Config.fromfile(work / "pruned.py")
    assert test_cfg.model.type == "LRPPruned"
    test_cfg.work_dir = str(tmp_path / "test")
    test_cfg.load_from = str(pruned_path)
    tester = Runner.from_cfg(test_cfg)
    metrics = tester.test()
    assert isinstance(metrics, dict)  # random weights: CocoMetric may find no detection to score
    pruned = tester.model
    state = torch.load(pruned_path, map_location="cpu", weights_only=True)["state_dict"]
    own = pruned.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in state), "weights must come from the pruned checkpoint"
    assert sum(p.numel() for p in pruned.parameters()) == hook.report.params_after

    x = torch.randn(1, 3, SIZE, SIZE)
    assert _max_rel(_tensor_out(model, x), _tensor_out(pruned, x)) < 1e-5
    from mmdet.structures import DetDataSample

    sample = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), scale_factor=(1.0, 1.0)))
    with torch.no_grad():
        (a,) = model.eval()(x, [sample], mode="predict")
        (b,) = pruned(x, [sample.clone()], mode="predict")
    torch.testing.assert_close(a.pred_instances.scores, b.pred_instances.scores, rtol=1e-5, atol=1e-6)

    # strict: the unpruned training checkpoint does not load into the pruned model
    with pytest.raises(lrp.SpecMismatchError, match="pruned"):
        tester.load_checkpoint(str(work / "iter_2.pth"))

    # a spec that does not match the base model (3 classes instead of 2): error naming the fix
    from lrp_plugin.integrations.mmengine_hook import build_pruned_model

    wrong = test_cfg.model.to_dict()
    wrong.pop("type")
    wrong["bbox_head"]["num_classes"] = 3
    with pytest.raises(lrp.SpecMismatchError, match="Build the base model exactly"):
        build_pruned_model(**wrong)

    # inference API: init_detector + inference_detector on the written config and checkpoint
    from mmdet.apis import inference_detector, init_detector

    detector = init_detector(str(work / "pruned.py"), str(pruned_path), device="cpu")
    assert sum(p.numel() for p in detector.parameters()) == hook.report.params_after
    assert tuple(detector.dataset_meta["classes"]) == CLASSES
    result = inference_detector(detector, str(tmp_path / "data" / "imgs" / "0.png"))
    assert result.pred_instances.bboxes.shape[-1] == 4

    # resume: the masks come back from the checkpoint, not recomputed
    resume_cfg = _config(tmp_path, criterion="gm")
    resume_cfg.train_cfg.max_iters = 3
    resume_cfg.resume, resume_cfg.load_from = True, str(work / "iter_2.pth")
    resumed = Runner.from_cfg(resume_cfg)
    resumed.train()
    back = _hook(resumed).masks
    assert all(torch.equal(back[k], hook.masks[k]) for k in hook.masks)
    assert lrp.masks_hold(resumed.model)


def test_train_hook_reconstruct_then_finetune(tmp_path):
    from mmengine.runner import Runner

    cfg = _config(tmp_path, order="reconstruct_then_finetune", ratio=0.9, criterion="l2")
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = _hook(runner)
    model = runner.model
    assert hook.spec is not None and hook.report.lossless
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == hook.report.params_after < hook.report.params_before
    opt_params = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in model.parameters()}, "the optimizer trains the pruned parameters"
    ckpt = torch.load(Path(cfg.work_dir) / "iter_2.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["lrp"]["spec_json"]
    pruned = torch.load(Path(cfg.work_dir) / "pruned.pth", map_location="cpu", weights_only=True)
    assert all(torch.equal(v, model.state_dict()[k].cpu()) for k, v in pruned["state_dict"].items())


# -- bad input ---------------------------------------------------------------------------
def test_model_without_adapter_is_refused(tmp_path):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from lrp_plugin.integrations.mmengine_hook import LosslessPruningHook

    class NoAdapter(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, inputs, data_samples=None, mode="tensor"):
            return self.conv(inputs)

    runner = Runner(model=NoAdapter(), work_dir=str(tmp_path))
    with pytest.raises(lrp.UnknownModelError, match="register_adapter"):
        LosslessPruningHook().before_train(runner)


def test_bad_hook_arguments_are_refused():
    from lrp_plugin.integrations.mmengine_hook import LosslessPruningHook

    with pytest.raises(lrp.InvalidRatioError, match="fraction of channels"):
        LosslessPruningHook(ratio=1.0)
    with pytest.raises(lrp.InvalidArgumentError, match="reconstruct_then_finetune"):
        LosslessPruningHook(order="whenever")


def test_import_lrp_plugin_does_not_import_openmmlab():
    import subprocess
    import sys

    code = ("import sys, lrp_plugin, lrp_plugin.adapters, lrp_plugin.integrations; "
            "bad = [m for m in ('mmdet', 'mmseg', 'mmengine', 'mmcv') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_shipped_configs_load_with_paper_schedules():
    from mmengine.config import Config

    det = sorted((REPO / "lrp_plugin" / "configs" / "mmdet").glob("yolov3_d53_cr*_voc*.py"))
    seg = sorted((REPO / "lrp_plugin" / "configs" / "mmseg").glob("fcn_r101-d8_cr03_*.py"))
    want = {(c, r) for c in ("l1", "l2", "gm") for r in (0.5, 0.9)}
    found = set()
    for path in det:
        cfg = Config.fromfile(path)
        (hook,) = cfg.custom_hooks
        assert hook["type"] == "LosslessPruningHook"
        found.add((hook["criterion"], hook["ratio"]))
        assert cfg.model.bbox_head.num_classes == 20 and cfg.train_dataloader.batch_size == 16
        assert cfg.train_cfg.max_epochs == 100
        opt = cfg.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", 1e-4, 0.9, 5e-4)
        assert cfg.param_scheduler == [dict(type="CosineAnnealingLR", T_max=100, eta_min=1e-5, by_epoch=True,
                                            begin=0, end=100)]
    assert want <= found
    assert {Config.fromfile(p).custom_hooks[0]["criterion"] for p in seg} == {"l1", "l2", "gm"}
    for path in seg:
        cfg = Config.fromfile(path)
        assert cfg.custom_hooks[0]["ratio"] == 0.3 and cfg.model.backbone.depth == 101
        assert cfg.train_cfg.max_epochs == 50 and cfg.train_dataloader.batch_size == 16
        opt = cfg.optim_wrapper.optimizer
        assert (opt.lr, opt.momentum, opt.weight_decay) == (1e-3, 0.9, 1e-4)
        assert cfg.param_scheduler[0]["milestones"] == [25, 40] and cfg.param_scheduler[0]["gamma"] == 0.2


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
    from lrp_plugin.integrations.mmengine_hook import build_pruned_model, write_pruned_checkpoint
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


def test_masks_hold_with_frozen_stages_and_norm_eval():
    """mmdet backbones freeze stages with requires_grad=False and keep BN in eval (norm_eval)."""
    from mmengine.config import Config

    from lrp_plugin.adapters.base import find_adapter
    from lrp_plugin.adapters.mmdet_yolo import YOLOV3_D53_CONFIG, build_yolov3
    from lrp_plugin.adapters.openmmlab import stock_config_path
    from lrp_plugin.integrations.mmengine_hook import compute_masks, reconstruct

    cfg = Config.fromfile(stock_config_path("mmdet", YOLOV3_D53_CONFIG))
    cfg.model.backbone.update(frozen_stages=1, norm_eval=True, init_cfg=None)
    torch.manual_seed(0)
    model = build_yolov3(cfg, num_classes=2).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not model.backbone.conv1.bn.training
    x = torch.randn(1, 3, 64, 64)
    adapter = find_adapter(model)
    masks = compute_masks(model, adapter, x, criterion="l1", ratio=0.5)
    assert "backbone.conv1.conv" in masks  # frozen layers are pruned too (they are zeroed, not trained)
    lrp.apply_masks(model, masks)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                          weight_decay=5e-4)
    for _ in range(2):
        opt.zero_grad()
        sum(o.square().mean() for o in lrp.core.graph.flatten_tensors(adapter.forward_fn(model, x))).backward()
        opt.step()
    assert lrp.masks_hold(model)
    result = reconstruct(model, adapter, x)
    assert result.report.lossless
    assert {n for n, p in result.model.named_parameters() if not p.requires_grad} == frozen
    assert not result.model.train().backbone.conv1.bn.training  # norm_eval survives the rebuild


def test_mmseg_fcn_runner_train_then_test_strict(tmp_path):
    """mmseg through the Runner: FCN-R50 (stock SyncBN config, BN for one process), tiny masks dataset."""
    require("mmseg")
    import cv2
    from mmengine.config import Config
    from mmengine.runner import Runner

    rng = np.random.default_rng(0)
    data = tmp_path / "seg"
    for sub in ("img", "ann"):
        (data / sub).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(data / "img" / f"{i}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(data / "ann" / f"{i}.png"), rng.integers(0, 3, (64, 64), dtype=np.uint8))
    child = tmp_path / "fcn.py"
    child.write_text("_base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-40k_voc12aug-512x512.py']\n"
                     "custom_imports = dict(imports=['lrp_plugin.integrations.mmengine_hook'], "
                     "allow_failed_imports=False)\n"
                     "norm_cfg = dict(type='BN', requires_grad=True)\n"
                     "model = dict(pretrained=None, data_preprocessor=dict(size=(64, 64)), "
                     "backbone=dict(norm_cfg=norm_cfg), decode_head=dict(norm_cfg=norm_cfg, num_classes=3), "
                     "auxiliary_head=dict(norm_cfg=norm_cfg, num_classes=3))\n")
    cfg = Config.fromfile(child)
    dataset = dict(type="BaseSegDataset", data_root=str(data), data_prefix=dict(img_path="img", seg_map_path="ann"),
                   img_suffix=".png", seg_map_suffix=".png", metainfo=dict(classes=("a", "b", "c")))
    pipe = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False, sampler=dict(type="DefaultSampler",
                                                                                      shuffle=False))
    cfg.train_dataloader = dict(loader, dataset=dict(dataset, pipeline=pipe))
    cfg.test_dataloader = dict(loader, dataset=dict(dataset, pipeline=pipe))
    cfg.test_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=2, val_interval=1000)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=2, by_epoch=False)
    cfg.custom_hooks = [dict(type="LosslessPruningHook", criterion="gm", ratio=0.3, input_size=64)]
    cfg.work_dir = str(tmp_path / "work")
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = _hook(runner)
    assert lrp.masks_hold(runner.model) and hook.report.lossless
    assert "decode_head.conv_seg" not in hook.masks and "auxiliary_head.conv_seg" not in hook.masks
    assert "auxiliary_head.convs.0.conv" in hook.masks

    test_cfg = Config.fromfile(Path(cfg.work_dir) / "pruned.py")
    test_cfg.work_dir = str(tmp_path / "test")
    tester = Runner.from_cfg(test_cfg)
    metrics = tester.test()
    assert "mIoU" in metrics
    assert sum(p.numel() for p in tester.model.parameters()) == hook.report.params_after
    x = torch.randn(1, 3, 64, 64)
    from lrp_plugin.adapters.mmseg_fcn import forward_tensors

    with torch.no_grad():
        a = forward_tensors(runner.model.eval(), x)
        b = forward_tensors(tester.model.eval(), x)
    assert _max_rel(a, b) < 1e-5
