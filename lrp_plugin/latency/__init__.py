"""Latency of original vs pruned models: locally or on a Raspberry Pi / Jetson over SSH.

Modules: ``api`` (``LatencyJob`` + ``run_job``: the whole run), ``sources`` (a registry of model
source kinds), ``export`` (ONNX, ncnn via pnnx, TorchScript; checked against PyTorch), ``backends``
(checks against the backend records), ``measure`` (interleaved timing and stats), ``device`` (device facts and
warnings), ``remote`` (SSH), ``report`` (table/JSON/CSV/PNG), ``cli`` (flags -> job).
``runner`` is the self-contained device-side file (ONNX Runtime, ncnn, TorchScript, trtexec).
Nothing here imports onnx, onnxruntime, ncnn or matplotlib at import time.
"""

from .errors import (
    BackendError,
    CudaUnavailableError,
    ExportError,
    HostUnreachableError,
    InputShapeError,
    LatencyError,
    ModelSourceError,
    RemoteError,
    RemotePythonError,
    RemoteRuntimeError,
)

__all__ = ["BackendError", "CudaUnavailableError", "ExportError", "HostUnreachableError", "InputShapeError",
           "LatencyError", "ModelSourceError", "RemoteError", "RemotePythonError", "RemoteRuntimeError"]
