"""The device-side half of the latency tool, as ONE self-contained file.

Why one file with no package imports: remote mode copies exactly this file next to the exported
models and runs ``python runner.py job.json`` on the device, which needs only numpy plus
onnxruntime (or torch). Local mode imports the same functions, so local and remote results are
measured by the same code and have the same shape.

A job is JSON: ``{"models": [{"name", "onnx", "torchscript", "ncnn_param", "ncnn_bin"}], "backends": [...],
"input_shape": [...], "threads", "warmup", "runs", "time_budget_s", "reference", "fp16"}``. The result
JSON goes to stdout (or ``--out``); progress goes to stderr. ``ncnn`` needs only ``pip install ncnn``
on the device; ``tensorrt`` drives the device's own ``trtexec`` (JetPack) on the ONNX file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Callable

SCHEMA = "lrp-latency/1"
ORT_BACKENDS = {  # backend name -> onnxruntime execution providers, in priority order
    "onnxruntime": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
RUNTIME_HINT = {"onnxruntime": "pip install onnxruntime numpy", "ort-cuda": "pip install onnxruntime-gpu numpy",
                "ort-tensorrt": "install onnxruntime-gpu built with TensorRT (on a Jetson: the JetPack wheel)",
                "torch": "pip install torch numpy", "torchscript": "pip install torch numpy",
                "ncnn": "pip install ncnn numpy",
                "tensorrt": "install TensorRT (on a Jetson it comes with JetPack: /usr/src/tensorrt/bin/trtexec)"}
TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec",)  # JetPack puts trtexec here, not on PATH


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


def interleave(fns: dict[str, Callable[[], Any]], *, warmup: int, runs: int, time_budget_s: float | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """Time every callable once per round, rotating the order each round, until ``runs`` rounds or the budget.

    Interleaving (rather than all runs of A, then all of B) means slow drift affects all models
    alike; rotating the order removes the advantage of going first after another model's run.
    With a time budget, ``runs`` is the cap and at least 3 rounds are always done.
    """
    names = list(fns)
    for _ in range(max(0, warmup)):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for i in range(runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
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


def _import(module: str, backend: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise RunnerError("module_missing", f"{module} is not importable by {sys.executable} ({exc}); the "
                          f"{backend!r} backend needs it: {RUNTIME_HINT.get(backend, 'pip install ' + module)}"
                          ) from exc


def _make_input(shape: list[int], seed: int = 0):
    np = _import("numpy", "numpy")
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ort_session(path: str, backend: str, threads: int):
    """An ONNX Runtime session with ``threads`` intra-op threads and the backend's providers (checked)."""
    ort = _import("onnxruntime", backend)
    wanted = ORT_BACKENDS[backend]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise RunnerError("runtime_missing", f"backend {backend!r} needs {wanted[0]}, but this onnxruntime "
                          f"{ort.__version__} offers only {available}: {RUNTIME_HINT[backend]}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=[p for p in wanted if p in available])


def _ort_callable(path: str, backend: str, threads: int, shape: list[int]) -> tuple[Callable[[], Any], dict]:
    sess = ort_session(path, backend, threads)
    x = _make_input(shape)
    feed = {sess.get_inputs()[0].name: x}
    try:
        sess.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidArgument, Fail, ...)
        declared = [d if isinstance(d, int) else str(d) for d in sess.get_inputs()[0].shape]
        raise RunnerError("bad_input", f"{os.path.basename(path)} rejects input shape {shape} (it declares "
                          f"{declared}): {str(exc).splitlines()[0][:300]}") from exc
    return (lambda: sess.run(None, feed)), {"providers": sess.get_providers()}


def _torchscript_callable(path: str, threads: int, shape: list[int]) -> tuple[Callable[[], Any], dict]:
    torch = _import("torch", "torchscript")
    torch.set_num_threads(threads)
    import warnings

    with warnings.catch_warnings():  # torch.jit is deprecated upstream, yet it is what a device can load alone
        warnings.simplefilter("ignore")
        model = torch.jit.load(path, map_location="cpu").eval()
    x = torch.from_numpy(_make_input(shape))

    def call():
        with torch.inference_mode():
            return model(x)
    try:
        call()
    except Exception as exc:  # TorchScript raises torch.jit.Error / RuntimeError
        raise RunnerError("bad_input", f"{os.path.basename(path)} rejects input shape {shape}: "
                          f"{str(exc).strip().splitlines()[-1][:300]}") from exc
    return call, {}


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


def _ncnn_callable(param: str, binfile: str, threads: int, shape: list[int]) -> tuple[Callable[[], Any], dict]:
    if int(shape[0]) != 1:  # ncnn blobs are C,H,W: one image per forward
        raise RunnerError("bad_input", f"ncnn times batch 1 only, got input shape {shape}: use --batch 1")
    net = ncnn_net(param, binfile, threads)
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
                          f"{RUNTIME_HINT['tensorrt']}")
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
    return facts


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


def time_backend(models: list[dict], backend: str, *, shape: list[int], threads: int, warmup: int, runs: int,
                 time_budget_s: float | None, reference: str, progress: bool) -> dict[str, Any]:
    """Load every model for ``backend``, then time them interleaved; stats per model and ratios to ``reference``."""
    fns, info = {}, {}
    for m in models:
        if backend in ORT_BACKENDS:
            if not m.get("onnx"):
                continue
            fns[m["name"]], info[m["name"]] = _ort_callable(m["onnx"], backend, threads, shape)
        elif backend == "torchscript":
            if not m.get("torchscript"):
                continue
            fns[m["name"]], info[m["name"]] = _torchscript_callable(m["torchscript"], threads, shape)
        elif backend == "ncnn":
            if not m.get("ncnn_param"):
                continue
            fns[m["name"]], info[m["name"]] = _ncnn_callable(m["ncnn_param"], m["ncnn_bin"], threads, shape)
        else:
            raise RunnerError("bad_job", f"unknown backend {backend!r} on the device: use one of "
                              f"{sorted([*ORT_BACKENDS, 'torchscript', 'ncnn', 'tensorrt'])}")
    return finish_backend(fns, backend, shape=shape, threads=threads, warmup=warmup, runs=runs,
                          time_budget_s=time_budget_s, reference=reference, progress=progress,
                          extra=_backend_facts(backend, info))


def _backend_facts(backend: str, info: dict[str, dict]) -> dict[str, Any]:
    """What the runtime reports about itself (ORT's providers, ncnn's thread count) for the result block."""
    first = next(iter(info.values()), {})
    if backend == "ncnn":
        return {"ncnn_threads": first.get("ncnn_threads"), "ncnn_options": first.get("ncnn_options")}
    return {"providers": first.get("providers")}


def finish_backend(fns: dict[str, Callable[[], Any]], backend: str, *, shape: list[int], threads: int, warmup: int,
                   runs: int, time_budget_s: float | None, reference: str, progress: bool,
                   extra: dict | None = None) -> dict[str, Any]:
    """Interleave ``fns`` and build the backend's result block (shared by local eager and device runs)."""
    if reference not in fns:
        raise RunnerError("bad_job", f"reference model {reference!r} is not available on backend {backend!r}")
    times = interleave(fns, warmup=warmup, runs=runs, time_budget_s=time_budget_s,
                       progress=_progress_printer(backend, progress))
    batch = int(shape[0])
    return {"backend": backend, "threads": threads, "warmup": warmup, "runs": len(times[reference]),
            **(extra or {}),
            "models": {n: latency_stats(t, batch) for n, t in times.items()},
            "ratios": ratio_stats(times, reference), "times_ms": {n: [v * 1000 for v in t] for n, t in times.items()}}


def run_job(job: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Run a whole job: device facts before/after, each backend in turn, warnings."""
    before = device_facts()
    backends = {}
    threads = int(job.get("threads") or os.cpu_count() or 1)  # None: all of the device's cores
    for backend in job["backends"]:
        if backend == "tensorrt":
            backends[backend] = time_tensorrt(job["models"], shape=job["input_shape"], warmup=job["warmup"],
                                              runs=job["runs"], reference=job["reference"],
                                              fp16=bool(job.get("fp16")), progress=progress)
            continue
        backends[backend] = time_backend(job["models"], backend, shape=job["input_shape"], threads=threads,
                                         warmup=job["warmup"], runs=job["runs"],
                                         time_budget_s=job.get("time_budget_s"), reference=job["reference"],
                                         progress=progress)
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
        result = run_job(job, progress=not quiet)
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
