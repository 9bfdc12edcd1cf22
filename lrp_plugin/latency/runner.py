"""The device-side half of the latency tool, as ONE self-contained file.

Why one file with no package imports: remote mode copies exactly this file next to the exported
models and runs ``python runner.py job.json`` on the device, which needs only numpy plus
onnxruntime (or torch). Local mode imports the same functions, so local and remote results are
measured by the same code and have the same shape.

Every backend is one ``Backend`` record in ``BACKENDS`` (what it runs, what the timing machine needs,
its devices and precisions, its loader, the install hint, the ``round_to`` that pays on it): the host
side (``backends.py``, ``measure.py``, ``remote.py``, ``api.py``) reads the records and never compares
backend names, so a backend is added with one ``register_backend`` call here.

A job is JSON: ``{"models": [{"name", "onnx", "torchscript", "ncnn_param", "ncnn_bin"}], "backends": [...],
"input_shape": [...], "threads", "warmup", "runs", "time_budget_s", "reference", "device", "precision",
"channels_last", "cuda_graphs"}``. The result JSON goes to stdout (or ``--out``); progress goes to stderr.
On CUDA each run is timed with CUDA events (the GPU's own clock, synchronized after every run).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

SCHEMA = "lrp-latency/1"
TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec",)  # JetPack puts trtexec here, not on PATH
PRECISIONS = ("fp32", "fp16", "bf16")


class RunnerError(Exception):
    """A failure on the device with a message meant for the user (the host maps it to an LRPError)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# ----------------------------------------------------------------------------------------------- stats


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: list[float]) -> dict[str, float]:
    """mean/std/median/p10/p90/p99/min/max of ``values`` (same unit in, same unit out)."""
    vals = sorted(float(v) for v in values)
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": std, "median": _percentile(vals, 50), "p10": _percentile(vals, 10),
            "p90": _percentile(vals, 90), "p99": _percentile(vals, 99), "min": vals[0], "max": vals[-1]}


def latency_stats(seconds: list[float], batch: int) -> dict[str, float]:
    """Per-model latency stats in ms plus throughput (samples/s at the median)."""
    s = summarize([t * 1000.0 for t in seconds])
    out = {f"{k}_ms": v for k, v in s.items() if k != "n"}
    out["runs"] = s["n"]
    out["throughput_per_s"] = batch * 1000.0 / s["median"] if s["median"] > 0 else float("inf")
    return out


def ratio_stats(times: dict[str, list[float]], reference: str) -> dict[str, dict[str, float]]:
    """Per-run ratio model/reference from the SAME interleaved rounds, and its spread.

    Round i's ratio is ``t_model[i] / t_ref[i]``; both were timed back to back, so drift (clock,
    temperature, other load) hits both. ``of_medians`` is median(model) / median(reference).
    """
    ref = times[reference]
    out = {}
    for name, vals in times.items():
        if name == reference:
            continue
        per_run = [a / b for a, b in zip(vals, ref) if b > 0]
        s = summarize(per_run)
        s["of_medians"] = summarize(vals)["median"] / summarize(ref)["median"]
        out[name] = s
    return out


# ----------------------------------------------------------------------------------------------- timing


def wall_clock(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes on this process's clock (CPU runtimes return when done)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cuda_clock() -> Callable[[Callable[[], Any]], float]:
    """A clock for CUDA work: events recorded around the call on the current stream, synchronized after it,
    so each run is the GPU's time from its first launch to its last kernel (launch gaps included)."""
    torch = _import("torch", "torch")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()

    def clock(fn: Callable[[], Any]) -> float:
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    return clock


def interleave(fns: dict[str, Callable[[], Any]], *, warmup: int, runs: int, time_budget_s: float | None = None,
               progress: Callable[[int, int], None] | None = None,
               clock: Callable[[Callable[[], Any]], float] = wall_clock) -> dict[str, list[float]]:
    """Time every callable once per round, rotating the order each round, until ``runs`` rounds or the budget.

    Interleaving (rather than all runs of A, then all of B) means slow drift affects all models
    alike; rotating the order removes the advantage of going first after another model's run.
    With a time budget, ``runs`` is the cap and at least 3 rounds are always done. ``clock(fn)``
    runs ``fn`` once and says how long it took (``cuda_clock()`` for GPU work); warm-up runs use it too.
    """
    names = list(fns)
    for _ in range(max(0, warmup)):
        for name in names:
            clock(fns[name])
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for i in range(runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            times[name].append(clock(fns[name]))
        if progress is not None:
            progress(i + 1, runs)
        if time_budget_s is not None and i >= 2 and time.perf_counter() - start >= time_budget_s:
            break
    return times


def _progress_printer(label: str, enabled: bool) -> Callable[[int, int], None] | None:
    """A stderr progress line (updated at most ~4 times a second) so long runs visibly move."""
    if not enabled:
        return None
    state = {"last": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - state["last"] > 0.25:
            state["last"] = now
            end = "\n" if done == total else ""
            sys.stderr.write(f"\r  {label}: round {done}/{total}{end}")
            sys.stderr.flush()
    return show


# ----------------------------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Timing:
    """The job's settings every loader gets: input shape, threads, and where and how PyTorch runs."""

    shape: list
    threads: int
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graphs: bool = False


@dataclass(frozen=True)
class Backend:
    """One runtime the tool times with; everything that differs between backends is here.

    ``artifact`` is what it runs: ``"module"`` (the PyTorch module itself, so it times only in the
    process that built it: local only), ``"onnx"``, ``"torchscript"`` or ``"ncnn"`` (exported and
    checked on the host, copied to a device). ``load(backend, model, timing)`` prepares one model of a
    job for timing (None when that model has no such artifact); a backend whose own tool times each
    model (``trtexec``) has ``own_loop`` instead. ``precisions`` per device; the first device is the
    default. ``round_to_auto`` maps (device, precision) to the channel multiple measured to pay there
    (``benchmarks/round_to_study.py``); missing means 1, i.e. channel counts as pruned.
    """

    name: str
    artifact: str
    needs: tuple  # Python modules (or "trtexec") the timing machine needs
    hint: str  # how to install them
    load: Callable[..., Any] | None = None
    precisions: Mapping[str, tuple] = field(default_factory=lambda: {"cpu": ("fp32",)})
    providers: tuple = ()  # onnxruntime execution providers, in priority order
    converter: str | None = None  # Python module the host needs to make the artifact
    batch_one: bool = False
    own_loop: bool = False
    round_to_auto: Mapping[tuple, int] = field(default_factory=dict)

    @property
    def devices(self) -> tuple:
        return tuple(self.precisions)

    @property
    def local_only(self) -> bool:
        return self.artifact == "module"


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend, *, force: bool = False) -> Backend:
    """Add a backend; a name in use is refused unless ``force``."""
    if backend.name in BACKENDS and not force:
        raise ValueError(f"a latency backend named {backend.name!r} exists; pass force=True to replace it")
    BACKENDS[backend.name] = backend
    return backend


def _import(module: str, backend: str):
    try:
        return __import__(module)
    except ImportError as exc:
        known = BACKENDS.get(backend)
        raise RunnerError("module_missing", f"{module} is not importable by {sys.executable} ({exc}); the "
                          f"{backend!r} backend needs it: {known.hint if known else 'pip install ' + module}"
                          ) from exc


def _make_input(shape: list[int], seed: int = 0):
    np = _import("numpy", "numpy")
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ort_session(path: str, backend: str, threads: int):
    """An ONNX Runtime session with ``threads`` intra-op threads and the backend's providers (checked)."""
    ort = _import("onnxruntime", backend)
    wanted = list(BACKENDS[backend].providers)
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise RunnerError("runtime_missing", f"backend {backend!r} needs {wanted[0]}, but this onnxruntime "
                          f"{ort.__version__} offers only {available}: {BACKENDS[backend].hint}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=[p for p in wanted if p in available])


def load_onnxruntime(backend: Backend, model: dict, timing: Timing):
    """An ONNX Runtime session on the backend's providers, checked with one run."""
    path = model.get("onnx")
    if not path:
        return None
    sess = ort_session(path, backend.name, timing.threads)
    x = _make_input(timing.shape)
    feed = {sess.get_inputs()[0].name: x}
    try:
        sess.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidArgument, Fail, ...)
        declared = [d if isinstance(d, int) else str(d) for d in sess.get_inputs()[0].shape]
        raise RunnerError("bad_input", f"{os.path.basename(path)} rejects input shape {timing.shape} (it declares "
                          f"{declared}): {str(exc).splitlines()[0][:300]}") from exc
    return (lambda: sess.run(None, feed)), {"providers": sess.get_providers()}


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_callable(module: Any, timing: Timing, label: str):
    """One inference-mode forward of ``module`` (changed in place: device, dtype, memory format) on an
    input made here; with ``timing.cuda_graphs`` the forward is captured once and replayed."""
    torch = _import("torch", "torch")
    torch.set_num_threads(timing.threads)
    if timing.device == "cuda" and not torch.cuda.is_available():
        raise RunnerError("runtime_missing", f"--device cuda, but torch {torch.__version__} here finds no CUDA "
                          f"GPU (torch.cuda.is_available() is False; built for CUDA {torch.version.cuda}): install "
                          "a CUDA build of PyTorch (on a Jetson: JetPack's PyTorch wheel) or time on --device cpu")
    dtype = getattr(torch, _DTYPES[timing.precision])
    fmt = torch.channels_last if timing.channels_last else torch.contiguous_format
    module = module.to(device=timing.device, dtype=dtype).eval()
    if timing.channels_last:
        module = module.to(memory_format=fmt)
    x = torch.from_numpy(_make_input(timing.shape)).to(device=timing.device, dtype=dtype)
    x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x

    def call():
        with torch.inference_mode():
            return module(x)
    try:
        call()
    except Exception as exc:  # TorchScript raises torch.jit.Error / RuntimeError
        raise RunnerError("bad_input", f"{label} rejects input shape {timing.shape} as {timing.precision} on "
                          f"{timing.device}: {str(exc).strip().splitlines()[-1][:300]}") from exc
    info: dict[str, Any] = {"device": timing.device, "precision": timing.precision,
                            "channels_last": timing.channels_last, "cuda_graphs": timing.cuda_graphs}
    if timing.device == "cuda":
        info.update(gpu_facts(torch))
        if timing.cuda_graphs:
            call = _cuda_graph(call, torch)
    return call, info


def _cuda_graph(call: Callable[[], Any], torch: Any) -> Callable[[], Any]:
    """``call`` captured as a CUDA graph (after warm-up runs on a side stream, as capture requires)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    torch.cuda.synchronize()
    return graph.replay


def gpu_facts(torch: Any) -> dict[str, Any]:
    """The GPU as PyTorch sees it, and the settings that change its speed and numbers."""
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    tf32 = conv.fp32_precision == "tf32" if hasattr(conv, "fp32_precision") else bool(cudnn.allow_tf32)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gb": round(props.total_memory / 2 ** 30, 1), "cuda": torch.version.cuda,
            "cudnn": cudnn.version(), "cudnn_benchmark": bool(cudnn.benchmark), "cudnn_conv_tf32": tf32}


def load_torchscript(backend: Backend, model: dict, timing: Timing):
    path = model.get("torchscript")
    if not path:
        return None
    torch = _import("torch", backend.name)
    import warnings

    with warnings.catch_warnings():  # torch.jit is deprecated upstream, yet it is what a device can load alone
        warnings.simplefilter("ignore")
        module = torch.jit.load(path, map_location="cpu")
    return torch_callable(module, timing, os.path.basename(path))


def load_module(backend: Backend, model: dict, timing: Timing):
    """The PyTorch module itself (local runs only: the job holds the object); a copy is moved, never the caller's."""
    module = model.get("module")
    if module is None:
        return None
    import copy

    return torch_callable(copy.deepcopy(module), timing, model["name"])


def ncnn_net(param: str, binfile: str, threads: int):
    """An ncnn Net on the CPU with ``threads`` threads (options must be set before loading)."""
    ncnn = _import("ncnn", "ncnn")
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False  # CPU latency, like the other CPU backends
    if net.load_param(param) != 0 or net.load_model(binfile) != 0:
        raise RunnerError("bad_job", f"ncnn could not load {os.path.basename(param)} / {os.path.basename(binfile)}: "
                          "re-export with the same ncnn/pnnx versions (pip install -U ncnn pnnx)")
    return net


def ncnn_forward(net, x) -> list:
    """One forward of an ncnn Net on ``x`` (N=1, C, H, W): every output blob as a numpy array, in order."""
    ncnn = _import("ncnn", "ncnn")
    np = _import("numpy", "ncnn")
    ex = net.create_extractor()
    ex.input(net.input_names()[0], ncnn.Mat(np.ascontiguousarray(x[0])))
    outs = []
    for name in net.output_names():
        ret, mat = ex.extract(name)
        if ret != 0:
            raise RunnerError("bad_input", f"ncnn could not compute output {name!r} (error {ret})")
        outs.append(np.array(mat))
    return outs


def load_ncnn(backend: Backend, model: dict, timing: Timing):
    param, binfile, shape = model.get("ncnn_param"), model.get("ncnn_bin"), timing.shape
    if not param:
        return None
    if int(shape[0]) != 1:  # ncnn blobs are C,H,W: one image per forward
        raise RunnerError("bad_input", f"ncnn times batch 1 only, got input shape {shape}: use --batch 1")
    net = ncnn_net(param, binfile, timing.threads)
    x = _make_input(shape)
    try:
        ncnn_forward(net, x)
    except RunnerError:
        raise
    except Exception as exc:  # the binding raises plain RuntimeError/ValueError on bad blobs
        raise RunnerError("bad_input", f"{os.path.basename(param)} rejects input shape {shape}: {exc}") from exc
    # ncnn's defaults (used where the CPU supports them: fp16 storage/arithmetic on ARMv8.2, e.g. a Pi 5):
    # recorded, because the numerical check ran on the host in fp32
    opt = net.opt
    return (lambda: ncnn_forward(net, x)), {"ncnn_threads": int(opt.num_threads), "ncnn_options": {
        k: bool(getattr(opt, k)) for k in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed",
                                           "use_bf16_storage") if hasattr(opt, k)}}


_TORCH_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
register_backend(Backend("torch", "module", ("torch",), "pip install torch", load_module,
                         precisions=_TORCH_PRECISIONS))
register_backend(Backend("torchscript", "torchscript", ("numpy", "torch"),
                         "pip install torch numpy (on a Jetson: JetPack's PyTorch wheel)", load_torchscript,
                         precisions=_TORCH_PRECISIONS))
register_backend(Backend("onnxruntime", "onnx", ("numpy", "onnxruntime"), "pip install onnxruntime numpy",
                         load_onnxruntime, providers=("CPUExecutionProvider",),
                         round_to_auto={("cpu", "fp32"): 16}))  # benchmarks/results/round_to_study.json
register_backend(Backend("ort-cuda", "onnx", ("numpy", "onnxruntime"), "pip install onnxruntime-gpu numpy",
                         load_onnxruntime, precisions={"cuda": ("fp32",)},
                         providers=("CUDAExecutionProvider", "CPUExecutionProvider")))
register_backend(Backend("ort-tensorrt", "onnx", ("numpy", "onnxruntime"),
                         "install onnxruntime-gpu built with TensorRT (on a Jetson: the JetPack wheel)",
                         load_onnxruntime, precisions={"cuda": ("fp32",)},
                         providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")))
register_backend(Backend("ncnn", "ncnn", ("numpy", "ncnn"), "pip install ncnn numpy", load_ncnn,
                         converter="pnnx", batch_one=True))
register_backend(Backend("tensorrt", "onnx", ("trtexec",),
                         "install TensorRT (on a Jetson it comes with JetPack: /usr/src/tensorrt/bin/trtexec)",
                         precisions={"cuda": ("fp32", "fp16")}, own_loop=True))


# ----------------------------------------------------------------------------------------------- TensorRT

TRT_METRICS = ("Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency")
_TRT_KEYS = {"min": "min_ms", "max": "max_ms", "mean": "mean_ms", "median": "median_ms",
             "percentile(90%)": "p90_ms", "percentile(95%)": "p95_ms", "percentile(99%)": "p99_ms"}


def parse_trtexec(text: str) -> dict[str, Any]:
    """The performance summary of a trtexec log: per metric min/max/mean/median/percentiles in ms,
    throughput (qps), the TensorRT version and the precision flags seen on its command line.

    Handles both layouts seen in the wild: ``min = 1 ms, max = 2 ms, ...`` and TensorRT 8.x's
    ``max 6.2 ms, mean 5.9 ms`` (no ``=``). Raises ValueError when there is no summary.
    """
    import re

    out: dict[str, Any] = {"tensorrt_version": None, "throughput_qps": None, "metrics": {}}
    m = re.search(r"TensorRT version: ([0-9][0-9.]*)", text)
    if m:
        out["tensorrt_version"] = m.group(1)
    else:
        m = re.search(r"\[TensorRT v(\d+)\]", text)  # "&&&& PASSED TensorRT.trtexec [TensorRT v8400]"
        if m:
            n = int(m.group(1))  # NV_TENSORRT_VERSION: 8400 -> 8.4.0 (before 10), 100200 -> 10.2.0
            major, minor = (n // 10000, n // 100 % 100) if n >= 100000 else (n // 1000, n // 100 % 10)
            out["tensorrt_version"] = f"{major}.{minor}.{n % 100}"
    summary = text.split("=== Performance summary ===", 1)
    if len(summary) < 2:
        raise ValueError("no '=== Performance summary ===' in the trtexec output")
    body = summary[1]
    m = re.search(r"Throughput:\s*([0-9.eE+-]+)\s*qps", body)
    if m:
        out["throughput_qps"] = float(m.group(1))
    for metric in TRT_METRICS:
        m = re.search(rf"(?m)(?:^|\]\s|^\s*){re.escape(metric)}: (.+?)$", body)  # not "H2D Latency" for "Latency"
        if not m:
            continue
        values = {}
        for key, value in re.findall(r"(min|max|mean|median|percentile\(\d+%\))\s*=?\s*([0-9.eE+-]+)\s*ms",
                                     m.group(1)):
            if key in _TRT_KEYS:
                values[_TRT_KEYS[key]] = float(value)
        out["metrics"][metric] = values
    if "Latency" not in out["metrics"] or "median_ms" not in out["metrics"]["Latency"]:
        raise ValueError("the trtexec performance summary has no 'Latency: ... median' line")
    m = re.search(r"&&&& RUNNING TensorRT\.trtexec[^\n]*#([^\n]*)", text)
    cmdline = m.group(1) if m else ""
    # from the flags; an engine loaded with --loadEngine was built elsewhere, its precision is unknown here
    out["precision"] = ("int8" if "--int8" in cmdline else "fp16" if "--fp16" in cmdline else
                        "fp32" if "--onnx" in cmdline else None)
    return out


def trtexec_path() -> str | None:
    """TensorRT's trtexec: on PATH, or where JetPack installs it."""
    found = shutil.which("trtexec")
    if found:
        return found
    return next((p for p in TRTEXEC_PLACES if os.access(p, os.X_OK)), None)


def trtexec_run(onnx: str, *, warmup: int, runs: int, fp16: bool, timeout_s: float = 1800) -> dict[str, Any]:
    """Build an engine from ``onnx`` and time it with trtexec; the parsed summary (+ per-run times)."""
    exe = trtexec_path()
    if exe is None:
        raise RunnerError("runtime_missing", f"trtexec is not found on PATH nor in {TRTEXEC_PLACES}: "
                          f"{BACKENDS['tensorrt'].hint}")
    times = onnx + ".times.json"
    # --warmUp is in ms; --duration=0 makes --iterations the exact count; --avgRuns=1 keeps every run
    args = [exe, f"--onnx={onnx}", f"--warmUp={max(0, warmup) * 100}", f"--iterations={runs}", "--duration=0",
            "--avgRuns=1", f"--exportTimes={times}", *(["--fp16"] if fp16 else [])]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RunnerError("bad_job", f"trtexec on {os.path.basename(onnx)} took more than {timeout_s:.0f} s") from exc
    text = (done.stdout or "") + "\n" + (done.stderr or "")
    if done.returncode != 0:
        tail = [ln for ln in text.splitlines() if "[E]" in ln][-3:] or text.strip().splitlines()[-3:]
        raise RunnerError("bad_input", f"trtexec failed on {os.path.basename(onnx)} (exit {done.returncode}): "
                          + " | ".join(tail))
    try:
        parsed = parse_trtexec(text)
    except ValueError as exc:
        raise RunnerError("bad_job", f"trtexec printed no performance summary for {os.path.basename(onnx)}: {exc}"
                          ) from exc
    parsed["precision"] = "fp16" if fp16 else "fp32"
    try:
        with open(times) as fh:  # one record per inference; "latencyMs" is the host latency
            parsed["times_s"] = [float(r["latencyMs"]) / 1000.0 for r in json.load(fh) if "latencyMs" in r]
    except (OSError, ValueError, TypeError, KeyError):
        parsed["times_s"] = []
    return parsed


def time_tensorrt(models: list[dict], *, shape: list[int], warmup: int, runs: int, reference: str, fp16: bool,
                  progress: bool) -> dict[str, Any]:
    """trtexec per model (one after the other: trtexec owns the loop, so runs are not interleaved)."""
    parsed = {}
    for m in models:
        if not m.get("onnx"):
            continue
        if progress:
            sys.stderr.write(f"  tensorrt: trtexec on {m['name']} ({'fp16' if fp16 else 'fp32'})\n")
        parsed[m["name"]] = trtexec_run(m["onnx"], warmup=warmup, runs=runs, fp16=fp16)
    if reference not in parsed:
        raise RunnerError("bad_job", f"reference model {reference!r} is not available on backend 'tensorrt'")
    return trt_block(parsed, shape=shape, warmup=warmup, reference=reference)


def trt_block(parsed: dict[str, dict[str, Any]], *, shape: list[int], warmup: int, reference: str) -> dict[str, Any]:
    """The backend result block from parsed trtexec runs: per-run stats when the times were exported,
    else the summary's figures (keys it does not print are None); ratios of the medians either way."""
    batch = int(shape[0])
    models, times = {}, {}
    for name, p in parsed.items():
        if len(p.get("times_s") or []) >= 1:
            models[name] = latency_stats(p["times_s"], batch)
            times[name] = p["times_s"]
        else:
            lat = p["metrics"]["Latency"]
            models[name] = {k: lat.get(k) for k in ("mean_ms", "std_ms", "median_ms", "p10_ms", "p90_ms", "p99_ms",
                                                     "min_ms", "max_ms")}
            models[name]["runs"] = None
            models[name]["throughput_per_s"] = batch * 1000.0 / lat["median_ms"] if lat["median_ms"] else None
        models[name]["gpu_compute"] = p["metrics"].get("GPU Compute Time")
    ref_median = models[reference]["median_ms"]
    ratios = {}
    for name, s in models.items():
        if name == reference:
            continue
        if name in times and reference in times and len(times[name]) == len(times[reference]):
            ratios[name] = ratio_stats({reference: times[reference], name: times[name]}, reference)[name]
        else:
            r = s["median_ms"] / ref_median
            ratios[name] = {"n": None, "mean": r, "std": None, "median": r, "p10": r, "p90": r, "p99": r, "min": r,
                            "max": r, "of_medians": r}
    first = next(iter(parsed.values()))
    return {"backend": "tensorrt", "threads": None, "warmup": warmup,
            "runs": models[reference]["runs"], "interleaved": False,
            "tensorrt_version": first.get("tensorrt_version"), "precision": first.get("precision"),
            "models": models, "ratios": ratios,
            "times_ms": {n: [v * 1000 for v in t] for n, t in times.items()}}


DISTRIBUTIONS = {"numpy": ("numpy",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                                                    "onnxruntime-directml"), "torch": ("torch",), "ncnn": ("ncnn",)}


def runtime_versions() -> dict[str, str | None]:
    """Versions of the runtimes installed here (None when missing), recorded with every result.

    Read from package metadata, not by importing: importing torch takes seconds on a Pi.
    """
    import importlib.metadata as md
    import importlib.util

    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod, dists in DISTRIBUTIONS.items():
        out[mod] = None
        if importlib.util.find_spec(mod) is None:
            continue
        for dist in dists:
            try:
                out[mod] = md.version(dist)
                break
            except md.PackageNotFoundError:
                continue
        else:
            out[mod] = "unknown"  # importable, but installed without metadata (e.g. built from source)
    out["trtexec"] = trtexec_path()
    return out


# ----------------------------------------------------------------------------------------------- device facts


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _cmd(args: list[str]) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or done.stderr).strip() or None


def _cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_facts() -> dict[str, Any]:
    """CPU, cores, OS, runtimes; Pi governor/temperature/throttling; Jetson power mode and clocks."""
    facts: dict[str, Any] = {
        "hostname": platform.node(), "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "board": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "runtimes": runtime_versions(),
    }
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    facts["temperature_c"] = int(temp) / 1000.0 if temp and temp.lstrip("-").isdigit() else None
    throttled = _cmd(["vcgencmd", "get_throttled"])  # Raspberry Pi: "throttled=0x0"
    facts["throttled"] = throttled.split("=", 1)[-1] if throttled else None
    nvp = _cmd(["nvpmodel", "-q"])  # Jetson power mode
    facts["nvpmodel"] = nvp
    if nvp is not None or os.path.exists("/etc/nv_tegra_release"):
        facts["jetson_clocks"] = _cmd(["jetson_clocks", "--show"])
        cur, mx = (_read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"),
                   _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq"))
        mn = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq")
        facts["clocks_locked"] = bool(mn and mx and mn == mx) if mn and mx else None
        facts["cpu_freq_khz"] = {"cur": cur, "min": mn, "max": mx}
        facts["gpu_freq_hz"] = jetson_gpu_clocks()
    facts["gpus"] = nvidia_smi_gpus()
    return facts


NVIDIA_SMI_FIELDS = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "clocks.mem",
                     "temperature.gpu", "power.draw", "power.limit", "pstate")


def nvidia_smi_gpus() -> list[dict[str, str]] | None:
    """Each NVIDIA GPU as nvidia-smi reports it (clocks in MHz, temperature in C, power in W); None without it."""
    out = _cmd(["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits"])
    if not out:
        return None
    gpus = []
    for line in out.splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) == len(NVIDIA_SMI_FIELDS):
            gpus.append(dict(zip(NVIDIA_SMI_FIELDS, values)))
    return gpus or None


def jetson_gpu_clocks() -> dict[str, dict[str, str | None]] | None:
    """A Jetson's GPU clocks (devfreq: 57000000.gpu on a Nano, 17000000.gv11b/.ga10b on Xavier/Orin), in Hz."""
    root = "/sys/class/devfreq"
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return None
    out = {}
    for name in names:
        if any(tag in name for tag in ("gpu", "gv11b", "ga10b", "gp10b", "gm20b")):
            out[name] = {k: _read(f"{root}/{name}/{k}") for k in ("cur_freq", "min_freq", "max_freq", "governor")}
    return out or None


def device_warnings(before: dict[str, Any], after: dict[str, Any] | None = None) -> list[str]:
    """Reasons not to trust the numbers as they stand: throttling, a non-performance governor, unlocked clocks."""
    warns = []
    facts = after or before
    gov = facts.get("governor")
    if gov is not None and gov != "performance":
        warns.append(f"CPU governor is {gov!r}, not 'performance': clocks may change during the runs "
                     "(echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)")
    for label, f in (("before", before), ("after", after)):
        flag = (f or {}).get("throttled")
        if flag and flag not in ("0x0", "0"):
            warns.append(f"vcgencmd get_throttled={flag} {label} the runs: the Pi was under-volted or throttled "
                         "(use the official power supply and a heatsink/fan)")
    if facts.get("clocks_locked") is False:
        warns.append("Jetson clocks are not locked: run `sudo nvpmodel -m 0 && sudo jetson_clocks` first")
    temp = facts.get("temperature_c")
    if temp is not None and temp >= 80:
        warns.append(f"SoC temperature {temp:.0f} C: near the throttling point, expect slower runs")
    return warns


# ----------------------------------------------------------------------------------------------- the job


def time_backend(models: list[dict], backend: str, *, timing: Timing, warmup: int, runs: int,
                 time_budget_s: float | None, reference: str, progress: bool) -> dict[str, Any]:
    """Load every model for ``backend``, then time them interleaved; stats per model and ratios to ``reference``."""
    spec = BACKENDS.get(backend)
    if spec is None:
        raise RunnerError("bad_job", f"unknown backend {backend!r} on the device: use one of {sorted(BACKENDS)}")
    if spec.own_loop:
        return time_tensorrt(models, shape=timing.shape, warmup=warmup, runs=runs, reference=reference,
                             fp16=timing.precision == "fp16", progress=progress)
    with cudnn_autotuned(timing.device):
        fns, info = {}, {}
        for m in models:
            loaded = spec.load(spec, m, timing)
            if loaded is not None:
                fns[m["name"]], info[m["name"]] = loaded
        clock = cuda_clock() if timing.device == "cuda" else wall_clock
        return finish_backend(fns, backend, shape=timing.shape, threads=timing.threads, warmup=warmup, runs=runs,
                              time_budget_s=time_budget_s, reference=reference, progress=progress,
                              extra=next(iter(info.values()), {}), clock=clock)


@contextlib.contextmanager
def cudnn_autotuned(device: str):
    """On CUDA, let cuDNN time its algorithms per layer shape during the warm-up (``cudnn.benchmark``, as GPU
    inference is usually run); pruned layers have other shapes than the original's. Restored after."""
    if device != "cuda":
        yield
        return
    cudnn = _import("torch", "torch").backends.cudnn
    before = cudnn.benchmark
    cudnn.benchmark = True
    try:
        yield
    finally:
        cudnn.benchmark = before


def finish_backend(fns: dict[str, Callable[[], Any]], backend: str, *, shape: list[int], threads: int, warmup: int,
                   runs: int, time_budget_s: float | None, reference: str, progress: bool,
                   extra: dict | None = None, clock: Callable[[Callable[[], Any]], float] = wall_clock
                   ) -> dict[str, Any]:
    """Interleave ``fns`` and build the backend's result block (``extra``: what the runtime says about itself)."""
    if reference not in fns:
        raise RunnerError("bad_job", f"reference model {reference!r} is not available on backend {backend!r}")
    times = interleave(fns, warmup=warmup, runs=runs, time_budget_s=time_budget_s,
                       progress=_progress_printer(backend, progress), clock=clock)
    batch = int(shape[0])
    return {"backend": backend, "threads": threads, "warmup": warmup, "runs": len(times[reference]),
            **(extra or {}),
            "models": {n: latency_stats(t, batch) for n, t in times.items()},
            "ratios": ratio_stats(times, reference), "times_ms": {n: [v * 1000 for v in t] for n, t in times.items()}}


def job_timing(job: dict[str, Any]) -> Timing:
    """The loaders' settings from a job dict (None threads: all of this machine's cores)."""
    return Timing(shape=list(job["input_shape"]), threads=int(job.get("threads") or os.cpu_count() or 1),
                  device=job.get("device") or "cpu", precision=job.get("precision") or "fp32",
                  channels_last=bool(job.get("channels_last")), cuda_graphs=bool(job.get("cuda_graphs")))


def run_device_job(job: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """The device side of a run (``python runner.py job.json``): device facts before/after, each backend in
    turn, warnings. The host's ``lrp_plugin.latency.api.run_job`` builds and exports; this only times."""
    before = device_facts()
    timing = job_timing(job)
    backends = {}
    for backend in job["backends"]:
        backends[backend] = time_backend(job["models"], backend, timing=timing, warmup=job["warmup"],
                                         runs=job["runs"], time_budget_s=job.get("time_budget_s"),
                                         reference=job["reference"], progress=progress)
    after = device_facts()
    return {"schema": SCHEMA, "device": before, "device_after": {k: after.get(k) for k in
            ("temperature_c", "throttled", "governor")}, "warnings": device_warnings(before, after),
            "backends": backends}


def main(argv: list[str] | None = None) -> int:
    """``python runner.py job.json [--out result.json] [--quiet]``; errors as JSON ``{"error": {...}}``, exit 3."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = "--quiet" in argv
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    paths = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--out")]
    try:
        if not paths:
            raise RunnerError("bad_job", "usage: python runner.py job.json [--out result.json] [--quiet]")
        base = os.path.dirname(os.path.abspath(paths[0]))
        with open(paths[0]) as fh:
            job = json.load(fh)
        for m in job["models"]:  # paths in a job are relative to the job file (the remote temp dir)
            for key in ("onnx", "torchscript", "ncnn_param", "ncnn_bin"):
                if m.get(key) and not os.path.isabs(m[key]):
                    m[key] = os.path.join(base, m[key])
        result = run_device_job(job, progress=not quiet)
        code = 0
    except RunnerError as exc:
        result, code = {"schema": SCHEMA, "error": {"kind": exc.kind, "message": str(exc)}}, 3
    text = json.dumps(result)
    if out:
        with open(out, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
