"""Before training: rebuild a copy of the masked model once, so a model that cannot be rebuilt is
refused now, not after the whole fine-tune (the rebuild itself never changes the caller's model)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import LosslessError, MaskError, UnsupportedLayerError
from .graph import ForwardFn
from .masks import ChannelMasks
from .reconstruct import reconstruct
from .report import ReconstructionReport

_REFUSALS = (LosslessError, MaskError, UnsupportedLayerError)


def dry_run_rebuild(model: nn.Module, example_inputs: Any, masks: ChannelMasks | None = None, *,
                    forward_fn: ForwardFn | None = None, when: str = "before training",
                    **options: Any) -> ReconstructionReport:
    """Rebuild (and verify) a copy of ``model`` with ``masks`` (default: the masks it holds);
    ``options`` are ``reconstruct``'s (``mask_bn``, ``round_to`` ...), as the real rebuild will use them.

    Each group walk is bounded by the walker's time/memory fence, so this costs one rebuild.
    A failure is raised as the same error type, saying it was found ``when`` and how to fix it.
    """
    try:
        return reconstruct(model, example_inputs, masks=masks, forward_fn=forward_fn, inplace=False,
                           **options).report
    except _REFUSALS as exc:
        message = (f"refused {when}: a dry-run rebuild of a copy of the masked model failed, so the rebuild after "
                   f"training would fail too: {exc}")
        error = LosslessError(message, exc.report) if isinstance(exc, LosslessError) else type(exc)(message)
        raise error from exc


__all__ = ["dry_run_rebuild"]
