"""lrp_plugin: lossless reconstruction for channel pruning (Lee, Lee & Hwang, Sensors 2023).

Masks (conv + BatchNorm) are computed by L1/L2/GM, held during fine-tuning, and the
network is then rebuilt physically smaller so it computes exactly what the masked
network computed. Only torch and torch-pruning are needed to import this package;
the timm, NNI, OpenMMLab and latency integrations import their libraries lazily.
"""

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all
from .errors import (
                     BudgetError,
                     CallOrderError,
                     ForeignMaskError,
                     InvalidArgumentError,
                     InvalidRatioError,
                     LosslessError,
                     LRPError,
                     MaskError,
                     MissingExtraError,
                     SpecMismatchError,
                     TraceError,
                     UnknownCriterionError,
                     UnknownModelError,
                     UnsafeCheckpointError,
                     UnsupportedLayerError,
                     UsageError,
)

__version__ = "0.1.0"
__all__ = [*_core_all, "BudgetError", "CallOrderError", "ForeignMaskError", "InvalidArgumentError",
           "InvalidRatioError", "LRPError", "LosslessError", "MaskError", "MissingExtraError", "SpecMismatchError",
           "TraceError", "UnknownCriterionError",
           "UnknownModelError", "UnsafeCheckpointError", "UnsupportedLayerError", "UsageError", "__version__"]
