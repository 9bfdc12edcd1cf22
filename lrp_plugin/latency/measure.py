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
from .errors import BackendError, InputShapeError
from .export import export_ncnn, export_onnx, export_torchscript
from .runner import BACKENDS, RunnerError, Timing, time_backend
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


def time_interleaved(models: dict[str, nn.Module], example: torch.Tensor, *, runs: int = 30, warmup: int = 5,
                     threads: int | None = None, progress: bool = True, time_budget_s: float | None = None,
                     reference: str | None = None, device: str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    """PyTorch-eager latency of several modules (copies; the callers' stay as they are), interleaved; ratios to
    the first (or ``reference``)."""
    threads = threads or torch.get_num_threads()
    reference = reference or next(iter(models))
    timing = Timing(shape=list(example.shape), threads=threads, device=device, precision=precision)
    with torch_threads(threads):
        try:
            data = time_backend([{"name": n, "module": m} for n, m in models.items()], "torch", timing=timing,
                                warmup=warmup, runs=runs, time_budget_s=time_budget_s, reference=reference,
                                progress=progress)
        except RunnerError as exc:
            raise local_error(exc) from exc
    data["reference"] = reference
    return data


def _onnx_artifact(e: ModelEntry, i: int, x: torch.Tensor, workdir: Path, threads: int, progress: bool) -> dict:
    if e.onnx_path is None:
        path = workdir / f"model{i}.onnx"
        _say(progress, f"exporting {e.name} to ONNX and checking it against PyTorch")
        e.notes["onnx_check"] = export_onnx(e.module, x, path)
        e.onnx_path = path
    return {"onnx": str(e.onnx_path)}


def _ncnn_artifact(e: ModelEntry, i: int, x: torch.Tensor, workdir: Path, threads: int, progress: bool) -> dict:
    if e.module is None:
        raise BackendError(f"{e.name} is an ONNX file: --backend ncnn converts PyTorch models (with pnnx); "
                           "give the PyTorch source of the model, or time the file with onnxruntime")
    _say(progress, f"converting {e.name} to ncnn (pnnx) and checking it against PyTorch")
    check = export_ncnn(e.module, x, workdir / f"ncnn{i}", f"model{i}", threads=threads)
    paths = {"ncnn_param": check.pop("param"), "ncnn_bin": check.pop("bin")}
    e.notes["ncnn_check"] = check
    return paths


def _torchscript_artifact(e: ModelEntry, i: int, x: torch.Tensor, workdir: Path, threads: int,
                          progress: bool) -> dict:
    if e.module is None:
        return {}
    return {"torchscript": str(export_torchscript(e.module, x, workdir / f"model{i}.ts.pt"))}


# what each artifact kind of a backend record (runner.Backend.artifact) is made with, on this side
ARTIFACTS = {"onnx": _onnx_artifact, "ncnn": _ncnn_artifact, "torchscript": _torchscript_artifact}


def prepare_artifacts(entries: list[ModelEntry], backends: list[str], x: torch.Tensor, workdir: Path, *,
                      threads: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Export what the backends need (ONNX and ncnn checked against PyTorch, TorchScript); the runner's models."""
    kinds = {BACKENDS[b].artifact for b in backends}
    job_models = []
    for i, e in enumerate(entries):
        m: dict[str, Any] = {"name": e.name}
        for kind, make in ARTIFACTS.items():
            if kind in kinds:
                m.update(make(e, i, x, workdir, threads, progress))
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
                  device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
                  cuda_graphs: bool = False, progress: bool = True) -> dict[str, Any]:
    """Time every backend here, models interleaved, with the device runner's own code (PyTorch eager gets
    the modules themselves); same result shape as a device's."""
    from .runner import SCHEMA, device_facts, device_warnings

    before = device_facts()
    out: dict[str, Any] = {}
    timing = Timing(shape=list(x.shape), threads=threads, device=device, precision=precision,
                    channels_last=channels_last, cuda_graphs=cuda_graphs)
    models = [{**m, "module": e.module} for e, m in zip(entries, job_models)]
    with torch_threads(threads):
        for b in backends:
            try:
                out[b] = time_backend(models, b, timing=timing, warmup=warmup, runs=runs,
                                      time_budget_s=time_budget_s, reference=entries[0].name, progress=progress)
            except RunnerError as exc:
                raise local_error(exc) from exc
    after = device_facts()
    return {"schema": SCHEMA, "device": before, "device_after": {k: after.get(k) for k in
            ("temperature_c", "throttled", "governor")}, "warnings": device_warnings(before, after), "backends": out}
