"""Selection modes side by side: per-layer masks (the paper) vs one mask per coupled group.

For each model (random weights, randomized BatchNorm): MACs and params ratio after the verified
lossless rebuild, for ``selection="layer"`` and ``"group"`` at CR 0.5 and at an equal MACs budget
(``target_macs``, default 0.30), the rebuild's max relative error, and (``--runs`` > 0) the ONNX
Runtime latency ratio pruned/original at 1 thread, all variants of a model timed interleaved.

    python benchmarks/selection.py [--models resnet50 darknet53 yolov3 ...] [--runs 3] [--threads 1]
        [--ratio 0.5] [--target-macs 0.30] [--tp] [--out benchmarks/results/selection.json]

``--tp`` adds Torch-Pruning's own ``MetaPruner`` + ``GroupMagnitudeImportance(p=1)`` at the same CR
(output layers ignored as ours are; no lossless check: it removes channels with their values).

Models: resnet18 resnet50 resnet101 darknet53 (timm), mobilenet_v2 densenet121 (torchvision),
yolov3 (mmdet YOLOv3-D53 at 416, tensor-only forward through the adapter).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_latency_common import YOLOV3_D53, command, write_json  # noqa: E402

import lrp_plugin as lrp  # noqa: E402
from lrp_plugin.testing import randomize_batchnorm  # noqa: E402

MODELS = {
    "resnet18": ("timm", 224), "resnet50": ("timm", 224), "resnet101": ("timm", 224), "darknet53": ("timm", 256),
    "mobilenet_v2": ("torchvision", 224), "densenet121": ("torchvision", 224), "yolov3": ("mmdet", 416),
}


def build(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, dict[str, Any], Any]:
    """(model, input, compute_masks/reconstruct keywords, wrapper for the tensor-only forward or None)."""
    kind, size = MODELS[name]
    torch.manual_seed(seed)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    if kind == "timm":
        import timm

        return randomize_batchnorm(timm.create_model(name), seed).eval(), x, {}, None
    if kind == "torchvision":
        import torchvision

        return randomize_batchnorm(getattr(torchvision.models, name)(), seed).eval(), x, {}, None
    from lrp_plugin.adapters.base import find_adapter
    from lrp_plugin.latency.sources import SourceRequest, TensorForward, load_models

    entry = load_models([YOLOV3_D53], SourceRequest(x=x, seed=seed, quiet=True))[0]
    model = entry.module.model
    adapter = find_adapter(model)
    kw = {"forward_fn": adapter.forward_fn}
    return model, x, {"ignored_layers": adapter.ignored_layers(model), **kw}, \
        (lambda m: TensorForward(m, adapter.forward_fn).eval())


def tp_row(name: str, model: torch.nn.Module, x: torch.Tensor, kw: dict[str, Any], ratio: float) -> dict[str, Any]:
    """Torch-Pruning's MetaPruner + GroupMagnitudeImportance(p=1) at ``ratio``, on a copy."""
    import copy

    import torch_pruning as tp

    from lrp_plugin.core.graph import probe_model

    work = copy.deepcopy(model)
    outputs = probe_model(work, x, kw.get("forward_fn")).output_layers | set(kw.get("ignored_layers") or [])
    modules = dict(work.named_modules())
    before, params_before = lrp.count_macs_params(work, x, kw.get("forward_fn"))
    tp.pruner.MetaPruner(work, x, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=ratio,
                         ignored_layers=[modules[n] for n in outputs if n in modules],
                         forward_fn=kw.get("forward_fn")).step()
    after, params_after = lrp.count_macs_params(work, x, kw.get("forward_fn"))
    row = {"model": name, "variant": f"TP group CR {ratio:g}", "selection": "torch-pruning", "ratio": ratio,
           "target_macs": None, "macs_ratio": after / before, "params_ratio": params_after / params_before,
           "gflops_after": lrp.paper_flops(after) / 1e9, "gflops_before": lrp.paper_flops(before) / 1e9,
           "max_rel_error": None, "lossless": None}
    print(f"{name:<13} {row['variant']:<15} MACs {row['macs_ratio']:.3f}  params {row['params_ratio']:.3f}  "
          f"GFLOPs {row['gflops_after']:.3f}", flush=True)
    return row


def run_model(name: str, ratio: float, target: float, runs: int, threads: int,
              with_tp: bool = False) -> list[dict[str, Any]]:
    model, x, kw, wrap = build(name)
    rows, pruned = [], {}
    variants = [("layer", ratio, None), ("group", ratio, None), ("layer", None, target), ("group", None, target)]
    for selection, r, t in variants:
        label = f"{selection} " + (f"CR {r:g}" if t is None else f"MACs {t:g}")
        start = time.perf_counter()
        masks = lrp.compute_masks(model, x, "l1", r, kw.get("ignored_layers"), selection=selection, target_macs=t,
                                  forward_fn=kw.get("forward_fn"))
        result = lrp.reconstruct(model, x, masks, forward_fn=kw.get("forward_fn"))
        report = result.report
        rows.append({"model": name, "variant": label, "selection": selection, "ratio": masks.meta["ratio"],
                     "target_macs": t, "macs_ratio": report.macs_ratio, "params_ratio": report.params_ratio,
                     "gflops_after": lrp.paper_flops(report.macs_after) / 1e9,
                     "gflops_before": lrp.paper_flops(report.macs_before) / 1e9,
                     "max_rel_error": report.max_rel_error, "lossless": report.lossless,
                     "seconds": time.perf_counter() - start})
        pruned[label] = wrap(result.model) if wrap else result.model.eval()
        print(f"{name:<13} {label:<15} ratio {masks.meta['ratio']:.4f}  MACs {report.macs_ratio:.3f}  "
              f"params {report.params_ratio:.3f}  GFLOPs {rows[-1]['gflops_after']:.3f}  "
              f"rel err {report.max_rel_error:.1e}", flush=True)
    if runs > 0:
        from lrp_plugin.latency.api import time_entries
        from lrp_plugin.latency.sources import ModelEntry, count

        entries = [count(ModelEntry(name, name, module=wrap(model) if wrap else model), x)]
        entries += [count(ModelEntry(f"{name} {label}", name, module=m), x) for label, m in pruned.items()]
        timed = time_entries(entries, ["onnxruntime"], x, threads=threads, warmup=1, runs=runs, progress=False)
        ratios = timed["backends"]["onnxruntime"]["ratios"]
        for row in rows:
            row["ort_latency_ratio"] = ratios[f"{name} {row['variant']}"]["median"]
    if with_tp:
        rows.append(tp_row(name, model, x, kw, ratio))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--target-macs", type=float, default=0.30)
    ap.add_argument("--runs", type=int, default=3, help="ORT latency runs (0: no latency)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tp", action="store_true", help="add Torch-Pruning's MetaPruner + GroupMagnitudeImportance")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "selection.json"))
    args = ap.parse_args()
    rows = []
    for name in args.models:
        rows += run_model(name, args.ratio, args.target_macs, args.runs, args.threads, args.tp)
    print(f"\n{'model':<13} {'variant':<15} {'ratio':>6} {'MACs':>6} {'params':>6} {'GFLOPs':>8} {'rel err':>8}"
          + ("  ORT lat." if args.runs else ""))
    for r in rows:
        print(f"{r['model']:<13} {r['variant']:<15} {r['ratio']:>6.3f} {r['macs_ratio']:>6.3f} "
              f"{r['params_ratio']:>6.3f} {r['gflops_after']:>8.3f} "
              f"{'-' if r['max_rel_error'] is None else format(r['max_rel_error'], '.1e'):>8}"
              + (f"  {r['ort_latency_ratio']:>8.3f}" if 'ort_latency_ratio' in r else ""))
    path = write_json(Path(args.out), {"benchmark": "selection", "command": command(), "rows": rows,
                                       "settings": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
