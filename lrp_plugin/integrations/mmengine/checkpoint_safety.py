"""MMEngine checkpoints under ``torch.load(weights_only=True)``: allow-list, never disable.

mmengine <= 0.10.7 calls ``torch.load`` without ``weights_only``, which torch >= 2.6 treats as
True, so its own epoch checkpoints (``HistoryBuffer`` and numpy values in the message hub)
no longer load. ``allow_mmengine_checkpoints`` adds those few plain types to torch's safe
globals; ``LosslessPruningHook`` and ``LRPPruned`` call it when they are built, which is
before the Runner loads any checkpoint (``Runner.__init__`` builds hooks and model, ``train``
/ ``test`` load afterwards). Importing this module changes nothing.
"""

from __future__ import annotations

from typing import Any

import torch

_allowed = False  # add_safe_globals appends: allow-list once per process


def _numpy_safe_globals() -> list[Any]:
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "uint8", "bool")]
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar, *dtypes]


def allow_mmengine_checkpoints() -> None:
    """Allow-list (not disable) what MMEngine checkpoints hold besides tensors: its
    ``HistoryBuffer`` and numpy arrays/scalars. ``builtins.getattr`` (which HistoryBuffer's
    own pickling needs) is NOT allowed: it would allow arbitrary code; the hook writes
    HistoryBuffers without it instead (see ``portable_message_hub``)."""
    global _allowed
    if _allowed:
        return
    from mmengine.logging import HistoryBuffer

    torch.serialization.add_safe_globals([HistoryBuffer, *_numpy_safe_globals()])
    _allowed = True


class PortableHistoryBuffer:
    """Pickles as ``HistoryBuffer(log_history, count_history, max_length)`` with plain lists,
    so the checkpoint loads as a genuine HistoryBuffer under ``weights_only=True``."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        logs, counts = self.buffer.data
        return HistoryBuffer, ([float(v) for v in logs], [int(c) for c in counts], int(self.buffer.max_length))


def portable_message_hub(checkpoint: dict) -> None:
    """Swap (in the checkpoint dict only, never in the live MessageHub) each HistoryBuffer
    for one that pickles without ``builtins.getattr``."""
    from mmengine.logging import HistoryBuffer

    hub = checkpoint.get("message_hub")
    if isinstance(hub, dict) and isinstance(hub.get("log_scalars"), dict):
        scalars = {k: PortableHistoryBuffer(v) if isinstance(v, HistoryBuffer) else v
                   for k, v in hub["log_scalars"].items()}
        checkpoint["message_hub"] = {**hub, "log_scalars": scalars}
