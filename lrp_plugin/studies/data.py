"""Datasets for the studies: scikit-learn's bundled digits, or CIFAR-10 from a local folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InvalidArgumentError
from ..extras import require

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ImageSplit:
    """Train and test tensors (N, 3, H, W) with integer labels, already normalised."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: bool = False  # random crop + flip during training (CIFAR recipe)

    def subset(self, train: int | None, test: int | None) -> ImageSplit:
        """The first ``train``/``test`` images, for reduced runs."""
        return ImageSplit(self.name, self.train_x[:train], self.train_y[:train], self.test_x[:test],
                          self.test_y[:test], self.num_classes, self.augment)


def load_digits_split(image_size: int = 32, seed: int = 0, test_fraction: float = 0.25) -> ImageSplit:
    """scikit-learn's bundled 8x8 digits (1,797 real images), upscaled to RGB ``image_size``,
    split reproducibly by ``seed``."""
    datasets = require("sklearn.datasets", "demo", purpose="the digits dataset")
    digits = datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).repeat(1, 3, 1, 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return ImageSplit("sklearn digits (8x8 upscaled to 32x32)", images[train], labels[train], images[test],
                      labels[test], num_classes=10)


CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _read_cifar_batches(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels from CIFAR-10's python batch files.

    These files are pickles (the dataset's own format, as torchvision reads it): only open
    CIFAR-10 folders you trust."""
    import pickle

    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images.append(torch.as_tensor(batch[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(batch[b"labels"], dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def load_cifar10_split(root: str | Path) -> ImageSplit:
    """CIFAR-10 from a local folder in torchvision's format (``cifar-10-batches-py``); never downloads."""
    folder = Path(root) / "cifar-10-batches-py"
    missing = [n for n in (*CIFAR_TRAIN_FILES, "test_batch") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no CIFAR-10 in {str(root)!r}: expected {str(folder)!r} with {', '.join(missing)} (torchvision's format, "
            "the extracted cifar-10-python.tar.gz); point --data-dir at its parent folder")
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    train_x, train_y = _read_cifar_batches(folder, CIFAR_TRAIN_FILES)
    test_x, test_y = _read_cifar_batches(folder, ("test_batch",))
    return ImageSplit("CIFAR-10", (train_x.float() / 255 - mean) / std, train_y, (test_x.float() / 255 - mean) / std,
                      test_y, num_classes=10, augment=True)


def load_split(dataset: str, data_dir: str | Path | None = None, seed: int = 0) -> ImageSplit:
    """``"digits"`` (bundled) or ``"cifar10"`` (needs ``data_dir``)."""
    if dataset == "digits":
        return load_digits_split(seed=seed)
    if dataset == "cifar10":
        if data_dir is None:
            raise InvalidArgumentError("--dataset cifar10 needs --data-dir pointing at a local CIFAR-10 folder")
        return load_cifar10_split(data_dir)
    raise InvalidArgumentError(f"unknown dataset {dataset!r}: use 'digits' (bundled) or 'cifar10' (local folder)")
