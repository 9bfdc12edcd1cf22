"""Coverage benchmark: lrp's public API with defaults on the torchvision and timm model zoos.

Per model, in its own process under a wall-clock cap (on the lrp calls) and a memory cap:
random weights, randomized BatchNorm statistics, eval mode, a small input, then

    masks = lrp.compute_masks(model, x, "l1", 0.5); lrp.apply_masks(model, masks)
    result = lrp.reconstruct(model, x)

and an independent re-measurement (the report is not trusted): outputs of the masked model
vs ``result.model`` on a fresh input, parameter counts, and the caller's model untouched.
Outcomes: lossless / no-reduction (exact, but every masked channel was kept by the union rule
or skipped) / nothing-masked / refused (an lrp.LRPError) / crash / hang / oom /
silent-wrong, plus skipped (over the size limit) and build-error (the harness could not
build or run the model before any lrp call).

    PYTHONPATH=<dir holding lrp_plugin> python benchmarks/model_zoo.py [--only REGEX]
        [--source torchvision|timm|all] [--timeout 60] [--mem-gb 4] [--jobs 1]
        [--out benchmarks/results/model_zoo.json] [--markdown] [--no-run]

The JSON is rewritten (temp file + rename) after every model, so an interrupted run leaves
the models finished so far. ``--markdown`` prints the coverage table for the README;
with ``--no-run`` it reads an existing ``--out`` instead of running.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

DEFAULT_OUT = Path(__file__).parent / "results" / "model_zoo.json"
MAX_PARAMS = 150_000_000
REL_TOL = 1e-5
OUTCOMES = ("lossless", "no-reduction", "nothing-masked", "refused", "crash", "hang", "oom", "silent-wrong",
            "skipped", "build-error")
TP_PUBLISHED = ("Torch-Pruning's published benchmark: 77 of 85 torchvision models pruned without error "
                "(outputs unchecked)")

# One small representative per timm family; the label says what makes the family interesting.
TIMM_MODELS = {
    "resnet": "resnet18d",
    "senet (grouped + SE)": "seresnext26d_32x4d",
    "resnest (split-attention)": "resnest14d",
    "res2net (split/concat)": "res2net50_14w_8s",
    "sknet (selective kernel)": "skresnet18",
    "repvgg (reparameterizable)": "repvgg_a0",
    "mobileone (reparameterizable)": "mobileone_s0",
    "densenet (dense, pre-act BN)": "densenet121",
    "cspresnet (CSP)": "cspresnet50",
    "cspdarknet (CSP)": "cspdarknet53",
    "cs3darknet (CSP, chunk)": "cs3darknet_s",
    "dla": "dla34",
    "dpn (dual path, slices)": "dpn68",
    "ghostnet": "ghostnet_100",
    "ghostnetv2": "ghostnetv2_100",
    "hrnet (multi-branch)": "hrnet_w18_small",
    "inception": "inception_v3",
    "mobilenetv2": "mobilenetv2_050",
    "mobilenetv3": "mobilenetv3_small_100",
    "mobilenetv4": "mobilenetv4_conv_small",
    "efficientnet": "efficientnet_b0",
    "efficientnetv2": "efficientnetv2_rw_t",
    "regnet (grouped)": "regnety_002",
    "regnetz": "regnetz_b16",
    "rexnet": "rexnet_100",
    "selecsls": "selecsls42b",
    "tresnet (space-to-depth)": "tresnet_m",
    "vovnet (one-shot aggregation)": "ese_vovnet19b_dw",
    "xception": "xception41",
    "nfnet (no BN)": "nf_resnet26",
    "convnext (LayerNorm)": "convnext_atto",
    "mixnet (mixed kernels, split)": "mixnet_s",
    "mnasnet": "mnasnet_100",
    "fbnet": "fbnetc_100",
    "lcnet": "lcnet_050",
    "hardcorenas": "hardcorenas_a",
    "darknet": "darknet53",
    "gernet": "gernet_s",
    "resnetv2 (pre-activation)": "resnetv2_50",
    "bit (GroupNorm, StdConv)": "resnetv2_50x1_bit",
    "hgnetv2": "hgnetv2_b0",
    "repghost (reparameterizable)": "repghostnet_050",
    "rdnet (dense)": "rdnet_tiny",
    "gcnet (global context)": "gcresnet33ts",
    "ecanet": "eca_resnet33ts",
    "repvit": "repvit_m1",
    "fastvit (reparam + attention)": "fastvit_t8",
    "efficientvit": "efficientvit_b0",
    "mobilevit (conv + attention)": "mobilevit_xxs",
    "poolformer (GroupNorm)": "poolformer_s12",
    "inception_next": "inception_next_tiny",
    "starnet": "starnet_s050",
    "botnet (conv + attention)": "botnet26t_256",
}


# ----------------------------------------------------------------------------------------------
# Model list (parent side: no model is built here)
# ----------------------------------------------------------------------------------------------
def _tv_family(name: str, module: str) -> str:
    for prefix in ("resnext", "wide_resnet"):  # torchvision builds these in resnet.py
        if name.startswith(prefix):
            return prefix
    return module.rsplit(".", 1)[-1]


def list_specs(source: str, only: str | None) -> list[dict]:
    specs: list[dict] = []
    if source in ("torchvision", "all"):
        from torchvision import models
        for kind, mod in (("classification", models), ("segmentation", models.segmentation),
                          ("detection-backbone", models.detection)):
            for name in models.list_models(module=mod):
                meta = next(iter(models.get_model_weights(name))).meta
                min_size = max(meta.get("min_size", (1, 1)))
                family = _tv_family(name, models.get_model_builder(name).__module__)
                specs.append({"name": name, "source": "torchvision", "kind": kind,
                              "family": ("detection." if kind == "detection-backbone" else "") + family,
                              # the detector's count; the backbone is counted once built
                              "params_meta": None if kind == "detection-backbone" else meta.get("num_params"),
                              "sizes": _sizes(max(64, min_size), 224, 320)})
    if source in ("timm", "all"):
        import timm
        for family, name in TIMM_MODELS.items():
            cfg = timm.get_pretrained_cfg(name)
            native = cfg.input_size[-1] if cfg is not None else 224
            fixed = bool(cfg is not None and getattr(cfg, "fixed_input_size", False))
            specs.append({"name": name, "source": "timm", "kind": "classification", "family": family,
                          "params_meta": None, "sizes": [native] if fixed else _sizes(64, 128, native)})
    if only:
        specs = [s for s in specs if re.search(only, s["name"])]
    return specs


def _sizes(*sizes: int) -> list[int]:
    return list(dict.fromkeys(sizes))


# ----------------------------------------------------------------------------------------------
# Child: build, run the lrp calls, re-measure
# ----------------------------------------------------------------------------------------------
class _Channel:
    """Line-delimited JSON messages to the parent on a dedicated fd (stdout may be chatty)."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "w", buffering=1)

    def send(self, **msg) -> None:
        self._file.write(json.dumps(msg, default=str) + "\n")
        self._file.flush()


def _build(spec: dict):
    import torch
    torch.manual_seed(0)
    if spec["source"] == "timm":
        import timm
        return timm.create_model(spec["name"], pretrained=False)
    from torchvision import models
    if spec["kind"] == "classification":
        return models.get_model(spec["name"], weights=None)
    # weights_backbone defaults to ImageNet weights (a download): random everywhere instead
    model = models.get_model(spec["name"], weights=None, weights_backbone=None)
    return model.backbone if spec["kind"] == "detection-backbone" else model


def _randomize_norms(model) -> None:
    """Random running stats and non-zero affine params in every BatchNorm (FrozenBatchNorm2d too),
    so a removed channel that still emits beta - gamma*mean/std shows up in the outputs."""
    import torch
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            stats = [getattr(module, k, None) for k in ("running_mean", "running_var", "weight", "bias")]
            is_bn = isinstance(module, torch.nn.modules.batchnorm._BatchNorm) or type(module).__name__ == \
                "FrozenBatchNorm2d"
            if not is_bn:
                continue
            mean, var, weight, bias = stats
            if mean is not None and var is not None:
                mean.copy_(torch.rand(mean.shape, generator=gen) * 2 - 1)
                var.copy_(torch.rand(var.shape, generator=gen) * 1.5 + 0.5)
            if weight is not None and bias is not None:
                weight.copy_(torch.rand(weight.shape, generator=gen) + 0.5)
                bias.copy_(torch.rand(bias.shape, generator=gen) - 0.5)


def _flatten(obj, seen=None) -> list:
    """Every tensor in an output: tensors, sequences, mappings, dataclasses, namedtuples, plain objects."""
    import torch
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        return [obj]
    if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return []
    seen.add(id(obj))
    if isinstance(obj, collections.abc.Mapping):
        return [t for v in obj.values() for t in _flatten(v, seen)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flatten(v, seen)]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in _flatten(getattr(obj, f.name), seen)]
    if hasattr(obj, "__dict__"):
        return [t for v in vars(obj).values() for t in _flatten(v, seen)]
    return []


def _outputs(model, x) -> list:
    import torch
    with torch.no_grad():
        return [t.detach().float().clone() for t in _flatten(model(x))]


def _rel_err(ref: list, new: list) -> float:
    """max over outputs of max|dy| / max|y|; inf for any mismatch in count or shape, or a NaN."""
    import torch
    if len(ref) != len(new):
        return float("inf")
    worst = 0.0
    for a, b in zip(ref, new):
        if a.shape != b.shape:
            return float("inf")
        if a.numel() == 0:
            continue
        diff = (a - b).abs().max().item()
        scale = a.abs().max().item()
        err = diff / scale if scale > 0 else diff
        if not torch.isfinite(torch.tensor(err)):
            return float("inf")
        worst = max(worst, err)
    return worst


def _state_hash(model) -> str:
    import hashlib

    import torch
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.numel():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update((flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)).numpy())
    return digest.hexdigest()


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _frame(tb_frames) -> str:
    f = tb_frames[-1]
    return f"{f.filename}:{f.lineno} in {f.name}"


def _error_record(exc: BaseException) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)
    rec = {"error_type": type(exc).__name__, "error_module": type(exc).__module__,
           "error_message": str(exc)[:2000], "error_frame": _frame(frames) if frames else None,
           "traceback_tail": "".join(traceback.format_exception(exc))[-8000:]}
    # the deepest frame inside the plugin: where our code let it through
    ours = [f for f in frames if "lrp_plugin" in f.filename]
    rec["lrp_frame"] = _frame(ours) if ours else None
    root = exc
    while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
        root = root.__cause__ or root.__context__
    if root is not exc:  # a wrapped library error: where it really came from
        root_frames = traceback.extract_tb(root.__traceback__)
        rec.update(cause_type=type(root).__name__, cause_message=str(root)[:1000],
                   cause_frame=_frame(root_frames) if root_frames else None)
    return rec


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "not enough memory" in text


def child_main(spec: dict, fd: int) -> None:
    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for a stack before a kill
    chan = _Channel(fd)
    import torch
    torch.set_num_threads(1)  # shared CPUs: one model at a time, one thread each
    rec: dict = {}
    try:
        model = _build(spec)
        rec["params"] = _n_params(model)
        if rec["params"] > MAX_PARAMS:
            chan.send(kind="result", outcome="skipped", skip_reason=f"{rec['params'] / 1e6:.0f} M params > "
                      f"{MAX_PARAMS / 1e6:.0f} M", **rec)
            return
        _randomize_norms(model)
        model.eval()
        size, build_errors = None, []
        for s in spec["sizes"]:  # the smallest size the model accepts
            try:
                torch.manual_seed(1)
                _outputs(model, torch.randn(1, 3, s, s))
                size = s
                break
            except Exception as exc:  # noqa: BLE001 - any failure means "try the next size"
                build_errors.append(f"{s}: {type(exc).__name__}: {str(exc)[:300]}")
        if size is None:
            chan.send(kind="result", outcome="build-error", skip_reason="; ".join(build_errors), **rec)
            return
        rec["input_size"] = size
        rec["convs"] = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        chan.send(kind="info", **rec)  # kept even if the child is killed later
    except Exception as exc:  # noqa: BLE001
        chan.send(kind="result", outcome="build-error", skip_reason=f"{type(exc).__name__}: {exc}"[:1000], **rec)
        return
    try:
        import lrp_plugin as lrp
    except Exception as exc:  # noqa: BLE001 - a broken plugin is the plugin's failure, not the model's
        chan.send(kind="result", outcome="crash", failed_step="import", **rec, **_error_record(exc))
        return

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, size, size, generator=gen)
    fresh = torch.randn(1, 3, size, size, generator=gen)  # verification input lrp never saw
    chan.send(kind="phase", phase="lrp")
    times: dict = {}
    step = "compute_masks"
    try:
        chan.send(kind="step", step=step)
        t0 = time.perf_counter()
        masks = lrp.compute_masks(model, x, "l1", 0.5, selection=spec.get("selection", "layer"))
        times["compute_masks_s"] = time.perf_counter() - t0
        total = sum(int(m.numel()) for m in masks.values())
        masked = sum(int((~m.bool()).sum()) for m in masks.values())
        rec.update(masked_layers=sum(bool((~m.bool()).any()) for m in masks.values()), mask_layers=len(masks),
                   masked_channels=masked, mask_channels=total, masked_fraction=masked / total if total else 0.0,
                   skip_reasons=dict(collections.Counter(masks.meta.get("skipped", {}).values()).most_common(3)))
        step = "apply_masks"
        chan.send(kind="step", step=step, times=times)
        t0 = time.perf_counter()
        lrp.apply_masks(model, masks)
        times["apply_s"] = time.perf_counter() - t0
        masked_out = _outputs(model, fresh)
        before = _state_hash(model)
        step = "reconstruct"
        chan.send(kind="step", step=step, times=times)
        t0 = time.perf_counter()
        result = lrp.reconstruct(model, x)
        times["reconstruct_s"] = time.perf_counter() - t0
        step = "verify"
        chan.send(kind="step", step=step, times=times)
        rec["caller_untouched"] = _state_hash(model) == before and _rel_err(masked_out, _outputs(model, fresh)) == 0
        new_out = _outputs(result.model, fresh)
        rec.update(rel_err=_rel_err(masked_out, new_out), outputs_compared=len(masked_out),
                   params_before=_n_params(model), params_after=_n_params(result.model),
                   report_params=[result.report.params_before, result.report.params_after])
    except BaseException as exc:  # noqa: BLE001 - every failure is a finding
        rec.update(times, failed_step=step, **_error_record(exc))
        outcome = "oom" if _is_oom(exc) else "refused" if isinstance(exc, lrp.LRPError) else "crash"
        chan.send(kind="result", outcome=outcome, **rec)
        return
    rec.update(times)
    wrong = []
    if rec["outputs_compared"] == 0:
        wrong.append("no tensor outputs to compare")
    if not rec["rel_err"] < REL_TOL:
        wrong.append(f"rel err {rec['rel_err']:.3g} >= {REL_TOL:g}")
    if not rec["caller_untouched"]:
        wrong.append("caller's model modified by reconstruct")
    if wrong:
        outcome = "silent-wrong"
        rec["wrong"] = "; ".join(wrong)
    elif rec["masked_channels"] and rec["params_after"] >= rec["params_before"]:
        # exact, but every masked channel was kept (union over summed branches) or its group skipped
        outcome = "no-reduction"
        rec["skipped_groups"] = dict(list(result.report.skipped.items())[:5])
    else:
        outcome = "lossless" if rec["masked_channels"] else "nothing-masked"
    chan.send(kind="result", outcome=outcome, **rec)


# ----------------------------------------------------------------------------------------------
# Parent: spawn, watch time and memory, collect
# ----------------------------------------------------------------------------------------------
def _vm_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Worker:
    """One child process for one model, with its deadlines and memory watch."""

    def __init__(self, spec: dict, args):
        spec = dict(spec, selection=args.selection)
        self.spec, self.args = spec, args
        self.read_fd, write_fd = os.pipe()
        self.log = tempfile.TemporaryFile(mode="w+")  # child's stderr/stdout: warnings, faulthandler stacks
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec), "--fd", str(write_fd)],
            pass_fds=(write_fd,), stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        os.close(write_fd)
        os.set_blocking(self.read_fd, False)
        self.start = time.monotonic()
        self.deadline = self.start + args.build_timeout
        self.phase, self.step, self.buf, self.result = "build", None, b"", None
        self.peak_kib, self.killed, self.done, self.rusage_kib = 0, None, False, 0
        self.info: dict = {}  # what the child reported before its result: params, input size, step times

    def pump(self) -> None:
        try:
            while chunk := os.read(self.read_fd, 65536):
                self.buf += chunk
        except BlockingIOError:
            pass
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            msg = json.loads(line)
            if msg["kind"] == "phase":
                self.phase = msg["phase"]
                self.lrp_start = time.monotonic()
                self.deadline = self.lrp_start + self.args.timeout
            elif msg["kind"] == "step":
                self.step = msg["step"]
                self.info.update(msg.get("times", {}))
            elif msg["kind"] == "info":
                self.info.update({k: v for k, v in msg.items() if k != "kind"})
            elif msg["kind"] == "result":
                self.result = msg

    def check(self) -> None:
        """Kill on overrun of time or memory; reap when the child has exited."""
        self.pump()
        pid = self.proc.pid
        self.peak_kib = max(self.peak_kib, _vm_kib(pid, "VmHWM"))
        if self.killed is None and self.result is None:
            if self.peak_kib > self.args.mem_gb * 1024 * 1024:
                self._kill("oom")
            elif time.monotonic() > self.deadline:
                self._kill("hang" if self.phase == "lrp" else "build-timeout")
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.rusage_kib = usage.ru_maxrss
            self.pump()
            self.done = True
            os.close(self.read_fd)

    def _kill(self, why: str) -> None:
        self.killed = why
        try:
            self.proc.send_signal(signal.SIGUSR1)  # faulthandler: where it was stuck, into the log
            time.sleep(1.0)
            self.proc.kill()
        except ProcessLookupError:
            pass

    def kill_now(self) -> None:
        if not self.done:
            try:
                self.proc.kill()
                os.waitpid(self.proc.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.done = True

    def record(self) -> dict:
        rec = {k: self.spec[k] for k in ("name", "source", "kind", "family")}
        rec.update(self.info)
        rec.update(self.result or {})
        peak_mib = max(self.peak_kib, self.rusage_kib) / 1024
        rec["peak_rss_mib"] = round(peak_mib, 1)
        rec["wall_s"] = round(time.monotonic() - self.start, 2)
        self.log.seek(0)
        log = self.log.read()
        if self.killed == "build-timeout":
            rec.update(outcome="build-error", skip_reason=f"building/running the model took over "
                       f"{self.args.build_timeout} s")
        elif self.killed in ("hang", "oom"):
            rec.update(outcome=self.killed, failed_step=self.step, killed_by_harness=True,
                       kill_reason=f"over {self.args.timeout} s in the lrp calls" if self.killed == "hang"
                       else f"peak RSS over {self.args.mem_gb} GiB")
            rec["stack_at_kill"] = _stack_dump(log)
        elif self.result is None:
            # no result and not killed by us: the OS (OOM killer) or a hard crash (segfault)
            code = self.proc.returncode
            rec.update(outcome="oom" if code == -signal.SIGKILL else "crash", failed_step=self.step,
                       error_type=f"child exited with code {code}", error_message=log[-2000:])
        elif peak_mib > self.args.mem_gb * 1024 and rec["outcome"] not in ("skipped", "build-error"):
            rec.update(outcome_within_cap=rec["outcome"], outcome="oom",
                       kill_reason=f"peak RSS {peak_mib:.0f} MiB over {self.args.mem_gb} GiB")
        rec["outcome"] = rec.get("outcome", "crash")
        rec.pop("kind", None)
        rec["kind"] = self.spec["kind"]
        if rec["outcome"] not in ("lossless", "nothing-masked", "no-reduction", "skipped"):
            rec["log_tail"] = log[-3000:]
        self.log.close()
        return rec


def _stack_dump(log: str) -> str:
    """The faulthandler dump from the log: the innermost frames of the main thread."""
    idx = log.rfind("most recent call first")
    return log[idx:idx + 3000] if idx >= 0 else ""


def _git(path: Path, *cmd: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(path), *cmd], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _meta(args) -> dict:
    from importlib import metadata
    spec = importlib.util.find_spec("lrp_plugin")
    pkg = Path(spec.origin).parent if spec and spec.origin else None
    versions = {}
    for dist in ("torch", "torchvision", "timm", "torch-pruning"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "lrp_plugin_path": str(pkg) if pkg else None,
        "lrp_plugin_commit": _git(pkg, "rev-parse", "HEAD") if pkg else None,
        # HEAD may be a later commit that did not touch the plugin: name the one that last did
        "lrp_plugin_last_change": _git(pkg, "log", "-1", "--format=%H", "--", ".") if pkg else None,
        "lrp_plugin_dirty": bool(_git(pkg, "status", "--porcelain", "--", ".")) if pkg else None,
        "harness_commit": _git(Path(__file__).parent, "rev-parse", "HEAD"),
        "versions": versions, "python": platform.python_version(), "platform": platform.platform(),
        "cpus": os.cpu_count(), "timeout_s": args.timeout, "build_timeout_s": args.build_timeout,
        "mem_gb": args.mem_gb, "jobs": args.jobs, "max_params": MAX_PARAMS, "rel_tol": REL_TOL,
        "call": f'masks = lrp.compute_masks(model, x, "l1", 0.5, selection="{args.selection}"); '
                "lrp.apply_masks(model, masks); result = lrp.reconstruct(model, x)",
        "selection": args.selection,
        "argv": sys.argv[1:],
    }


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)


def _summary(rows: list[dict]) -> dict:
    by_source = collections.defaultdict(collections.Counter)
    for r in rows:
        by_source[f"{r['source']}/{r['kind']}"][r["outcome"]] += 1
    return {"total": dict(collections.Counter(r["outcome"] for r in rows)),
            "by_source": {k: dict(v) for k, v in sorted(by_source.items())}}


def _line(rec: dict) -> str:
    t = "/".join(f"{rec[k]:.1f}" if rec.get(k) is not None else "-"
                 for k in ("compute_masks_s", "apply_s", "reconstruct_s"))
    extra = ""
    if rec["outcome"] in ("lossless", "nothing-masked", "silent-wrong"):
        extra = f"rel {rec.get('rel_err', float('nan')):.1e} params {rec.get('params_before', 0) / 1e6:.2f}M->" \
                f"{rec.get('params_after', 0) / 1e6:.2f}M masked {rec.get('masked_fraction', 0):.2f}"
        extra += f" [{rec['wrong']}]" if rec.get("wrong") else ""
    elif rec.get("error_type"):
        extra = f"{rec.get('failed_step')}: {rec['error_type']}: {rec.get('error_message', '')[:160]!r}"
    elif rec.get("kill_reason"):
        extra = f"{rec.get('failed_step')}: {rec['kill_reason']}"
    elif rec.get("skip_reason"):
        extra = rec["skip_reason"][:200]
    return (f"{rec['outcome']:<14} {rec['source']:<11} {rec['name']:<38} t={t}s rss={rec['peak_rss_mib']:.0f}MiB "
            f"wall={rec['wall_s']:.0f}s {extra}")


class _Interrupted(Exception):
    pass


def _on_term(signum, frame):
    raise _Interrupted


def run(args) -> dict:
    specs = list_specs(args.source, args.only)
    meta = _meta(args)
    meta["started"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows: list[dict] = []
    pending: list[dict] = []
    for spec in specs:  # torchvision publishes parameter counts: big ones need no child at all
        if spec["params_meta"] and spec["params_meta"] > MAX_PARAMS:
            rec = {k: spec[k] for k in ("name", "source", "kind", "family")}
            rec.update(outcome="skipped", params=spec["params_meta"], peak_rss_mib=0.0, wall_s=0.0,
                       skip_reason=f"{spec['params_meta'] / 1e6:.0f} M params > {MAX_PARAMS / 1e6:.0f} M")
            rows.append(rec)
            print(_line(rec), flush=True)
        else:
            pending.append(spec)
    print(f"{len(specs)} models, {len(pending)} to run, lrp_plugin at {meta['lrp_plugin_path']} "
          f"({(meta['lrp_plugin_commit'] or '?')[:10]}{' dirty' if meta['lrp_plugin_dirty'] else ''})", flush=True)
    running: list[Worker] = []
    interrupted = False
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                running.append(Worker(pending.pop(0), args))
            fds = [w.read_fd for w in running]
            select.select(fds, [], [], 0.1)
            for w in list(running):
                w.check()
                if w.done:
                    running.remove(w)
                    rec = w.record()
                    rows.append(rec)
                    print(_line(rec), flush=True)
                    _write(args.out, {"meta": meta, "summary": _summary(rows), "models": rows})
    except (KeyboardInterrupt, _Interrupted):
        interrupted = True
        print("interrupted: killing children, writing partial results", flush=True)
    finally:
        signal.signal(signal.SIGTERM, old)
        for w in running:
            w.kill_now()
    meta["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    meta["interrupted"] = interrupted
    meta["not_run"] = [s["name"] for s in pending] + [w.spec["name"] for w in running]
    data = {"meta": meta, "summary": _summary(rows), "models": rows}
    _write(args.out, data)
    return data


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(frame: str | None) -> str:
    """A frame without the install prefix: torch_pruning/dependency/graph.py:236 in f."""
    if not frame:
        return "?"
    frame = re.sub(r"^.*?site-packages/", "", frame)
    return re.sub(r"^.*?/(lrp_plugin/)", r"\1", frame)


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+),? in (\S+)')


def _frames(text: str) -> list[str]:
    return [f"{m[1]}:{m[2]} in {m[3]}" for m in _FRAME_RE.finditer(text or "")]


def cause(rec: dict) -> str:
    """One line naming a failure's cause: exception type and where it was raised (the library frame
    for wrapped errors), or for a kill the innermost frames at the time of the kill."""
    outcome = rec["outcome"]
    if outcome in ("hang", "oom") and rec.get("killed_by_harness"):
        stack = _frames(rec.get("stack_at_kill", ""))  # innermost first
        lib = next((f for f in stack if "site-packages" in f), None)
        ours = next((f for f in stack if "lrp_plugin" in f), None)
        return f"{outcome} in {rec.get('failed_step')}: {_short(lib)} (from {_short(ours)})"
    if rec.get("error_type"):
        root_type, root_frame = rec.get("cause_type"), rec.get("cause_frame")
        if root_type is None and "direct cause" in rec.get("traceback_tail", ""):
            first = rec["traceback_tail"].split("The above exception")[0]  # the wrapped error's block
            frames = _frames(first)
            last = [ln for ln in first.strip().splitlines() if ln and not ln.startswith(" ")]
            root_type = last[-1].split(":")[0] if last else None
            root_frame = frames[-1] if frames else None
        where = _short(root_frame or rec.get("error_frame"))
        wrapped = f" wrapping {root_type}" if root_type and root_type != rec["error_type"] else ""
        return f"{outcome}: {rec['error_type']}{wrapped} at {where} (step {rec.get('failed_step')})"
    if outcome == "silent-wrong":
        return "silent-wrong: " + re.sub(r"[\d.e+-]+ >=", "N >=", rec.get("wrong", ""))
    return f"{outcome}: {(rec.get('kill_reason') or rec.get('skip_reason') or '')[:80]}"


def markdown(data: dict) -> str:
    rows = data["models"]
    meta = data["meta"]
    cols = [o for o in OUTCOMES if any(r["outcome"] == o for r in rows)]
    commit = meta.get("lrp_plugin_last_change") or meta.get("lrp_plugin_commit")
    out = [f"Model zoo coverage (lrp_plugin {str(commit)[:10]}"
           f"{' + local changes' if meta.get('lrp_plugin_dirty') else ''}; torch {meta['versions'].get('torch')}, "
           f"torchvision {meta['versions'].get('torchvision')}, timm {meta['versions'].get('timm')}, "
           f"torch-pruning {meta['versions'].get('torch-pruning')}; caps {meta['timeout_s']} s / "
           f"{meta['mem_gb']} GiB per model; `{meta['call']}`; lossless = re-measured rel err < "
           f"{meta['rel_tol']:g} on a fresh input, params shrank, caller's model untouched).", ""]

    def table(key) -> None:
        groups = collections.defaultdict(collections.Counter)
        for r in rows:
            groups[key(r)][r["outcome"]] += 1
        out.append("| " + " | ".join(["group", "models", *cols]) + " |")
        out.append("|" + "---|" * (len(cols) + 2))
        for g in sorted(groups):
            c = groups[g]
            cells = [_md_escape(g), str(sum(c.values())), *(str(c[o] or "") for o in cols)]
            out.append("| " + " | ".join(cells) + " |")
        total = collections.Counter(r["outcome"] for r in rows)
        out.append("| " + " | ".join(["**all**", str(len(rows)), *(str(total[o] or "") for o in cols)]) + " |")
        out.append("")

    out.append("By source:")
    out.append("")
    table(lambda r: f"{r['source']} {r['kind']}")
    tv_cls = [r for r in rows if r["source"] == "torchvision" and r["kind"] == "classification"]
    ok = sum(r["outcome"] == "lossless" for r in tv_cls)
    out.append(f"torchvision classification: {ok} of {len(tv_cls)} lossless (verified). {TP_PUBLISHED}.")
    out.append("")
    out.append("By family:")
    out.append("")
    table(lambda r: f"{r['source']}: {r['family']}")
    bad = [r for r in rows if r["outcome"] not in ("lossless", "skipped", "nothing-masked", "no-reduction")]
    if bad:
        out.append("Failures grouped by cause:")
        out.append("")
        groups = collections.defaultdict(list)
        for r in bad:
            groups[cause(r)].append(r["name"])
        for key, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            out.append(f"- {_md_escape(key)} ({len(names)}): {', '.join(f'`{n}`' for n in sorted(names))}")
        out.append("")
    timed = [r for r in rows if r.get("compute_masks_s") is not None]
    if timed:
        def lrp_time(r):
            return sum(r.get(k) or 0.0 for k in ("compute_masks_s", "apply_s", "reconstruct_s"))
        out.append("Slowest models (seconds: compute_masks / apply_masks / reconstruct, peak RSS):")
        out.append("")
        for r in sorted(timed, key=lrp_time, reverse=True)[:10]:
            t = " / ".join(f"{r[k]:.1f}" if r.get(k) is not None else "-"
                           for k in ("compute_masks_s", "apply_s", "reconstruct_s"))
            out.append(f"- `{r['name']}` ({r['outcome']}): {t} s, {r['peak_rss_mib']:.0f} MiB")
        out.append("")
    for outcome in ("refused", "crash", "hang", "oom", "silent-wrong", "build-error", "skipped", "nothing-masked",
                    "no-reduction"):
        hit = [r for r in rows if r["outcome"] == outcome]
        if not hit:
            continue
        out.append(f"{outcome} ({len(hit)}):")
        out.append("")
        for r in sorted(hit, key=lambda r: (r["source"], r["name"])):
            if r.get("error_type"):
                why = f"{r.get('failed_step')}: `{r['error_type']}`: {r.get('error_message', '').splitlines()[0][:300]}"
                if outcome == "crash" and r.get("error_frame"):
                    why += f" (at {_short(r['error_frame'])})"
            elif outcome in ("nothing-masked", "no-reduction"):
                reasons = "; ".join(f"{n} x {why}" for why, n in (r.get("skip_reasons") or {}).items())
                why = (f"compute_masks masked {r.get('masked_channels')} of {r.get('mask_channels')} channels "
                       f"({r.get('convs')} Conv2d in the model); skipped: {reasons or '-'}")
            else:
                why = r.get("wrong") or r.get("kill_reason") or r.get("skip_reason") or ""
                if r.get("failed_step"):
                    why = f"{r['failed_step']}: {why}"
            out.append(f"- {r['source']} `{r['name']}`: {_md_escape(why)}")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="regex on model names")
    parser.add_argument("--source", choices=("torchvision", "timm", "all"), default="all")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the lrp calls per model")
    parser.add_argument("--build-timeout", type=float, default=300.0, help="seconds to import, build, run once")
    parser.add_argument("--mem-gb", type=float, default=4.0, help="peak RSS cap per model process")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/model_zoo.json (model_zoo_group.json with --selection group)")
    parser.add_argument("--selection", choices=("layer", "group"), default="layer",
                        help="compute_masks selection: per-layer masks (the paper) or one per coupled group")
    parser.add_argument("--markdown", action="store_true", help="print the coverage table at the end")
    parser.add_argument("--no-run", action="store_true", help="read --out instead of running (with --markdown)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out is None:
        args.out = DEFAULT_OUT if args.selection == "layer" else DEFAULT_OUT.with_name("model_zoo_group.json")
    if args.child:
        child_main(json.loads(args.child), args.fd)
        return
    if args.no_run:
        data = json.loads(args.out.read_text())
    else:
        data = run(args)
        print(json.dumps(data["summary"], indent=1))
    if args.markdown:
        print(markdown(data))
    if data["meta"].get("interrupted"):
        sys.exit(130)


if __name__ == "__main__":
    main()
