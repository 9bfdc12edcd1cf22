"""The latency tool as an API: a ``LatencyJob`` (what to time, how, where) and ``run_job(job)``.

The CLI only turns flags into a job; scripts and benchmarks build jobs directly. ``validate``
refuses numbers outside their range with a ``UsageError`` before anything is built or exported.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRatioError, UsageError
from .remote import SSHTarget

# round_to="auto": the channel multiple that paid on each runtime in benchmarks/round_to_study.py
# (benchmarks/results/round_to_study.json, README "Latency"): kept only where one setting beat
# round_to=1 in every (model, threads) cell. Other runtimes keep channel counts as pruned (1).
ROUND_TO_AUTO: dict[str, int] = {"onnxruntime": 16}


@dataclass
class LatencyJob:
    """One latency run. ``models`` are source arguments (``timm:NAME``, ``mmdet:CONFIG``, files)."""

    models: list[str]
    base: str | None = None
    checkpoint: str | None = None
    prune_ratio: float | None = None
    criterion: str = "l1"
    round_to: int | str | None = None  # an int >= 1, "auto" (per target backend), or None
    num_classes: int = 1000
    input_shape: list[int] | None = None  # C,H,W; None: 3,224,224 (an ONNX-only run: the file's own)
    batch: int = 1
    backends: list[str] | None = None  # None: onnxruntime + torch here, onnxruntime on a device
    threads: int | None = None  # None: all cores
    warmup: int = 10
    runs: int = 50
    time_budget_s: float | None = None
    seed: int = 0
    fp16: bool = False  # TensorRT precision
    target: SSHTarget | None = None  # None: time here
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the result's settings (e.g. a study's labels)

    def validate(self) -> LatencyJob:
        """Raise UsageError for a number outside its range (the CLI's ``--runs 0`` & co.)."""
        from ..core.criteria import check_ratio

        for flag, value, low in (("--runs", self.runs, 1), ("--warmup", self.warmup, 0), ("--batch", self.batch, 1),
                                 ("--threads", self.threads, 1), ("--num-classes", self.num_classes, 1)):
            if value is not None and (not isinstance(value, int) or value < low):
                raise UsageError(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise UsageError(f"--time-budget must be > 0 seconds, got {self.time_budget_s!r}")
        if self.prune_ratio is not None:
            try:
                check_ratio(self.prune_ratio)  # the core's range, so the tool accepts what lrp accepts
            except InvalidRatioError as exc:
                raise UsageError(f"--prune-ratio: {exc}") from exc
        if self.round_to is not None and self.round_to != "auto" and (
                not isinstance(self.round_to, int) or isinstance(self.round_to, bool) or self.round_to < 1):
            raise UsageError(f"--round-to must be an integer >= 1 or 'auto', got {self.round_to!r}")
        if self.round_to is not None and self.prune_ratio is None:
            raise UsageError("--round-to applies to the pruned build: give --prune-ratio too")
        if not self.models:
            raise UsageError("no model given: e.g. timm:resnet18 --prune-ratio 0.5")
        return self

    def resolved_backends(self) -> list[str]:
        return list(self.backends or (["onnxruntime"] if self.target is not None else ["onnxruntime", "torch"]))

    def resolved_round_to(self) -> int | None:
        """``auto`` -> the study's multiple for the first backend (1 where it found none that pays)."""
        if self.round_to != "auto":
            return self.round_to
        return ROUND_TO_AUTO.get(self.resolved_backends()[0], 1)


def _input_shape(job: LatencyJob) -> list[int]:
    """The job's C,H,W; an ONNX-only run takes the file's own static shape."""
    from .export import onnx_info

    if job.input_shape is not None:
        return list(job.input_shape)
    onnx_specs = [m for m in job.models if m.lower().endswith(".onnx") and Path(m).is_file()]
    declared = onnx_info(Path(onnx_specs[0]))["input_shape"] if onnx_specs and len(onnx_specs) == len(job.models) \
        else []
    if declared and all(isinstance(d, int) and d > 0 for d in declared):
        return [int(d) for d in declared[1:]]
    return [3, 224, 224]


def time_entries(entries: list[Any], backends: list[str], x: Any, *, threads: int | None = None, warmup: int = 10,
                 runs: int = 50, time_budget_s: float | None = None, fp16: bool = False,
                 target: SSHTarget | None = None, progress: bool = True) -> dict[str, Any]:
    """Export and time already built ``ModelEntry``s (the first is the reference) here or on ``target``.

    What ``run_job`` does after loading; studies call it with model variants they built themselves.
    """
    from .measure import measure_local, prepare_artifacts

    ref = entries[0]
    shape = list(x.shape)
    local_threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="lrp-latency-") as tmp:
        job_models = prepare_artifacts(entries, backends, x, Path(tmp), threads=local_threads, progress=progress)
        if target is not None:
            from .remote import run_remote

            device_job = {"backends": backends, "input_shape": shape, "threads": threads, "warmup": warmup,
                          "runs": runs, "time_budget_s": time_budget_s, "reference": ref.name, "fp16": fp16}
            result = run_remote(target, job_models, device_job, progress=progress, checked=True)
        else:
            result = measure_local(entries, job_models, backends, x, threads=local_threads, warmup=warmup,
                                   runs=runs, time_budget_s=time_budget_s, fp16=fp16, progress=progress)
    used_threads = next((b["threads"] for b in result["backends"].values() if b.get("threads")), None)
    result.update(
        mode="remote" if target is not None else "local", host=target.host if target else None, reference=ref.name,
        settings={"input_shape": shape, "batch": shape[0], "threads": used_threads, "warmup": warmup, "runs": runs,
                  "time_budget_s": time_budget_s, "backends": backends, "fp16": fp16},
        models={e.name: {"source": e.source, "params": e.params, "macs": e.macs,
                         "macs_ratio": e.macs / ref.macs if e.macs and ref.macs else None,
                         "params_ratio": e.params / ref.params if e.params and ref.params else None,
                         "onnx_check": e.notes.get("onnx_check"), "ncnn_check": e.notes.get("ncnn_check"),
                         "pruned_in_process": e.notes.get("prune")}
                for e in entries})
    return result


def run_job(job: LatencyJob) -> dict[str, Any]:
    """Load, export (checked), time interleaved (here or on ``job.target``) and return the full result dict."""
    import torch

    from .backends import check_backends
    from .errors import ModelSourceError
    from .sources import SourceRequest, load_models

    job.validate()
    backends = check_backends(job.resolved_backends(), remote=job.target is not None)
    if "ncnn" in backends and job.batch != 1:
        raise UsageError("--backend ncnn times one image per forward: use --batch 1")
    shape = [job.batch, *_input_shape(job)]
    if job.target is not None:  # reachability, Python and runtimes first: no minutes of exporting before "host down"
        from .remote import preflight

        if job.progress:
            print(f"checking {job.target.host}: ssh, {job.target.python}, runtimes for {', '.join(backends)}",
                  file=sys.stderr)
        preflight(job.target, backends)
    round_to = job.resolved_round_to()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(job.seed))
    req = SourceRequest(x=x, base=job.base, checkpoint=job.checkpoint, prune_ratio=job.prune_ratio,
                        criterion=job.criterion, round_to=round_to, num_classes=job.num_classes, seed=job.seed,
                        quiet=not job.progress)
    entries = load_models(job.models, req)
    if "torch" in backends and any(e.module is None for e in entries):
        raise ModelSourceError("an .onnx file cannot be timed with --backend torch: use --backend onnxruntime")
    result = time_entries(entries, backends, x, threads=job.threads, warmup=job.warmup, runs=job.runs,
                          time_budget_s=job.time_budget_s, fp16=job.fp16, target=job.target, progress=job.progress)
    result["settings"].update(batch=job.batch, seed=job.seed, round_to=round_to, round_to_requested=job.round_to,
                              **job.extra)
    return result
