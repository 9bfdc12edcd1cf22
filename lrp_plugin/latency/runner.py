"""The device-side half of the latency tool, as ONE self-contained file.

Why one file with no package imports: remote mode copies exactly this file next to the exported
models and runs ``python runner.py job.json`` on the device, which needs only numpy plus
onnxruntime (or torch). Local mode imports the same functions, so local and remote results are
measured by the same code and have the same shape.

A job is JSON: ``{"models": [{"name", "onnx", "torchscript"}], "backends": [...], "input_shape": [...],
"threads", "warmup", "runs", "time_budget_s", "reference"}``. The result JSON goes to stdout (or
``--out``); progress goes to stderr.
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
TORCH_BACKENDS = ("torch", "torchscript")
RUNTIME_HINT = {"onnxruntime": "pip install onnxruntime numpy", "ort-cuda": "pip install onnxruntime-gpu numpy",
                "ort-tensorrt": "install onnxruntime-gpu built with TensorRT (on a Jetson: the JetPack wheel)",
                "torch": "pip install torch numpy", "torchscript": "pip install torch numpy"}


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
        raise RunnerError("runtime_missing", f"{module} is not importable by {sys.executable} ({exc}); the "
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


DISTRIBUTIONS = {"numpy": ("numpy",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                                                    "onnxruntime-directml"), "torch": ("torch",)}


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
    out["trtexec"] = shutil.which("trtexec")
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
        else:
            raise RunnerError("bad_job", f"unknown backend {backend!r} on the device: use one of "
                              f"{sorted([*ORT_BACKENDS, 'torchscript'])}")
    return finish_backend(fns, backend, shape=shape, threads=threads, warmup=warmup, runs=runs,
                          time_budget_s=time_budget_s, reference=reference, progress=progress,
                          extra={"providers": next(iter(info.values()), {}).get("providers")})


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
            for key in ("onnx", "torchscript"):
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
