"""A plain training loop (held masks stay zero through it) and evaluation helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSplit
from .recipes import Recipe


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CIFAR's random crop (4-pixel padding) and horizontal flip, on a batch."""
    n, _, h, w = images.shape
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2,), generator=gen).tolist()
    out = padded[:, :, dy:dy + h, dx:dx + w]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def train(model: nn.Module, data: ImageSplit, recipe: Recipe, seed: int = 0, desc: str = "train",
          progress: bool = True) -> list[float]:
    """Train with the recipe; returns the mean loss of each epoch."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(recipe.milestones), gamma=1.0 / recipe.gamma_div)
    losses = []
    model.train()
    batches = (len(data.train_y) + recipe.batch_size - 1) // recipe.batch_size
    bar = tqdm(total=recipe.epochs * batches, desc=desc, disable=not progress, leave=False, unit="batch")
    for _ in range(recipe.epochs):
        order = torch.randperm(len(data.train_y), generator=gen)
        total = 0.0
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            images = _augment(data.train_x[idx], gen) if data.augment else data.train_x[idx]
            loss = F.cross_entropy(model(images), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        sched.step()
        losses.append(total / len(order))
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean())
