"""Which runtimes can time a model here: PyTorch eager, TorchScript, ONNX Runtime (CPU/CUDA/TensorRT EP),
ncnn (pnnx-converted), TensorRT's trtexec.

``torch`` (eager) needs the model's Python code, so it runs only locally; on a device the
PyTorch path is ``torchscript``. A missing Python runtime here is a ``MissingExtraError`` naming
the extra; an onnxruntime without the requested provider, or no trtexec, is a ``BackendError``.
"""

from __future__ import annotations

from ..extras import require
from .errors import BackendError
from .runner import ORT_BACKENDS, RUNTIME_HINT, trtexec_path

LOCAL_ONLY = ("torch",)
ALL_BACKENDS = ("torch", "torchscript", *ORT_BACKENDS, "ncnn", "tensorrt")
NEEDS_ONNX = (*ORT_BACKENDS, "tensorrt")


def check_backends(backends: list[str], remote: bool) -> list[str]:
    """Validate names (and local runtimes when not remote); the device checks its own runtimes."""
    out = []
    for b in backends:
        if b not in ALL_BACKENDS:
            raise BackendError(f"unknown backend {b!r}: use one of {', '.join(ALL_BACKENDS)}")
        if remote and b in LOCAL_ONLY:
            raise BackendError("backend 'torch' (eager) needs the model's Python code and runs only locally; "
                               "on a device use --backend torchscript (or onnxruntime)")
        if b == "ncnn":  # converting needs pnnx here even when the timing runs on a device
            require("pnnx", "latency", purpose="converting models for --backend ncnn")
            if not remote:
                require("ncnn", "latency", purpose="--backend ncnn")
        if not remote and b in ORT_BACKENDS:
            ort = require("onnxruntime", "latency", purpose=f"--backend {b}")
            wanted = ORT_BACKENDS[b][0]
            if wanted not in ort.get_available_providers():
                raise BackendError(f"backend {b!r} needs {wanted}, but this onnxruntime offers only "
                                   f"{ort.get_available_providers()}: {RUNTIME_HINT[b]}")
        if not remote and b == "tensorrt" and trtexec_path() is None:
            raise BackendError(f"backend 'tensorrt' needs TensorRT's trtexec, found neither on PATH nor in the "
                               f"JetPack location: {RUNTIME_HINT['tensorrt']}; or time on the Jetson with --host")
        if b not in out:
            out.append(b)
    return out
