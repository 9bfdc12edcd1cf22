"""The main job: the whole method on a real dataset that ships with scikit-learn (digits).

train a timm ResNet (CIFAR stem) -> for each criterion: mask conv + BN, fine-tune with the
masks held, reconstruct -> compare the masked and the reconstructed model on every test
image; plus the paper's two ablations (intersection, BN not masked).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import core as lrp
from .adapters import create_resnet
from .core.criteria import check_ratio, get_criterion
from .errors import InvalidArgumentError


@dataclass
class DigitsData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_dataset(image_size: int = 32, seed: int = 0, test_fraction: float = 0.25) -> DigitsData:
    """scikit-learn's bundled 8x8 digits (1,797 images), upscaled to RGB ``image_size`` and split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the demo needs scikit-learn: pip install 'lrp_plugin[demo]'") from exc
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).repeat(1, 3, 1, 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return DigitsData(images[train], labels[train], images[test], labels[test])


def train(model: nn.Module, data: DigitsData, epochs: int, lr: float, seed: int,
          progress: Callable[[str], None] | None = None, batch_size: int = 64) -> None:
    """SGD with momentum and weight decay (the paper's recipe, shortened); held masks stay zero."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * ((len(data.train_y) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data.train_y), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if progress:
                progress(f"epoch {epoch + 1}/{epochs} batch {i // batch_size + 1} loss {loss.item():.3f}")
    model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i:i + 256]).argmax(1) for i in range(0, len(images), 256)])


def run_demo(model_name: str = "resnet18", ratio: float = 0.5, criteria: tuple[str, ...] = ("l1", "l2", "gm"),
             epochs: int = 8, finetune_epochs: int = 3, seed: int = 0, out_dir: str | Path = "runs/demo",
             progress: Callable[[str], None] | None = None) -> dict:
    """Run the pipeline and write ``out_dir/report.json``; returns the same numbers."""
    ratio = check_ratio(ratio)
    for c in criteria:
        get_criterion(c)
    if epochs < 1 or finetune_epochs < 0:
        raise InvalidArgumentError("epochs must be >= 1 and finetune_epochs >= 0")
    torch.manual_seed(seed)
    data = load_digits_dataset(seed=seed)
    model = create_resnet(model_name, num_classes=10, cifar_stem=True)
    example = data.test_x[:2]
    start = time.perf_counter()
    train(model, data, epochs, lr=0.05, seed=seed, progress=progress)
    base_acc = _accuracy(predict(model, data.test_x), data.test_y)
    base_macs, base_params = lrp.count_macs_params(model, example)
    results = {"model": model_name, "ratio": ratio, "dataset": "sklearn digits (upscaled to 32x32)",
               "train_images": len(data.train_y), "test_images": len(data.test_y), "seed": seed,
               "original": {"accuracy": base_acc, "params": base_params, "macs": base_macs}, "criteria": {}}
    for criterion in criteria:
        results["criteria"][criterion] = _prune_finetune_reconstruct(
            model, data, example, criterion, ratio, finetune_epochs, seed, progress)
    results["seconds"] = time.perf_counter() - start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(results, indent=2))
    return results


def _prune_finetune_reconstruct(model, data, example, criterion, ratio, epochs, seed, progress) -> dict:
    masks = lrp.compute_masks(model, example, criterion=criterion, ratio=ratio)
    row = {}
    for mask_bn in (True, False):  # False: the paper's Table 8 ablation
        masked = copy.deepcopy(model)
        lrp.apply_masks(masked, masks, mask_bn=mask_bn)
        train(masked, data, epochs, lr=0.01, seed=seed, progress=progress)
        masked_pred = predict(masked, data.test_x)
        merges = ("union", "intersection") if mask_bn else ("union",)
        for merge in merges:
            result = lrp.reconstruct(masked, example, merge=merge, strict=False)
            pred = predict(result.model, data.test_x)
            key = "union" if mask_bn and merge == "union" else ("intersection" if mask_bn else "bn_not_masked")
            row[key] = {
                "masked_accuracy": _accuracy(masked_pred, data.test_y),
                "reconstructed_accuracy": _accuracy(pred, data.test_y),
                "identical_predictions": bool(torch.equal(pred, masked_pred)),
                "changed_predictions": int((pred != masked_pred).sum()),
                "max_rel_error": result.report.max_rel_error,
                "params": result.report.params_after, "macs": result.report.macs_after,
            }
    return row


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean())


def format_results(results: dict) -> str:
    """The paper's tables in small."""
    base = results["original"]
    lines = [f"{results['model']} on {results['dataset']}, CR {results['ratio']}: "
             f"original accuracy {base['accuracy']:.2%}, {base['params']:,} params, {base['macs']:,} MACs", "",
             f"{'criterion':<9} {'variant':<14} {'masked acc':>10} {'rebuilt acc':>11} {'same preds':>10} "
             f"{'params':>11} {'MACs':>13}"]
    for criterion, rows in results["criteria"].items():
        for variant, r in rows.items():
            lines.append(f"{criterion:<9} {variant:<14} {r['masked_accuracy']:>10.2%} "
                         f"{r['reconstructed_accuracy']:>11.2%} {str(r['identical_predictions']):>10} "
                         f"{r['params']:>11,} {r['macs']:>13,}")
    lines.append(f"\n{results['seconds']:.0f} s in all")
    return "\n".join(lines)
