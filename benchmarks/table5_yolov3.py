"""The shape of the paper's Table 5 on this machine: YOLOv3-D53 at 416, original vs CR 0.5/0.7/0.9.

FLOPs ratio and latency ratio side by side, per runtime (ONNX Runtime and ncnn by default), all
models interleaved in the same rounds. Random weights with randomized BatchNorm: latency depends
on shapes, not values; each pruned model is built in-process (l1 masks, lossless reconstruction,
verified) through the generic mmdet-detector adapter, and its tensor-only forward (backbone + neck + head,
no post-processing) is exported and checked against PyTorch before it is timed.

    python benchmarks/table5_yolov3.py [--ratios 0.5 0.7 0.9] [--backends onnxruntime ncnn] [--threads 2]
        [--runs 5] [--warmup 1] [--round-to N] [--selections layer group] [--target-macs 0.2234]
        [--out benchmarks/results/table5_yolov3.json]

``--selections layer group`` builds each CR with per-layer masks (the paper's rule, union at the
rebuild) and with one mask per coupled group; ``--target-macs`` adds group rows at MACs budgets
(e.g. 0.2234, the paper's 14.671 G of 65.658 G). The paper's GFLOPs (Table 5) are printed beside.

The paper's figure for comparison (Raspberry Pi 4, CR 0.5): 5.0755 s -> 1.5771 s, latency ratio
0.311 at FLOPs ratio 0.223, i.e. 1.39x the FLOPs ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_latency_common import MODELS, build_variants, command, models_info, time_at_threads, write_json  # noqa: E402

from lrp_plugin.core.metrics import paper_flops  # noqa: E402

PAPER_PI4_CR05 = {"latency_ratio": 1.5771 / 5.0755, "flops_ratio": 0.223}
PAPER_GFLOPS = {0.0: 65.658, 0.5: 14.671, 0.7: 10.019, 0.9: 3.248}  # Table 5, YOLOv3-D53 at 416


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "ncnn"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--round-to", type=int, default=None)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--selections", nargs="+", default=["layer", "group"], choices=["layer", "group"])
    ap.add_argument("--target-macs", type=float, nargs="*", default=[], help="group rows at these MACs budgets")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "table5_yolov3.json"))
    args = ap.parse_args()
    spec, _ = MODELS["yolov3"]
    variants = [{"prune_ratio": r, "round_to": args.round_to, "selection": sel}
                for sel in args.selections for r in args.ratios]
    variants += [{"target_macs": t, "round_to": args.round_to, "selection": "group"} for t in args.target_macs]
    entries, x = build_variants(spec, [3, args.size, args.size], variants)
    info = models_info(entries)
    timed = time_at_threads(entries, x, args.backends, [args.threads], warmup=args.warmup, runs=args.runs)
    result = timed[args.threads]
    ref = entries[0].name
    rows = []
    for e, v in zip(entries, [{"prune_ratio": 0.0, "selection": "-"}, *variants]):
        cr = v.get("prune_ratio")
        row = {"model": e.name, "cr": cr, "selection": v["selection"], "target_macs": v.get("target_macs"),
               "gflops": paper_flops(e.macs) / 1e9, "paper_gflops": PAPER_GFLOPS.get(cr),
               "params_m": e.params / 1e6, "flops_ratio": info[e.name]["macs_ratio"]}
        for b, block in result["backends"].items():
            row[f"{b}_median_ms"] = block["models"][e.name]["median_ms"]
            if e.name != ref:
                r = block["ratios"][e.name]
                row[f"{b}_latency_ratio"] = r["median"]
                row[f"{b}_latency_ratio_p10_p90"] = [r["p10"], r["p90"]]
                row[f"{b}_latency_over_flops"] = r["median"] / row["flops_ratio"]
        rows.append(row)
    print(f"YOLOv3-D53 {args.size}x{args.size}, {args.threads} threads, {args.runs} interleaved runs; "
          f"latency ratio = median of per-run pruned/original")
    head = (f"{'CR / budget':>12} {'selection':>9} {'GFLOPs':>7} {'paper':>7} {'params M':>8} "
            f"{'FLOPs ratio':>11}") + "".join(
        f" | {b + ' ms':>16} {'lat. ratio':>10} {'lat/FLOPs':>9}" for b in args.backends)
    print(head)
    for row in rows:
        amount = f"CR {row['cr']:.1f}" if row["cr"] is not None else f"MACs {row['target_macs']:g}"
        paper_g = f"{row['paper_gflops']:.3f}" if row["paper_gflops"] is not None else "-"
        line = (f"{amount:>12} {row['selection']:>9} {row['gflops']:>7.3f} {paper_g:>7} {row['params_m']:>8.2f} "
                f"{row['flops_ratio']:>11.3f}")
        for b in args.backends:
            lat = row.get(f"{b}_latency_ratio")
            line += (f" | {row[f'{b}_median_ms']:>16.1f} {lat if lat is not None else 1.0:>10.3f} "
                     f"{row.get(f'{b}_latency_over_flops', 1.0):>9.2f}")
        print(line)
    paper = PAPER_PI4_CR05
    print(f"paper, Raspberry Pi 4, CR 0.5: latency ratio {paper['latency_ratio']:.3f} at FLOPs ratio "
          f"{paper['flops_ratio']:.3f} ({paper['latency_ratio'] / paper['flops_ratio']:.2f}x)")
    path = write_json(Path(args.out), {"benchmark": "table5_yolov3", "command": command(), "rows": rows,
                                       "paper_pi4_cr05": PAPER_PI4_CR05, "models": info, "result": result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
