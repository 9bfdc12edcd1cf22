"""A small MMEngine model, dataset and metric (root registries) with an lrp adapter, so the
hook's Runner paths (test mode, resume, several processes) run in seconds without mmdet/mmcv.

Imported by the tests and, through ``custom_imports``, by processes that torchrun starts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from mmengine.utils import import_modules_from_strings
from torch import nn
from torch.utils.data import Dataset

from lrp_plugin.adapters.base import Adapter, register_adapter

SIZE = 16
CLASSES = ("a", "b", "c")


@MODELS.register_module(force=True)
class ToyConvNet(BaseModel):
    """conv-BN-ReLU x2 with a residual add, then a 1x1 class conv averaged over space."""

    def __init__(self, width: int = 8, classes: int = len(CLASSES)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.wide = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Conv2d(2 * width, classes, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.wide(x + self.body(x))).mean((2, 3))

    def forward(self, inputs, data_samples=None, mode: str = "tensor"):
        out = self.logits(inputs)
        if mode == "loss":
            return dict(loss=nn.functional.cross_entropy(out, data_samples))
        if mode == "predict":
            return list(zip(out, data_samples))
        return out


TOY_ADAPTER = register_adapter(Adapter(
    name="tests-toy-convnet",
    matches=lambda model: isinstance(model, ToyConvNet),
    example_inputs=lambda model: torch.randn(1, 3, SIZE, SIZE),
    forward_fn=lambda model, x: model.logits(x),
))


@DATASETS.register_module(force=True)
class ToyImages(Dataset):
    """``n`` random images with random labels (fixed seed)."""

    metainfo = dict(classes=CLASSES)

    def __init__(self, n: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, SIZE, SIZE, generator=g)
        self.y = torch.randint(0, len(CLASSES), (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.x[i], data_samples=self.y[i])


@METRICS.register_module(force=True)
class ToyAccuracy(BaseMetric):
    def process(self, data_batch, data_samples) -> None:
        self.results.extend(int(out.argmax() == target) for out, target in data_samples)

    def compute_metrics(self, results: list) -> dict:
        return dict(accuracy=sum(results) / max(len(results), 1))


def toy_config(work_dir: Path, max_iters: int = 2, **hook) -> Config:
    """A complete Runner config: ToyConvNet on ToyImages with LosslessPruningHook; its
    ``custom_imports`` are imported here, as ``Config.fromfile`` does for a config file."""
    loader = dict(dataset=dict(type="ToyImages"), sampler=dict(type="DefaultSampler", shuffle=False),
                  collate_fn=dict(type="default_collate"), batch_size=2, num_workers=0)
    cfg = Config(dict(
        model=dict(type="ToyConvNet"),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=1000),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=5e-4)),
        test_dataloader=loader,
        test_cfg=dict(type="TestLoop"),
        test_evaluator=dict(type="ToyAccuracy"),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False),
                           logger=dict(type="LoggerHook", interval=1)),
        log_processor=dict(by_epoch=False),
        custom_imports=dict(imports=["lrp_plugin.integrations.mmengine", "mm_toy"], allow_failed_imports=False),
        custom_hooks=[dict(type="LosslessPruningHook", **{"criterion": "l1", "ratio": 0.5, "input_size": SIZE,
                                                         **hook})],
        randomness=dict(seed=0),
    ))
    import_modules_from_strings(**cfg.custom_imports)
    return cfg
