"""Latency of original vs pruned models: locally or on a Raspberry Pi / Jetson over SSH.

Modules: ``sources`` (load models), ``export`` (ONNX/TorchScript, checked against PyTorch),
``backends`` (which runtimes exist), ``measure`` (interleaved timing and stats), ``device``
(device facts and warnings), ``remote`` (SSH), ``report`` (table/JSON/CSV/PNG), ``cli``.
``runner`` is the self-contained device-side file. Nothing here imports onnx, onnxruntime or
matplotlib at import time.
"""

from .errors import (
    BackendError,
    ExportError,
    HostUnreachableError,
    InputShapeError,
    LatencyError,
    ModelSourceError,
    RemoteError,
    RemotePythonError,
    RemoteRuntimeError,
)

__all__ = ["BackendError", "ExportError", "HostUnreachableError", "InputShapeError", "LatencyError",
           "ModelSourceError", "RemoteError", "RemotePythonError", "RemoteRuntimeError"]
