"""The latency tool as an API: a ``LatencyJob`` (what to time, how, where) and ``run_job(job)``.

The CLI only turns flags into a job; scripts and benchmarks build jobs directly. ``validate``
refuses numbers outside their range with a ``UsageError`` before anything is built or exported.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, InvalidRatioError, UsageError
from .backends import backend as backend_record
from .remote import SSHTarget


@dataclass
class LatencyJob:
    """One latency run. ``models`` are source arguments (``timm:NAME``, ``mmdet:CONFIG``, files)."""

    models: list[str]
    base: str | None = None
    checkpoint: str | None = None
    prune_ratio: float | None = None
    criterion: str = "l1"
    round_to: int | str | None = None  # an int >= 1, "auto" (per target backend), or None
    selection: str = "layer"  # how the pruned build chooses channels (lrp.compute_masks)
    target_macs: float | None = None  # pruned build at a MACs budget instead of prune_ratio
    num_classes: int = 1000
    input_shape: list[int] | None = None  # C,H,W; None: 3,224,224 (an ONNX-only run: the file's own)
    batch: int = 1
    backends: list[str] | None = None  # None: onnxruntime + torch here, onnxruntime on a device
    threads: int | None = None  # None: all cores
    warmup: int = 10
    runs: int = 50
    time_budget_s: float | None = None
    seed: int = 0
    fp16: bool = False  # fp16 engines (tensorrt) / half-precision PyTorch (torch, torchscript on CUDA)
    bf16: bool = False  # bfloat16 PyTorch (torch, torchscript)
    device: str | None = None  # "cpu" | "cuda" for torch/torchscript; None: each backend's own (ort-cuda: CUDA)
    channels_last: bool = False  # PyTorch backends: model and input in channels_last memory format
    cuda_graphs: bool = False  # PyTorch backends on CUDA: capture the forward once, replay it
    target: SSHTarget | None = None  # None: time here
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the result's settings (e.g. a study's labels)

    def validate(self) -> LatencyJob:
        """Raise UsageError for a number outside its range (the CLI's ``--runs 0`` & co.)."""
        from ..core.criteria import check_ratio
        from ..core.plan import check_round_to

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
        from ..core.selection import check_ratio_or_target, check_selection

        try:
            check_selection(self.selection)
            check_ratio_or_target(self.prune_ratio, self.target_macs)
        except InvalidArgumentError as exc:
            raise UsageError(f"--selection/--target-macs: {exc}") from exc
        if self.round_to != "auto":
            try:
                check_round_to(self.round_to)  # the core's rule, so the tool accepts what lrp accepts
            except InvalidArgumentError as exc:
                raise UsageError(f"--round-to: {exc}, or 'auto'") from exc
        if self.round_to is not None and self.prune_ratio is None and self.target_macs is None:
            raise UsageError("--round-to applies to the pruned build: give --prune-ratio (or --target-macs) too")
        if not self.models:
            raise UsageError("no model given: e.g. timm:resnet18 --prune-ratio 0.5")
        if self.fp16 and self.bf16:
            raise UsageError("--fp16 and --bf16 exclude each other: give one")
        if self.device not in (None, "cpu", "cuda"):
            raise UsageError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.cuda_graphs and self.device != "cuda":
            raise UsageError("--cuda-graphs captures CUDA work: give --device cuda too")
        return self

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "bf16" if self.bf16 else "fp32"

    def resolved_backends(self) -> list[str]:
        return list(self.backends or (["onnxruntime"] if self.target is not None else ["onnxruntime", "torch"]))

    def resolved_round_to(self) -> int | None:
        """``auto`` -> the multiple measured to pay on the first backend at this device and precision (its
        record's ``round_to_auto``; 1 where the study found none that pays, or has not measured it)."""
        if self.round_to != "auto":
            return self.round_to
        first = backend_record(self.resolved_backends()[0])
        return first.round_to_auto.get((self.device or first.devices[0], self.precision), 1)


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


@dataclass(frozen=True)
class RunSettings:
    """How PyTorch runs the models on the timing machine (the job's ``--device``, precision, layout, graphs)."""

    device: str | None = None
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graphs: bool = False


def time_entries(entries: list[Any], backends: list[str], x: Any, *, threads: int | None = None, warmup: int = 10,
                 runs: int = 50, time_budget_s: float | None = None, run: RunSettings = RunSettings(),
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
                          "runs": runs, "time_budget_s": time_budget_s, "reference": ref.name, **asdict(run)}
            result = run_remote(target, job_models, device_job, progress=progress, checked=True)
        else:
            result = measure_local(entries, job_models, backends, x, threads=local_threads, warmup=warmup,
                                   runs=runs, time_budget_s=time_budget_s, device=run.device or "cpu",
                                   precision=run.precision, channels_last=run.channels_last,
                                   cuda_graphs=run.cuda_graphs, progress=progress)
    used_threads = next((b["threads"] for b in result["backends"].values() if b.get("threads")), None)
    result.update(
        mode="remote" if target is not None else "local", host=target.host if target else None, reference=ref.name,
        settings={"input_shape": shape, "batch": shape[0], "threads": used_threads, "warmup": warmup, "runs": runs,
                  "time_budget_s": time_budget_s, "backends": backends, "fp16": run.precision == "fp16",
                  **asdict(run)},
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

    from .backends import check_backends, check_device
    from .errors import ModelSourceError
    from .sources import SourceRequest, load_models

    job.validate()
    backends = check_backends(job.resolved_backends(), remote=job.target is not None, device=job.device,
                              precision=job.precision, batch=job.batch)
    if job.target is None:
        check_device(job.device, backends)  # no GPU here: said before any model is built or exported
    shape = [job.batch, *_input_shape(job)]
    if job.target is not None:  # reachability, Python and runtimes first: no minutes of exporting before "host down"
        from .remote import preflight

        if job.progress:
            print(f"checking {job.target.host}: ssh, {job.target.python}, runtimes for {', '.join(backends)}",
                  file=sys.stderr)
        preflight(job.target, backends, job.device)
    round_to = job.resolved_round_to()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(job.seed))
    req = SourceRequest(x=x, base=job.base, checkpoint=job.checkpoint, prune_ratio=job.prune_ratio,
                        criterion=job.criterion, round_to=round_to, num_classes=job.num_classes, seed=job.seed,
                        selection=job.selection, target_macs=job.target_macs,
                        quiet=not job.progress)
    entries = load_models(job.models, req)
    in_process = [b for b in backends if backend_record(b).local_only]
    if in_process and any(e.module is None for e in entries):
        raise ModelSourceError(f"an .onnx file cannot be timed with --backend {in_process[0]}: use --backend "
                               "onnxruntime")
    run = RunSettings(device=job.device, precision=job.precision, channels_last=job.channels_last,
                      cuda_graphs=job.cuda_graphs)
    result = time_entries(entries, backends, x, threads=job.threads, warmup=job.warmup, runs=job.runs,
                          time_budget_s=job.time_budget_s, run=run, target=job.target, progress=job.progress)
    result["settings"].update(batch=job.batch, seed=job.seed, round_to=round_to, round_to_requested=job.round_to,
                              **job.extra)
    return result
