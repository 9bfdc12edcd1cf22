"""One exception family for every user-facing failure.

Each subclass also derives from the built-in type a Python user would expect
(``ValueError``, ``KeyError`` ...), so ``except ValueError`` keeps working.
Messages name the module at fault and the fix.
"""

from __future__ import annotations


class LRPError(Exception):
    """Base class of every error raised on purpose by lrp_plugin."""


class InvalidRatioError(LRPError, ValueError):
    """A pruning ratio outside [0, 1)."""


class UnknownCriterionError(LRPError, ValueError):
    """A criterion name that is not registered (built-in: l1, l2, gm; see ``lrp.register_criterion``)."""


class MaskError(LRPError, ValueError):
    """Masks that do not fit the model (absent module, wrong length, wrong type)."""


class ForeignMaskError(MaskError):
    """Masks from another tool whose meaning lrp_plugin cannot rebuild exactly (element-wise
    sparsity, masked layers that feed model outputs): refused before any rebuild."""


class TraceError(LRPError, RuntimeError):
    """The model could not be traced with the example inputs."""


class UnsupportedLayerError(LRPError, TypeError):
    """A layer whose channels cannot be removed losslessly (e.g. coupled through GroupNorm)."""


class LosslessError(LRPError, RuntimeError):
    """The reconstructed model does not compute what the masked model computed."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class SpecMismatchError(LRPError, ValueError):
    """A saved channel spec or checkpoint that does not fit the base model."""


class UnknownModelError(LRPError, KeyError):
    """A model name or config that no adapter knows."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(LRPError, ValueError):
    """An argument outside its allowed set (e.g. merge='xor')."""


class MissingExtraError(LRPError, ImportError):
    """An optional library (an extra of lrp_plugin) is not installed."""


class UsageError(LRPError, ValueError):
    """A command-line value outside its allowed range (``--runs 0``, ``--threads -1`` ...)."""


class CallOrderError(LRPError, RuntimeError):
    """A method called before the step it needs (e.g. ``report`` before ``speedup_model()``)."""


class UnsafeCheckpointError(LRPError, ValueError):
    """A file that holds pickled objects beyond plain tensors: it is never unpickled."""


class BudgetError(LRPError, ValueError):
    """A MACs budget (``target_macs``) below what masking every prunable layer to its floor reaches.

    ``smallest`` is the smallest reachable fraction of the original MACs.
    """

    def __init__(self, message: str, smallest: float):
        super().__init__(message)
        self.smallest = smallest
