"""Interleaved timing of original and pruned models, and the stats around it.

Why interleaved: clock, temperature and background load drift during a run; timing the models
round by round (order rotated) makes drift hit all of them, and the pruned/original ratio is
then computed per round from the same runs, which gives it an honest spread.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import MissingExtraError
from .backends import NEEDS_ONNX
from .errors import BackendError, InputShapeError
from .export import export_ncnn, export_onnx, export_torchscript
from .runner import RunnerError, finish_backend, time_backend, time_tensorrt
from .sources import ModelEntry


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Set ``torch.set_num_threads`` for the run and restore the caller's value after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _eager(model: nn.Module, x: torch.Tensor):
    def call():
        with torch.inference_mode():
            return model(x)
    return call


def time_interleaved(models: dict[str, nn.Module], example: torch.Tensor, *, runs: int = 30, warmup: int = 5,
                     threads: int | None = None, progress: bool = True, time_budget_s: float | None = None,
                     reference: str | None = None) -> dict[str, Any]:
    """PyTorch-eager latency of several modules, interleaved; ratios to the first (or ``reference``)."""
    threads = threads or torch.get_num_threads()
    reference = reference or next(iter(models))
    for m in models.values():
        m.eval()
    with torch_threads(threads):
        fns = {name: _eager(m, example) for name, m in models.items()}
        data = finish_backend(fns, "torch", shape=list(example.shape), threads=threads, warmup=warmup, runs=runs,
                              time_budget_s=time_budget_s, reference=reference, progress=progress)
    data["reference"] = reference
    return data


def prepare_artifacts(entries: list[ModelEntry], backends: list[str], x: torch.Tensor, workdir: Path, *,
                      threads: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Export what the backends need (ONNX and ncnn checked against PyTorch, TorchScript); the runner's models."""
    job_models = []
    for i, e in enumerate(entries):
        m: dict[str, Any] = {"name": e.name}
        if any(b in NEEDS_ONNX for b in backends):
            if e.onnx_path is not None:
                m["onnx"] = str(e.onnx_path)
            else:
                path = workdir / f"model{i}.onnx"
                _say(progress, f"exporting {e.name} to ONNX and checking it against PyTorch")
                e.notes["onnx_check"] = export_onnx(e.module, x, path)
                e.onnx_path = path
                m["onnx"] = str(path)
        if "ncnn" in backends:
            if e.module is None:
                raise BackendError(f"{e.name} is an ONNX file: --backend ncnn converts PyTorch models (with pnnx); "
                                   "give the PyTorch source of the model, or time the file with onnxruntime")
            _say(progress, f"converting {e.name} to ncnn (pnnx) and checking it against PyTorch")
            check = export_ncnn(e.module, x, workdir / f"ncnn{i}", f"model{i}", threads=threads)
            m["ncnn_param"], m["ncnn_bin"] = check.pop("param"), check.pop("bin")
            e.notes["ncnn_check"] = check
        if "torchscript" in backends and e.module is not None:
            path = workdir / f"model{i}.ts.pt"
            m["torchscript"] = str(export_torchscript(e.module, x, path))
        job_models.append(m)
    return job_models


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def local_error(exc: RunnerError) -> Exception:
    """The LRPError for a runner failure here: a missing library is a MissingExtraError (pip extra)."""
    if exc.kind == "module_missing":
        return MissingExtraError(f"{exc}; or pip install 'lrp_plugin[latency]'")
    return (InputShapeError if exc.kind == "bad_input" else BackendError)(str(exc))


def measure_local(entries: list[ModelEntry], job_models: list[dict[str, Any]], backends: list[str],
                  x: torch.Tensor, *, threads: int, warmup: int, runs: int, time_budget_s: float | None,
                  fp16: bool = False, progress: bool = True) -> dict[str, Any]:
    """Time every backend here, models interleaved; same result shape as the device runner's."""
    from .runner import SCHEMA, device_facts, device_warnings

    before = device_facts()
    out: dict[str, Any] = {}
    shape = list(x.shape)
    reference = entries[0].name
    with torch_threads(threads):
        for b in backends:
            try:
                if b == "torch":
                    fns = {e.name: _eager(e.module, x) for e in entries if e.module is not None}
                    out[b] = finish_backend(fns, b, shape=shape, threads=threads, warmup=warmup, runs=runs,
                                            time_budget_s=time_budget_s, reference=reference, progress=progress)
                elif b == "tensorrt":
                    out[b] = time_tensorrt(job_models, shape=shape, warmup=warmup, runs=runs, reference=reference,
                                           fp16=fp16, progress=progress)
                else:
                    out[b] = time_backend(job_models, b, shape=shape, threads=threads, warmup=warmup, runs=runs,
                                          time_budget_s=time_budget_s, reference=reference, progress=progress)
            except RunnerError as exc:
                raise local_error(exc) from exc
    after = device_facts()
    return {"schema": SCHEMA, "device": before, "device_after": {k: after.get(k) for k in
            ("temperature_c", "throttled", "governor")}, "warnings": device_warnings(before, after), "backends": out}
