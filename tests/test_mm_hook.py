"""LosslessPruningHook through MMEngine's Runner (the tools/train.py / tools/test.py path).

A tiny COCO-format dataset is written by the test (tests/mm_runner.py); the stock YOLOv3-D53
config is inherited with a 2-class head and a few iterations. Checked: masks hold through
training, go into checkpoints and come back on resume, the pruned checkpoint and its test
config are written, and Runner.test() + predict load it with strict shapes and compute what
the masked model computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _extras import require
from mm_runner import CLASSES, SIZE, max_rel, pruning_hook, tensor_out, yolo_config

require("mmengine")
require("mmcv.ops")
require("mmdet")

import lrp_plugin as lrp  # noqa: E402

pytestmark = pytest.mark.slow


def test_train_hook_prune_finetune_reconstruct_then_test_strict(tmp_path):
    from mmengine.runner import Runner

    cfg = yolo_config(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = pruning_hook(runner)
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
    assert max_rel(tensor_out(model, x), tensor_out(pruned, x)) < 1e-5
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
    from lrp_plugin.integrations.mmengine import build_pruned_model

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
    resume_cfg = yolo_config(tmp_path, criterion="gm")
    resume_cfg.train_cfg.max_iters = 3
    resume_cfg.resume, resume_cfg.load_from = True, str(work / "iter_2.pth")
    resumed = Runner.from_cfg(resume_cfg)
    resumed.train()
    back = pruning_hook(resumed).masks
    assert all(torch.equal(back[k], hook.masks[k]) for k in hook.masks)
    assert lrp.masks_hold(resumed.model)


def test_train_hook_reconstruct_then_finetune(tmp_path):
    from mmengine.runner import Runner

    cfg = yolo_config(tmp_path, order="reconstruct_then_finetune", ratio=0.9, criterion="l2")
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = pruning_hook(runner)
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

    # tools/test.py CONFIG iter_2.pth (test mode): the optimizer is still a config, nothing to remap
    test_cfg = yolo_config(tmp_path, order="reconstruct_then_finetune", ratio=0.9, criterion="l2")
    test_cfg.work_dir, test_cfg.load_from = str(tmp_path / "test"), str(Path(cfg.work_dir) / "iter_2.pth")
    tester = Runner.from_cfg(test_cfg)
    assert isinstance(tester.test(), dict)
    saved = torch.load(Path(cfg.work_dir) / "iter_2.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in tester.model.state_dict().items()), "the checkpoint's weights"
    assert sum(p.numel() for p in tester.model.parameters()) == n_params
    assert pruning_hook(tester).report.params_after == hook.report.params_after  # report kept in the checkpoint

    # --resume after the rebuild: the report of that rebuild comes back and goes into pruned.pth
    resume_cfg = yolo_config(tmp_path, order="reconstruct_then_finetune", ratio=0.9, criterion="l2")
    resume_cfg.train_cfg.max_iters = 3
    resume_cfg.resume, resume_cfg.load_from = True, str(Path(cfg.work_dir) / "iter_2.pth")
    resumed = Runner.from_cfg(resume_cfg)
    resumed.train()
    report = pruning_hook(resumed).report
    assert report is not None and report.to_dict() == hook.report.to_dict()
    meta = torch.load(Path(cfg.work_dir) / "pruned.pth", map_location="cpu", weights_only=True)["meta"]
    assert meta["lrp_report"]["params_after"] == hook.report.params_after and meta["lrp_report"]["lossless"]


def test_old_module_path_registers_the_same_hook():
    from mmengine.registry import HOOKS, MODELS

    from lrp_plugin.integrations import mmengine, mmengine_hook

    assert mmengine_hook.LosslessPruningHook is mmengine.LosslessPruningHook is HOOKS.get("LosslessPruningHook")
    assert MODELS.get("LRPPruned") is mmengine.build_pruned_model is mmengine_hook.build_pruned_model


# -- bad input ---------------------------------------------------------------------------
def test_model_without_adapter_is_refused(tmp_path):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from lrp_plugin.integrations.mmengine import LosslessPruningHook

    class NoAdapter(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, inputs, data_samples=None, mode="tensor"):
            return self.conv(inputs)

    runner = Runner(model=NoAdapter(), work_dir=str(tmp_path))
    with pytest.raises(lrp.UnknownModelError, match="register_adapter"):
        LosslessPruningHook().before_train(runner)


def test_after_train_before_before_train_is_a_call_order_error(tmp_path):
    from mmengine.runner import Runner

    from lrp_plugin.integrations.mmengine import LosslessPruningHook

    runner = Runner(model=torch.nn.Conv2d(3, 4, 3), work_dir=str(tmp_path))
    with pytest.raises(lrp.CallOrderError, match="before_train"):
        LosslessPruningHook().after_train(runner)
    assert not list(tmp_path.glob("pruned*")), "nothing written"


def test_bad_hook_arguments_are_refused():
    from lrp_plugin.integrations.mmengine import LosslessPruningHook

    with pytest.raises(lrp.InvalidRatioError, match="fraction of channels"):
        LosslessPruningHook(ratio=1.0)
    with pytest.raises(lrp.InvalidArgumentError, match="reconstruct_then_finetune"):
        LosslessPruningHook(order="whenever")


def test_masks_hold_with_frozen_stages_and_norm_eval():
    """mmdet backbones freeze stages with requires_grad=False and keep BN in eval (norm_eval)."""
    from mmengine.config import Config

    from lrp_plugin.adapters.base import find_adapter
    from lrp_plugin.adapters.mmdet_yolo import YOLOV3_D53_CONFIG, build_yolov3
    from lrp_plugin.adapters.openmmlab import stock_config_path

    cfg = Config.fromfile(stock_config_path("mmdet", YOLOV3_D53_CONFIG))
    cfg.model.backbone.update(frozen_stages=1, norm_eval=True, init_cfg=None)
    torch.manual_seed(0)
    model = build_yolov3(cfg, num_classes=2).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not model.backbone.conv1.bn.training
    x = torch.randn(1, 3, 64, 64)
    adapter = find_adapter(model)
    masks = lrp.compute_masks(model, x, criterion="l1", ratio=0.5, forward_fn=adapter.forward_fn)
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
    result = lrp.reconstruct(model, x, forward_fn=adapter.forward_fn)
    assert result.report.lossless
    assert {n for n, p in result.model.named_parameters() if not p.requires_grad} == frozen
    assert not result.model.train().backbone.conv1.bn.training  # norm_eval survives the rebuild


def test_mmseg_fcn_runner_train_then_test_strict(tmp_path):
    """mmseg through the Runner: FCN-R50 (stock SyncBN config, BN for one process), tiny masks dataset.
    Its config imports the old module path ``lrp_plugin.integrations.mmengine_hook`` (kept working)."""
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
    hook = pruning_hook(runner)
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
    from lrp_plugin.adapters.mmseg_segmentor import forward_tensors

    with torch.no_grad():
        a = forward_tensors(runner.model.eval(), x)
        b = forward_tensors(tester.model.eval(), x)
    assert max_rel(a, b) < 1e-5
