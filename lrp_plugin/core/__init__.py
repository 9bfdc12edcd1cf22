"""The lossless-reconstruction core: torch and torch_pruning only."""

from .criteria import CRITERIA, geometric_median_distance, get_criterion, l1_norm, l2_norm, register_criterion
from .hold import (
                   apply_masks,
                   enforce_masks,
                   get_masks,
                   load_masked,
                   masks_hold,
                   remove_masks,
                   save_masked,
)
from .masks import ChannelMasks, validate_masks
from .metrics import count_macs_params, count_params, paper_flops
from .modules import unwrap_model
from .reconstruct import ReconstructionResult, default_tolerance, reconstruct
from .report import GroupRecord, ReconstructionReport
from .selection import SELECTIONS, compute_masks
from .spec import channel_spec, load_pruned, save_pruned, shrink_to_spec

__all__ = [
    "CRITERIA", "ChannelMasks", "GroupRecord", "ReconstructionReport", "ReconstructionResult",
    "apply_masks", "channel_spec", "compute_masks", "count_macs_params", "count_params",
    "default_tolerance", "enforce_masks", "geometric_median_distance", "get_criterion", "get_masks",
    "l1_norm", "l2_norm", "load_masked", "load_pruned", "masks_hold", "paper_flops", "reconstruct",
    "SELECTIONS", "register_criterion", "remove_masks", "save_masked", "save_pruned", "shrink_to_spec",
    "unwrap_model", "validate_masks",
]
