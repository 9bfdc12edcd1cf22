"""Errors of the latency tool. Each is an LRPError (so ``lrp`` prints it and exits non-zero) and names the fix."""

from __future__ import annotations

from ..errors import LRPError


class LatencyError(LRPError, RuntimeError):
    """Base class of the latency tool's errors."""


class ModelSourceError(LatencyError, ValueError):
    """A model argument that cannot be loaded (missing file, unknown name, missing --base)."""


class InputShapeError(LatencyError, ValueError):
    """The model rejects the requested input shape / batch size."""


class ExportError(LatencyError):
    """ONNX/TorchScript export failed, or the exported model does not match PyTorch."""


class BackendError(LatencyError):
    """A backend that is unknown or whose runtime is missing (locally or on the device)."""


class RemoteError(LatencyError):
    """A remote run that failed on the device (runner error, bad output)."""


class HostUnreachableError(RemoteError, ConnectionError):
    """ssh could not connect or authenticate to the device."""


class RemotePythonError(RemoteError):
    """The Python given by --remote-python does not exist on the device."""


class RemoteRuntimeError(RemoteError, BackendError):
    """The device's Python lacks numpy/onnxruntime/torch for the requested backend."""


class CudaUnavailableError(BackendError):
    """``--device cuda`` where torch finds no CUDA GPU."""
