"""Export to ONNX (checked numerically against PyTorch before any timing) and to TorchScript.

Why the check: a wrong export times a different network; a latency ratio from it would be
meaningless. The legacy TorchScript-based exporter (``dynamo=False``) is used: it is fast and
exact for BatchNorm CNNs such as timm ResNets; the result is checked either way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import BackendError, ExportError, InputShapeError

OPSET = 17


def export_onnx(model: nn.Module, x: torch.Tensor, path: Path, *, rtol: float = 1e-3, atol: float = 1e-4
                ) -> dict[str, Any]:
    """Write ``path`` and check it with ONNX Runtime against ``model(x)``; returns the check's numbers."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendError(f"ONNX export needs onnx and onnxruntime: pip install 'lrp_plugin[latency]' ({exc})"
                           ) from exc
    path = Path(path)
    model = model.eval()
    try:
        with warnings.catch_warnings():  # the legacy exporter's deprecation notice is not the user's concern
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=OPSET, input_names=["input"],
                              output_names=["output"], do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types; name the model and the way out
        raise ExportError(f"ONNX export of {path.stem} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                          "time it with --backend torch instead") from exc
    with torch.no_grad():
        ref = model(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    ref_np = ref.detach().numpy()
    if got.shape != ref_np.shape:
        raise ExportError(f"exported {path.name} gives shape {got.shape}, PyTorch {ref_np.shape}")
    max_abs = float(abs(got - ref_np).max())
    scale = float(abs(ref_np).max())
    ok = max_abs <= atol + rtol * scale
    if not ok:
        raise ExportError(f"exported {path.name} does not match PyTorch: max abs error {max_abs:.3g} for outputs up "
                          f"to {scale:.3g} (allowed {atol + rtol * scale:.3g}); not timing a different network")
    return {"max_abs_error": max_abs, "max_abs_output": scale, "rtol": rtol, "atol": atol, "matches": ok,
            "opset": OPSET, "exporter": "torch.onnx (dynamo=False)"}


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
        a, b = model(x), traced(x)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise ExportError(f"TorchScript trace of {Path(path).stem} does not match eager PyTorch")
    return Path(path)


def onnx_info(path: Path) -> dict[str, Any]:
    """Params (from initializers) and the declared input shape of an ONNX file."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendError("reading an ONNX file needs onnx: pip install 'lrp_plugin[latency]'") from exc
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
