"""Stock OpenMMLab tools on synthetic data, as a user runs them: ``tools/train.py`` with
LosslessPruningHook (a few iterations, random weights) -> the pruned checkpoint and config ->
``tools/test.py`` on them, and (for the benchmark) ``get_flops.py``.

Shared by tests/test_mm_stock_tools.py (two detectors, one segmentor) and
benchmarks/openmmlab_models.py (every acceptance model, printed as a table). Each tool runs in its
own process from the installed mmdet/mmseg wheel (``<pkg>/.mim/tools``), like ``mim train``.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mm_runner import CLASSES, short_schedule, write_coco

REPO = Path(__file__).resolve().parents[1]
DET_SIZE, SEG_SIZE = 128, 64  # DET_SIZE: the images mm_runner.write_coco writes

# name: (scope, stock config); the stock configs are read from the installed mmdet/mmseg wheels
MODELS = {
    "RTMDet-tiny": ("mmdet", "rtmdet/rtmdet_tiny_8xb32-300e_coco.py"),
    "YOLOX-tiny": ("mmdet", "yolox/yolox_tiny_8xb8-300e_coco.py"),
    "RetinaNet-R18": ("mmdet", "retinanet/retinanet_r18_fpn_1x_coco.py"),
    "Faster R-CNN-R50": ("mmdet", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"),
    "SSDLite-MobileNetV2": ("mmdet", "ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py"),
    "YOLOv3-MobileNetV2": ("mmdet", "yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py"),
    "PSPNet-R18": ("mmseg", "pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py"),
    "DeepLabV3+-R18": ("mmseg", "deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py"),
    "UNet-S5-D16": ("mmseg", "unet/unet-s5-d16_fcn_4xb4-160k_cityscapes-512x1024.py"),
}


def tool(scope: str, name: str) -> Path:
    """A stock tool shipped in the wheel, e.g. ``tool('mmdet', 'train.py')``."""
    import importlib

    return Path(importlib.import_module(scope).__file__).parent / ".mim" / "tools" / name


def run_tool(scope: str, name: str, *args: str, cwd: Path, timeout: int = 900) -> str:
    """Run a stock tool in a fresh process (lrp_plugin importable from this checkout); its output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(tool(scope, name)), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{scope} {name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def write_seg(root: Path, n: int = 2, size: int = SEG_SIZE) -> None:
    import cv2

    rng = np.random.default_rng(0)
    for sub in ("img", "ann"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "img" / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "ann" / f"{i}.png"), rng.integers(0, len(CLASSES), (size, size), dtype=np.uint8))


def write_config(name: str, work: Path, **hook) -> Path:
    """``work/<model>.py``: the stock config on synthetic data in ``work/data`` with our hook added."""
    from mmengine.config import Config

    from lrp_plugin.adapters.mmdet_detector import set_num_classes

    scope, stock = MODELS[name]
    data = work / "data"
    child = work / "child.py"
    work.mkdir(parents=True, exist_ok=True)
    child.write_text(f"_base_ = ['{scope}::{stock}']\ncustom_imports = dict(imports=['lrp_plugin.integrations."
                     "mmengine'], allow_failed_imports=False)\n")
    cfg = Config.fromfile(child)
    cfg.model.backbone.init_cfg = None  # stock configs download ImageNet weights: random init here
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False, batch_sampler=None,
                  sampler=dict(type="DefaultSampler", shuffle=False))
    if scope == "mmdet":
        if not data.exists():
            write_coco(data)
        set_num_classes(cfg.model, len(CLASSES))
        cfg.model.data_preprocessor.batch_augments = None  # YOLOX's random 480-800 px resizes: slow on a CPU
        dataset = dict(type="CocoDataset", data_root=str(data), ann_file="ann.json", data_prefix=dict(img="imgs/"),
                       metainfo=dict(classes=CLASSES), filter_cfg=dict(filter_empty_gt=False), backend_args=None)
        resize = dict(type="Resize", scale=(DET_SIZE, DET_SIZE), keep_ratio=True)
        train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True), resize,
                 dict(type="PackDetInputs")]
        test = [dict(type="LoadImageFromFile"), resize, dict(type="LoadAnnotations", with_bbox=True),
                dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"))]
        cfg.test_evaluator = dict(type="CocoMetric", ann_file=str(data / "ann.json"), metric="bbox")
        hook.setdefault("input_size", DET_SIZE)
    else:
        if not data.exists():
            write_seg(data)
        for key in ("decode_head", "auxiliary_head"):
            heads = cfg.model.get(key)
            for head in heads if isinstance(heads, list) else [heads] if heads else []:
                head.num_classes = len(CLASSES)
        cfg.model.pretrained = None
        cfg.model.data_preprocessor.size = (SEG_SIZE, SEG_SIZE)
        cfg.model.test_cfg = dict(mode="whole")  # UNet's stock sliding window is 512x1024
        dataset = dict(type="BaseSegDataset", data_root=str(data), data_prefix=dict(img_path="img", seg_map_path="ann"),
                       img_suffix=".png", seg_map_suffix=".png", metainfo=dict(classes=CLASSES))
        train = test = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
        cfg.test_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
        hook.setdefault("input_size", SEG_SIZE)
    train_set = dict(dataset, pipeline=train)
    if cfg.train_dataloader.dataset.get("type") == "MultiImageMixDataset":  # YOLOX: its mode-switch hook needs it
        train_set = dict(type="MultiImageMixDataset", dataset=dict(dataset, pipeline=train[:2]), pipeline=train[2:])
    cfg.train_dataloader = dict(loader, dataset=train_set)
    cfg.test_dataloader = dict(loader, dataset=dict(dataset, pipeline=test, test_mode=True))
    short_schedule(cfg, dict(dict(criterion="l1", ratio=0.5), **hook))
    cfg.pop("work_dir", None)
    path = work / f"{re.sub(r'[^A-Za-z0-9]+', '_', name).lower()}.py"
    cfg.dump(str(path))
    return path


@dataclass
class StockRun:
    name: str
    work: Path
    config: Path  # the training config (the masked model)
    masked: Path  # the last training checkpoint (EMA weights where the config has an EMAHook)
    pruned_config: Path
    pruned: Path
    report: dict
    test_log: str  # tools/test.py on the pruned config and checkpoint
    test_error: str | None = None  # its last error line, where it failed


def train_and_test(name: str, work: Path, **hook) -> StockRun:
    """tools/train.py with the hook, then tools/test.py on the pruned config + checkpoint it wrote."""
    scope = MODELS[name][0]
    config = write_config(name, work, **hook)
    out = work / "train"
    run_tool(scope, "train.py", str(config), "--work-dir", str(out), cwd=work)
    pruned, pruned_config = out / "pruned.pth", out / "pruned.py"
    report = torch.load(pruned, map_location="cpu", weights_only=True)["meta"]["lrp_report"]
    args = ["--out", str(work / "pruned.pkl")] if scope == "mmdet" else []
    try:
        log, error = run_tool(scope, "test.py", str(pruned_config), str(pruned), "--work-dir", str(work / "test"),
                              *args, cwd=work), None
    except RuntimeError as exc:  # the benchmark reports it (and whether the stock model fails the same way)
        log, error = str(exc), last_error(str(exc))
    return StockRun(name, work, config, out / "iter_2.pth", pruned_config, pruned, report, log, error)


def last_error(text: str) -> str:
    """The exception line of a traceback."""
    lines = [line for line in text.strip().splitlines() if re.match(r"^\w*(Error|Exception)\b", line)]
    return (lines or text.strip().splitlines() or [""])[-1][:200]


def masked_predictions(run: StockRun) -> Path:
    """tools/test.py on the training config and its last checkpoint (mmdet: predictions dumped)."""
    out = run.work / "masked.pkl"
    run_tool("mmdet", "test.py", str(run.config), str(run.masked), "--work-dir", str(run.work / "test_masked"),
             "--out", str(out), cwd=run.work)
    return out


def same_predictions(a: Path, b: Path, rtol: float = 1e-4) -> bool:
    """Two tools/test.py --out dumps hold the same boxes and scores, image by image."""
    left, right = (pickle.loads(p.read_bytes()) for p in (a, b))
    for x, y in zip(left, right, strict=True):
        p, q = x["pred_instances"], y["pred_instances"]
        if p["scores"].shape != q["scores"].shape:
            return False
        if not (torch.allclose(p["scores"], q["scores"], rtol=rtol, atol=1e-6)
                and torch.allclose(p["bboxes"], q["bboxes"], rtol=rtol, atol=1e-3)):
            return False
    return True


def raw_outputs_max_rel(run: StockRun, size: int | None = None) -> float:
    """Largest relative difference between the masked and the pruned model's raw head outputs,
    both built from their configs and checkpoints as the inference APIs build them."""
    from lrp_plugin.adapters.base import find_adapter
    from lrp_plugin.core.graph import flatten_tensors
    from lrp_plugin.integrations.mmengine import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()  # training checkpoints hold MMEngine's message hub
    scope = MODELS[run.name][0]
    if scope == "mmdet":
        from mmdet.apis import init_detector as init
    else:
        from mmseg.apis import init_model as init
    masked = init(str(run.config), str(run.masked), device="cpu")
    pruned = init(str(run.pruned_config), str(run.pruned), device="cpu")
    adapter = find_adapter(masked)
    torch.manual_seed(0)
    size = size or (DET_SIZE if scope == "mmdet" else SEG_SIZE)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        a = flatten_tensors(adapter.forward_fn(masked.eval(), x))
        b = flatten_tensors(adapter.forward_fn(pruned.eval(), x))
    assert len(a) == len(b)
    return max(((p - q).abs().max() / p.abs().max().clamp_min(1e-12)).item() for p, q in zip(a, b))


def get_flops(scope: str, config: Path, work: Path) -> str | None:
    """The stock get_flops.py's 'Flops: ...' figure for ``config`` (an error line where it does not run).

    mmdet's get_flops reads images from ``val_dataloader``: a copy of the config gets the test one.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    cfg.val_dataloader, cfg.val_evaluator, cfg.val_cfg = cfg.test_dataloader, cfg.test_evaluator, dict(type="ValLoop")
    flops_config = work / f"flops_{config.stem}.py"
    cfg.dump(str(flops_config))
    sizes = ["--shape", str(SEG_SIZE), str(SEG_SIZE)] if scope == "mmseg" else ["--num-images", "2"]
    args = [str(flops_config), *sizes]
    try:
        out = run_tool(scope, "analysis_tools/get_flops.py", *args, cwd=work)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"error: {last_error(str(exc))[:120]}"
    match = re.search(r"Flops:\s*([^\n]+)", out)
    return match.group(1).strip() if match else None


def load_config(path: Path):
    from mmengine.config import Config

    return Config.fromfile(str(path))
