"""The paper's per-filter criteria: L1, L2 and geometric median (FPGM), and the criterion registry.

Each criterion maps a weight tensor of shape ``(out_channels, ...)`` to one score
per output filter; the filters with the *lowest* scores are masked.
They work on the raw weights (no absolute value or power for GM), as in the paper.
``register_criterion(name, fn)`` adds one under a name every entry point resolves (compute_masks,
NNI pruners, LosslessPruner, the mmengine hook, the CLIs); ``fn`` may also be a Torch-Pruning
``Importance`` (called on a Torch-Pruning group, one score per root channel). Installed packages
can register theirs through the entry-point group ``lrp_plugin.criteria`` (name -> fn).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch_pruning as tp

from ..errors import InvalidArgumentError, InvalidRatioError, UnknownCriterionError

Criterion = Callable[[torch.Tensor], torch.Tensor]
ENTRY_POINT_GROUP = "lrp_plugin.criteria"


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


_entry_points_loaded = False


def _key(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def is_importance(criterion: Any) -> bool:
    """A Torch-Pruning ``Importance`` (scores a whole group) rather than a per-filter weight function."""
    return isinstance(criterion, tp.importance.Importance)


def register_criterion(name: str, fn: Criterion | Any, aliases: Iterable[str] = ()) -> None:
    """Make ``fn`` usable by ``name`` (and ``aliases``) everywhere a criterion is named.

    ``fn`` maps a weight tensor ``(out_channels, ...)`` to one score per output filter (lowest
    masked), or is a Torch-Pruning ``Importance``. Re-registering a name replaces it.
    """
    if not callable(fn):
        raise InvalidArgumentError(
            f"register_criterion({name!r}, ...): fn must map a weight tensor to one score per output filter "
            f"(or be a torch_pruning Importance), got {type(fn).__name__}")
    name = str(name)
    if not _key(name):
        raise InvalidArgumentError("register_criterion: the name must not be empty")
    CRITERIA[name] = fn  # listed as spelled; found by any spelling that normalises to it
    for alias in (name, *aliases):
        if _key(alias) != name:
            ALIASES[_key(alias)] = name


def _load_entry_points() -> None:
    """Criteria installed packages declare under ``lrp_plugin.criteria`` (loaded once, on first lookup)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in CRITERIA and _key(ep.name) not in ALIASES:
            register_criterion(ep.name, ep.load())


def criterion_names() -> list[str]:
    """The registered criterion names (built-in and registered), for messages and CLI help."""
    _load_entry_points()
    return list(CRITERIA)


def criterion_name(criterion: str) -> str:
    """The canonical registered name of a criterion spelling, e.g. ``"L1Norm"`` -> ``"l1"``."""
    _load_entry_points()
    key = _key(criterion)
    key = ALIASES.get(key, key)
    if key not in CRITERIA:
        key = criterion if criterion in CRITERIA else key
        raise UnknownCriterionError(
            f"unknown criterion {criterion!r}: use one of {', '.join(repr(n) for n in CRITERIA)} "
            f"(or the aliases {sorted(ALIASES)}), register one with lrp.register_criterion(name, fn), "
            "or pass a function mapping a weight tensor to one score per output filter"
        )
    return key


def get_criterion(criterion: str | Criterion) -> Criterion:
    """Resolve a registered criterion name (or alias) or pass a callable (or ``Importance``) through."""
    if callable(criterion):
        return criterion
    return CRITERIA[criterion_name(criterion)]


def criterion_label(criterion: Any) -> str:
    """How masks' meta and reports name a criterion: its registered name, else the function's name."""
    if isinstance(criterion, str):
        criterion_name(criterion)  # unknown names fail here, with the registered ones listed
        return criterion
    for name, fn in CRITERIA.items():
        if fn is criterion:
            return name
    return getattr(criterion, "__name__", type(criterion).__name__)


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
