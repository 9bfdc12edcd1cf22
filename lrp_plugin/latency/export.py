"""Export to ONNX and ncnn (both checked numerically against PyTorch before any timing) and to TorchScript.

Why the check: a wrong export times a different network; a latency ratio from it would be
meaningless. The legacy TorchScript-based exporter (``dynamo=False``) is used: it is fast and
exact for BatchNorm CNNs such as timm ResNets; the result is checked either way.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..extras import require
from .errors import ExportError, InputShapeError

OPSET = 17
PNNX_TIMEOUT_S = 900  # a YOLOv3-D53 converts in well under a minute; a hung converter must not hang the tool


def _outputs(out) -> list[torch.Tensor]:
    """Every tensor of a model's output, in order (a tensor, or a tuple/list of them)."""
    from ..core.graph import flatten_tensors

    return [t.detach() for t in flatten_tensors(out)]


def compare_outputs(got: list, ref: list[torch.Tensor], what: str, *, rtol: float, atol: float) -> dict[str, Any]:
    """Max abs error of ``got`` (numpy arrays) vs ``ref`` over all outputs; ExportError when off."""
    import numpy as np

    if len(got) != len(ref):
        raise ExportError(f"{what} gives {len(got)} outputs, PyTorch {len(ref)}; not timing a different network")
    max_abs, scale = 0.0, 0.0
    for g, r in zip(got, ref):
        r_np = r.numpy()
        g = np.asarray(g).reshape(r_np.shape) if np.asarray(g).size == r_np.size else np.asarray(g)
        if g.shape != r_np.shape:
            raise ExportError(f"{what} gives shape {g.shape}, PyTorch {r_np.shape}")
        max_abs = max(max_abs, float(np.abs(g - r_np).max()))
        scale = max(scale, float(np.abs(r_np).max()))
    ok = max_abs <= atol + rtol * scale
    if not ok:
        raise ExportError(f"{what} does not match PyTorch: max abs error {max_abs:.3g} for outputs up "
                          f"to {scale:.3g} (allowed {atol + rtol * scale:.3g}); not timing a different network")
    return {"max_abs_error": max_abs, "max_abs_output": scale, "rtol": rtol, "atol": atol, "matches": ok}


def export_onnx(model: nn.Module, x: torch.Tensor, path: Path, *, rtol: float = 1e-3, atol: float = 1e-4
                ) -> dict[str, Any]:
    """Write ``path`` and check it with ONNX Runtime against ``model(x)`` (every output); the check's numbers."""
    require("onnx", "latency", purpose="the ONNX exporter")
    ort = require("onnxruntime", "latency", purpose="checking the exported ONNX")
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        ref = _outputs(model(x))
    names = ["output"] if len(ref) == 1 else [f"output{i}" for i in range(len(ref))]
    try:
        with warnings.catch_warnings():  # the legacy exporter's deprecation notice is not the user's concern
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=OPSET, input_names=["input"],
                              output_names=names, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types; name the model and the way out
        raise ExportError(f"ONNX export of {path.stem} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                          "time it with --backend torch instead") from exc
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})
    check = compare_outputs(got, ref, f"exported {path.name}", rtol=rtol, atol=atol)
    return {**check, "opset": OPSET, "exporter": "torch.onnx (dynamo=False)"}


def export_ncnn(model: nn.Module, x: torch.Tensor, workdir: Path, stem: str, *, threads: int = 1,
                rtol: float = 1e-3, atol: float = 1e-4) -> dict[str, Any]:
    """Trace, convert with pnnx (fp32 weights), and check ncnn's outputs against PyTorch's.

    Returns the check's numbers plus ``param``/``bin`` paths. pnnx runs as its own process (with a
    timeout) in ``workdir``: it writes several side files next to its input.
    """
    pnnx = require("pnnx", "latency", purpose="converting PyTorch models to ncnn")
    require("ncnn", "latency", purpose="checking the converted ncnn model")
    from .runner import RunnerError, ncnn_forward, ncnn_net

    if x.shape[0] != 1:
        raise InputShapeError(f"ncnn takes one image per forward, got batch {x.shape[0]}: use --batch 1")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad():
        ref = _outputs(model(x))
    ts = workdir / f"{stem}.pt"
    export_torchscript(model, x, ts)
    out = {k: workdir / f"{stem}.{k.replace('ncnn', 'ncnn.').replace('pnnx', 'pnnx.')}" for k in
           ("ncnnparam", "ncnnbin", "pnnxparam", "pnnxbin")}
    side = {"pnnxpy": workdir / f"{stem}_pnnx.py", "pnnxonnx": workdir / f"{stem}.pnnx.onnx",
            "ncnnpy": workdir / f"{stem}_ncnn.py"}
    shape = ",".join(str(int(d)) for d in x.shape)
    args = [pnnx.EXEC_PATH, str(ts), f"inputshape=[{shape}]f32", "device=cpu", "fp16=0",
            *[f"{k}={v}" for k, v in {**out, **side}.items()]]
    try:
        done = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"pnnx took more than {PNNX_TIMEOUT_S} s converting {stem}; time it with "
                          "--backend onnxruntime instead") from exc
    param, binfile = out["ncnnparam"], out["ncnnbin"]
    if done.returncode != 0 or not param.is_file() or not binfile.is_file():
        tail = " | ".join((done.stderr or done.stdout or "").strip().splitlines()[-3:])
        raise ExportError(f"pnnx could not convert {stem} to ncnn (exit {done.returncode}: {tail[:300]}); "
                          "time it with --backend onnxruntime instead")
    try:
        got = ncnn_forward(ncnn_net(str(param), str(binfile), threads), x.numpy())
    except RunnerError as exc:
        raise ExportError(f"ncnn cannot run the converted {stem}: {exc}") from exc
    check = compare_outputs(got, [r[0] for r in ref], f"ncnn conversion of {stem}", rtol=rtol, atol=atol)
    import ncnn

    return {**check, "converter": f"pnnx {_version('pnnx')}", "ncnn": _version("ncnn") or ncnn.__version__,
            "param": str(param), "bin": str(binfile)}


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def export_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """Trace to TorchScript (for the device's torch backend) and check the trace against eager."""
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated upstream but still what devices can load
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.eval(), (x,), check_trace=False)
            traced.save(str(path))
    except Exception as exc:
        raise ExportError(f"TorchScript trace of {Path(path).stem} failed: {str(exc)[:300]}") from exc
    with torch.no_grad():
        a, b = _outputs(model(x)), _outputs(traced(x))
    if len(a) != len(b) or not all(torch.allclose(u, v, rtol=1e-4, atol=1e-5) for u, v in zip(a, b)):
        raise ExportError(f"TorchScript trace of {Path(path).stem} does not match eager PyTorch")
    return Path(path)


def onnx_info(path: Path) -> dict[str, Any]:
    """Params (from initializers) and the declared input shape of an ONNX file."""
    onnx = require("onnx", "latency", purpose="reading an ONNX file")
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputShapeError(f"{path} is not a readable ONNX model: {exc}") from exc
    params = 0
    for init in m.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        params += n
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in
            m.graph.input[0].type.tensor_type.shape.dim] if m.graph.input else []
    return {"params": params, "input_shape": dims}
