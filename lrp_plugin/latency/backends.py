"""Which runtimes can time a model here: PyTorch eager, TorchScript, ONNX Runtime (CPU/CUDA/TensorRT).

``torch`` (eager) needs the model's Python code, so it runs only locally; on a device the
PyTorch path is ``torchscript``. TensorRT's ``trtexec`` is detected and recorded, not driven.
"""

from __future__ import annotations

import shutil

from .errors import BackendError
from .runner import ORT_BACKENDS, RUNTIME_HINT

LOCAL_ONLY = ("torch",)
ALL_BACKENDS = ("torch", "torchscript", *ORT_BACKENDS)
NEEDS_ONNX = tuple(ORT_BACKENDS)


def check_backends(backends: list[str], remote: bool) -> list[str]:
    """Validate names (and local runtimes when not remote); the device checks its own runtimes."""
    out = []
    for b in backends:
        if b not in ALL_BACKENDS:
            raise BackendError(f"unknown backend {b!r}: use one of {', '.join(ALL_BACKENDS)}")
        if remote and b in LOCAL_ONLY:
            raise BackendError("backend 'torch' (eager) needs the model's Python code and runs only locally; "
                               "on a device use --backend torchscript (or onnxruntime)")
        if not remote and b in ORT_BACKENDS:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise BackendError(f"backend {b!r} needs onnxruntime: {RUNTIME_HINT[b]} "
                                   "(or pip install 'lrp_plugin[latency]')") from exc
            wanted = ORT_BACKENDS[b][0]
            if wanted not in ort.get_available_providers():
                raise BackendError(f"backend {b!r} needs {wanted}, but this onnxruntime offers only "
                                   f"{ort.get_available_providers()}: {RUNTIME_HINT[b]}")
        if b not in out:
            out.append(b)
    return out


def trtexec_path() -> str | None:
    """Path of TensorRT's trtexec when on PATH (recorded in the device facts)."""
    return shutil.which("trtexec")
