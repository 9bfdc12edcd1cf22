"""The paper's per-filter criteria: L1, L2 and geometric median (FPGM).

Each criterion maps a weight tensor of shape ``(out_channels, ...)`` to one score
per output filter; the filters with the *lowest* scores are masked.
They work on the raw weights (no absolute value or power for GM), as in the paper.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import InvalidRatioError, UnknownCriterionError

Criterion = Callable[[torch.Tensor], torch.Tensor]


def _flat(weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() < 1 or weight.shape[0] == 0:
        raise ValueError(f"expected a weight with output channels first, got shape {tuple(weight.shape)}")
    return weight.detach().reshape(weight.shape[0], -1).to(torch.float64)


def l1_norm(weight: torch.Tensor) -> torch.Tensor:
    """L1 norm of each output filter."""
    return _flat(weight).abs().sum(dim=1)


def l2_norm(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output filter."""
    return _flat(weight).pow(2).sum(dim=1).sqrt()


def geometric_median_distance(weight: torch.Tensor) -> torch.Tensor:
    """Sum of Euclidean distances from each filter to all other filters of the layer (FPGM).

    Filters near the geometric median (small sums) are the most replaceable.
    """
    flat = _flat(weight)
    return torch.cdist(flat.unsqueeze(0), flat.unsqueeze(0)).squeeze(0).sum(dim=1)


CRITERIA: dict[str, Criterion] = {
    "l1": l1_norm,
    "l2": l2_norm,
    "gm": geometric_median_distance,
}
# Other spellings users bring from NNI (L1Norm, FPGM) and Torch-Pruning; matched after
# lower-casing and dropping '-' and '_'. The one table of names every entry point resolves through.
ALIASES = {"fpgm": "gm", "geometricmedian": "gm", "l1norm": "l1", "l2norm": "l2"}


def criterion_name(criterion: str) -> str:
    """The canonical name (``"l1"``, ``"l2"``, ``"gm"``) of a criterion spelling, e.g. ``"L1Norm"`` -> ``"l1"``."""
    key = str(criterion).lower().replace("-", "").replace("_", "")
    key = ALIASES.get(key, key)
    if key not in CRITERIA:
        raise UnknownCriterionError(
            f"unknown criterion {criterion!r}: use one of 'l1', 'l2', 'gm' (or {sorted(ALIASES)}) "
            "or pass a function mapping a weight tensor to one score per output filter"
        )
    return key


def get_criterion(criterion: str | Criterion) -> Criterion:
    """Resolve a criterion name (``"l1"``, ``"l2"``, ``"gm"`` or an alias) or pass a callable through."""
    if callable(criterion):
        return criterion
    return CRITERIA[criterion_name(criterion)]


def check_ratio(ratio: float) -> float:
    """The paper's compression ratio: the fraction of output channels masked in each layer."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise InvalidRatioError(f"ratio must be a number in [0, 1), got {ratio!r}") from None
    if not 0.0 <= value < 1.0:
        raise InvalidRatioError(
            f"ratio must be in [0, 1) (the fraction of channels masked per layer), got {ratio!r}; "
            "e.g. ratio=0.5 masks half of each layer's filters"
        )
    return value


def keep_mask_from_scores(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask that masks the ``int(ratio * C)`` lowest-scoring channels, never all of them."""
    channels = scores.numel()
    # the epsilon keeps 0.29 * 100 at 29 despite float rounding
    n_masked = min(int(ratio * channels + 1e-9), channels - 1)
    keep = torch.ones(channels, dtype=torch.bool)
    if n_masked > 0:
        order = torch.argsort(scores, stable=True)
        keep[order[:n_masked]] = False
    return keep
