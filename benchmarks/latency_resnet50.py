"""ResNet50 at CR 0.5 (timm, ImageNet stem, random weights, randomized BN): latency original vs pruned on this CPU.

ONNX Runtime and PyTorch eager, models interleaved, threads set and recorded. The pruned model is
built in-process (l1 masks on conv + BN, then lossless reconstruction). Prints the table and a
summary that puts the latency ratio next to the MACs ratio, and writes JSON (default
benchmarks/results/latency_resnet50.json). The issue's target: on ONNX Runtime the latency ratio
is within 1.3x of the MACs ratio.

    python benchmarks/latency_resnet50.py [--runs 100] [--warmup 10] [--threads 1 2] [--input-shape 3,224,224]

Each thread count is a separate interleaved run (the ratio depends on it: fewer channels
parallelise less well). On a shared machine, 1 thread is the least disturbed by other load.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from lrp_plugin.latency.api import LatencyJob, run_job
from lrp_plugin.latency.report import format_table

TARGET = 1.3  # latency ratio <= 1.3 x MACs ratio on ONNX Runtime


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per backend: latency ratio (median of per-run ratios, p10-p90, ratio of medians) next to the MACs ratio."""
    pruned = list(result["models"])[1]
    macs_ratio = result["models"][pruned]["macs_ratio"]
    out = {"pruned_model": pruned, "macs_ratio": macs_ratio,
           "params_ratio": result["models"][pruned]["params_ratio"], "target": f"latency ratio <= {TARGET} x MACs "
           "ratio on onnxruntime", "backends": {}}
    for b, block in result["backends"].items():
        r = block["ratios"][pruned]
        out["backends"][b] = {"latency_ratio_median": r["median"], "latency_ratio_p10": r["p10"],
                              "latency_ratio_p90": r["p90"], "latency_ratio_of_medians": r["of_medians"],
                              "latency_over_macs_ratio": r["median"] / macs_ratio,
                              "within_target": r["median"] <= TARGET * macs_ratio,
                              "original_median_ms": block["models"][result["reference"]]["median_ms"],
                              "pruned_median_ms": block["models"][pruned]["median_ms"], "runs": block["runs"],
                              "threads": block["threads"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                    help="thread counts to run, each its own interleaved run (default: 1 and all cores)")
    ap.add_argument("--input-shape", default="3,224,224")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--criterion", default="l1")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_resnet50.json"))
    args = ap.parse_args()
    shape = [int(d) for d in args.input_shape.split(",")]
    results, summaries = [], []
    for threads in args.threads:
        result = run_job(LatencyJob(["timm:resnet50"], prune_ratio=0.5, criterion=args.criterion, input_shape=shape,
                                    batch=args.batch, backends=["onnxruntime", "torch"], threads=threads,
                                    warmup=args.warmup, runs=args.runs))
        results.append(result)
        summaries.append(summarize(result))
        print(format_table(result))
    s0 = summaries[0]
    print(f"\nMACs ratio {s0['macs_ratio']:.3f} (params ratio {s0['params_ratio']:.3f}); target: {s0['target']}")
    for summary in summaries:
        for b, s in summary["backends"].items():
            print(f"  {s['threads']} thread(s) {b:<12} latency ratio {s['latency_ratio_median']:.3f} (p10-p90 "
                  f"{s['latency_ratio_p10']:.3f}-{s['latency_ratio_p90']:.3f}) = {s['latency_over_macs_ratio']:.2f} x "
                  f"MACs ratio{'  [within target]' if s['within_target'] else '  [outside target]'}; "
                  f"{s['original_median_ms']:.1f} -> {s['pruned_median_ms']:.1f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/latency_resnet50.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k != "out")
    out.write_text(json.dumps({"benchmark": "latency_resnet50", "command": command, "summaries": summaries,
                               "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
