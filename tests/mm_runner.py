"""Shared by the tests/test_mm_*.py modules: a tiny COCO-format dataset (random 128x128 images
with boxes) written by the test, and the stock YOLOv3-D53 config inherited with a 2-class head,
a few iterations and LosslessPruningHook, ready for MMEngine's Runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import lrp_plugin as lrp

SIZE = 128
CLASSES = ("cat", "dog")
REPO = Path(__file__).resolve().parents[1]


def write_coco(root: Path, n: int = 4) -> None:
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


YOLOV3_D53 = "mmdet::yolo/yolov3_d53_8xb8-ms-416-273e_coco.py"
YOLOV3_MOBILENETV2 = "mmdet::yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py"


def yolo_config(tmp_path: Path, base: str = YOLOV3_D53, **hook):
    from mmengine.config import Config

    data = tmp_path / "data"
    if not data.exists():
        write_coco(data)
    child = tmp_path / "cfg.py"
    child.write_text(f"_base_ = ['{base}']\n"  # as in configs/mmdet
                     "custom_imports = dict(imports=['lrp_plugin.integrations.mmengine'], "
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
    short_schedule(cfg, {"criterion": "l1", "ratio": 0.5, "input_size": 64, **hook})
    cfg.work_dir = str(tmp_path / "work")
    return cfg


def short_schedule(cfg, hook: dict) -> None:
    """Two iterations, no validation, a plain optimizer; the config's custom_hooks kept, ours added."""
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=2, val_interval=1000)
    cfg.optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=1e-4, momentum=0.9,
                                                                 weight_decay=5e-4))
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.log_processor = dict(by_epoch=False)
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=64)
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="LosslessPruningHook", **hook)]
    cfg.randomness = dict(seed=0)


def pruning_hook(runner):
    from lrp_plugin.integrations.mmengine import LosslessPruningHook

    return next(h for h in runner.hooks if isinstance(h, LosslessPruningHook))


def tensor_out(model, x):
    with torch.no_grad():
        return lrp.core.graph.flatten_tensors(model.eval()._forward(x))


def max_rel(a, b) -> float:
    return max(((p - q).abs().max() / p.abs().max().clamp_min(1e-12)).item() for p, q in zip(a, b))
