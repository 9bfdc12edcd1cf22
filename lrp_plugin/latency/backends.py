"""Which runtimes can time a model here or on a device: the records live in ``runner.BACKENDS`` (the
device-side file must carry them); this module checks a job's backends against them before any work.

``torch`` (eager) needs the model's Python code, so it runs only locally; on a device the PyTorch
path is ``torchscript``. A missing Python runtime here is a ``MissingExtraError`` naming the extra; an
onnxruntime without the requested provider, or no trtexec, is a ``BackendError``; ``--device cuda``
on a machine whose torch finds no GPU is a ``CudaUnavailableError``.
"""

from __future__ import annotations

from ..errors import UsageError
from ..extras import require
from .errors import BackendError, CudaUnavailableError
from .runner import BACKENDS, Backend, register_backend, trtexec_path

__all__ = ["BACKENDS", "Backend", "check_backends", "check_device", "register_backend"]


def backend(name: str) -> Backend:
    """The record of ``name``; a BackendError listing the known ones otherwise."""
    found = BACKENDS.get(name)
    if found is None:
        raise BackendError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    return found


def check_backends(backends: list[str], remote: bool, *, device: str | None = None, precision: str = "fp32",
                   batch: int = 1) -> list[str]:
    """Validate names, device, precision and batch for each backend, and the local runtimes when not remote
    (the device checks its own); each name once, in order."""
    out = []
    for name in backends:
        spec = backend(name)
        if remote and spec.local_only:
            raise BackendError(f"backend {name!r} (eager) needs the model's Python code and runs only locally; "
                               "on a device use --backend torchscript (or onnxruntime)")
        where = device or spec.devices[0]
        if where not in spec.precisions:
            raise UsageError(f"backend {name!r} runs on {' or '.join(spec.devices)}, not on {where}: "
                             + ("use --backend torch or torchscript for --device cuda (or ort-cuda, tensorrt)"
                                if where == "cuda" else f"drop --device {where}"))
        if precision not in spec.precisions[where]:
            raise UsageError(f"backend {name!r} on {where} times {', '.join(spec.precisions[where])}, not "
                             f"{precision}: drop --{precision} for it, or use "
                             f"{_backends_with(where, precision) or 'another device'}")
        if spec.batch_one and batch != 1:
            raise UsageError(f"--backend {name} times one image per forward: use --batch 1")
        if spec.converter:  # converting happens here even when the timing runs on a device
            require(spec.converter, "latency", purpose=f"converting models for --backend {name}")
        if not remote:
            _check_local_runtime(spec)
        if name not in out:
            out.append(name)
    return out


def _backends_with(device: str, precision: str) -> str:
    return ", ".join(b.name for b in BACKENDS.values() if precision in b.precisions.get(device, ()))


def _check_local_runtime(spec: Backend) -> None:
    for need in spec.needs:
        if need == "trtexec":
            if trtexec_path() is None:
                raise BackendError(f"backend {spec.name!r} needs TensorRT's trtexec, found neither on PATH nor in "
                                   f"the JetPack location: {spec.hint}; or time on the Jetson with --host")
        else:
            require(need, "latency", purpose=f"--backend {spec.name}")
    if spec.providers:
        ort = require("onnxruntime", "latency", purpose=f"--backend {spec.name}")
        if spec.providers[0] not in ort.get_available_providers():
            raise BackendError(f"backend {spec.name!r} needs {spec.providers[0]}, but this onnxruntime offers only "
                               f"{ort.get_available_providers()}: {spec.hint}")


def check_device(device: str | None, backends: list[str]) -> None:
    """``--device cuda`` here needs a torch that finds a GPU (for the backends that run torch): checked before
    anything is built or exported."""
    if device != "cuda" or not any("torch" in backend(b).needs for b in backends):
        return
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        raise CudaUnavailableError(
            f"--device cuda, but CUDA is not available here: torch {torch.__version__} "
            + (f"is built for CUDA {built} yet finds no GPU (driver, CUDA_VISIBLE_DEVICES?)" if built else
               "is a CPU-only build") + ". Run on a machine with an NVIDIA GPU and a CUDA build of torch, time on "
            "a Jetson with --host, or use --device cpu")
