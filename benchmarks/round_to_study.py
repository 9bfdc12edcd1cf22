"""Which channel multiple pays on which runtime: ResNet50 and YOLOv3-D53 at CR 0.5, round_to in {1,4,8,16,32}.

``round_to=N`` keeps every pruned layer's channel count at a multiple of N by keeping some masked
channels (all zero, so the output is unchanged). It costs MACs and may buy latency, because
vectorised kernels (ONNX Runtime's NCHWc, ncnn's packing, oneDNN, GPU tensor cores) want multiples
of 4/8/16. All variants of a model are timed interleaved with the original, per runtime and cell
(thread count on a CPU; precision and batch on a GPU); the latency ratio is per-run pruned/original
from the same rounds.

    python benchmarks/round_to_study.py [--models resnet50 yolov3] [--backends onnxruntime ncnn torch]
        [--threads 1 2] [--runs 10] [--warmup 2] [--out benchmarks/results/round_to_study.json]
    python benchmarks/round_to_study.py --device cuda --models resnet50 [--precisions fp32 fp16]
        [--batches 1 64] [--round-to 1 8 16] [--channels-last]     # PyTorch eager on the GPU, CUDA events

Results of models not run this time are kept from an existing JSON, so the models can be run
separately (a GPU run is stored under ``MODEL@cuda``). The recommendation per runtime (per backend,
device and precision) is the round_to with the lowest mean latency ratio over all cells, kept only
when it beats round_to=1 by more than MARGIN in every cell; it is what a backend record's
``round_to_auto`` should say (``lrp_plugin/latency/runner.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_latency_common import (  # noqa: E402
    MODELS,
    build_variants,
    command,
    models_info,
    time_at_threads,
    time_cells,
    write_json,
)

CR = 0.5
MARGIN = 0.02  # a win smaller than 2 % of the original's latency is within this machine's noise


def runtime_key(backend: str, device: str, precision: str) -> str:
    """How a runtime is named in the recommendation: the backend alone on a CPU in fp32, else with both."""
    return backend if (device, precision) == ("cpu", "fp32") else f"{backend}@{device}/{precision}"


def rows_for(model: str, entries_info: dict[str, Any], cells: list[tuple[dict[str, Any], dict[str, Any]]]
             ) -> list[dict]:
    """One row per (cell, backend, pruned variant); variants may differ in CR as well as in round_to."""
    names = list(entries_info)
    ref = names[0]
    rows = []
    for cell, result in cells:
        device, precision = cell.get("device") or "cpu", cell.get("precision", "fp32")
        for backend, block in result["backends"].items():
            for name in names[1:]:
                info = entries_info[name]
                pruned = info["pruned"]
                base = next(n for n in names[1:] if entries_info[n]["pruned"]["ratio"] == pruned["ratio"]
                            and (entries_info[n]["pruned"] or {}).get("round_to") in (None, 1))
                r = block["ratios"][name]
                rows.append({"model": model, "backend": backend, "runtime": runtime_key(backend, device, precision),
                             "device": device, "precision": precision, "threads": cell.get("threads"),
                             "batch": cell.get("batch", 1), "channels_last": cell.get("channels_last", False),
                             "cr": pruned["ratio"], "round_to": pruned["round_to"] or 1,
                             "macs_ratio": info["macs_ratio"],
                             "zero_channel_macs": info["macs"] - entries_info[base]["macs"],
                             "zero_channel_macs_pct_of_original": 100 * (info["macs"] - entries_info[base]["macs"])
                             / entries_info[ref]["macs"],
                             "latency_ratio": r["median"], "latency_ratio_p10": r["p10"],
                             "latency_ratio_p90": r["p90"], "latency_over_macs": r["median"] / info["macs_ratio"],
                             "original_ms": block["models"][ref]["median_ms"],
                             "pruned_ms": block["models"][name]["median_ms"], "runs": block["runs"]})
    return rows


def recommend(rows: list[dict]) -> dict[str, Any]:
    """Per runtime: the round_to with the lowest mean latency ratio, if it beats 1 by > MARGIN in every cell."""
    out = {}
    for runtime in sorted({r.get("runtime", r["backend"]) for r in rows}):
        cells: dict[tuple, dict[int, float]] = {}
        for r in rows:
            if r.get("runtime", r["backend"]) == runtime:
                key = (r["model"], r.get("cr", CR), r["threads"], r.get("batch", 1))
                cells.setdefault(key, {})[r["round_to"]] = r["latency_ratio"]
        settings = sorted(set.intersection(*(set(c) for c in cells.values())))
        mean = {n: sum(c[n] for c in cells.values()) / len(cells) for n in settings}
        best = min(mean, key=mean.get)
        consistent = all(c[best] < c[1] - MARGIN for c in cells.values()) if best != 1 and 1 in settings else False
        out[runtime] = {"mean_latency_ratio": mean, "best_mean": best, "wins_every_cell": consistent,
                        "recommended": best if consistent else 1, "cells": len(cells)}
    return out


def print_rows(rows: list[dict]) -> None:
    head = ["model", "runtime", "thr", "batch", "CR", "round_to", "MACs ratio", "+zero MACs %",
            "latency ratio (p10-p90)", "lat/MACs", "orig ms", "pruned ms"]
    print("  ".join(head))
    for r in sorted(rows, key=lambda r: (r["model"], r.get("runtime", r["backend"]), r["threads"] or 0,
                                         r.get("batch", 1), r.get("cr", CR), r["round_to"])):
        print(f"{r['model']:<9} {r.get('runtime', r['backend']):<17} {r['threads'] or '-':>3} {r.get('batch', 1):>5} "
              f"{r.get('cr', CR):>4} {r['round_to']:>8}  {r['macs_ratio']:.3f}  "
              f"{r['zero_channel_macs_pct_of_original']:6.2f}  {r['latency_ratio']:.3f} ({r['latency_ratio_p10']:.3f}-"
              f"{r['latency_ratio_p90']:.3f})  {r['latency_over_macs']:.2f}  {r['original_ms']:8.2f} "
              f"{r['pruned_ms']:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--round-to", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    ap.add_argument("--backends", nargs="+", help="default: onnxruntime ncnn torch (CPU), torch (CUDA)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU: thread counts, each a cell")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], help="CUDA: each a cell")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="CUDA: each a cell")
    ap.add_argument("--channels-last", action="store_true", help="CUDA: model and input channels_last")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "round_to_study.json"))
    args = ap.parse_args()
    out = Path(args.out)
    suffix = "" if args.device == "cpu" else f"@{args.device}"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    per_model = {m: v for m, v in previous.get("models", {}).items() if m not in {n + suffix for n in args.models}}
    for model in args.models:
        spec, shape = MODELS[model]
        entries, x = build_variants(spec, shape, [{"prune_ratio": CR, "round_to": n} for n in args.round_to])
        info = models_info(entries)
        if args.device == "cpu":
            by_threads = time_at_threads(entries, x, args.backends or ["onnxruntime", "ncnn", "torch"], args.threads,
                                         warmup=args.warmup, runs=args.runs)
            cells = [({"threads": t}, r) for t, r in by_threads.items()]
        else:
            cells = time_cells(entries, shape, args.backends or ["torch"],
                               [{"device": args.device, "precision": p, "batch": b, "channels_last": args.channels_last}
                                for p in args.precisions for b in args.batches], warmup=args.warmup, runs=args.runs)
        per_model[model + suffix] = {"spec": spec, "input_shape": [1, *shape], "command": command(), "models": info,
                                     "rows": rows_for(model, info, cells), "device": cells[0][1]["device"],
                                     "results": {json.dumps(c, sort_keys=True): r for c, r in cells}}
    rows = [r for m in per_model.values() for r in m["rows"]]
    print_rows(rows)
    rec = recommend(rows)
    for runtime, r in rec.items():
        print(f"{runtime}: best mean round_to {r['best_mean']} (mean latency ratio "
              + ", ".join(f"{n}: {v:.3f}" for n, v in r["mean_latency_ratio"].items())
              + f"); recommended {r['recommended']}" + ("" if r["wins_every_cell"] else " (no setting beats 1 in every "
                                                         f"cell by > {MARGIN:.0%})"))
    write_json(out, {"benchmark": "round_to_study", "cr": CR, "margin": MARGIN, "recommendation": rec,
                     "models": per_model})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
