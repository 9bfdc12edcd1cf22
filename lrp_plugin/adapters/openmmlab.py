"""What the OpenMMLab adapters share."""

from __future__ import annotations

from torch import nn


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """SyncBN -> mmengine's ``_BatchNormXd``, so one process on a CPU can trace the model."""
    from mmengine.model import revert_sync_batchnorm as revert

    return revert(model)
