"""Where the pruned model's time goes on ONNX Runtime: per-op-type and per-conv latency ratio vs MACs ratio.

Uses ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) on the original and a pruned
model (CR 0.5, ``--round-to N``), 1 thread by default. For each Conv node present in both graphs
(ORT names optimized nodes after their output tensors, which follow the module names) the time
is compared, and the nodes whose pruned time exceeds (model MACs ratio x original time) the most
are listed, with the nodes that exist only in the pruned graph (layout reorders, unfused convs):
those are what keeps the model-level ratio above the MACs ratio.

    python benchmarks/profile_ort.py [--model resnet50|yolov3] [--round-to 1] [--threads 1] [--runs 20]
        [--out benchmarks/results/profile_ort_MODEL_rN.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_latency_common import MODELS, build_variants, command, write_json  # noqa: E402

from lrp_plugin.latency.export import export_onnx  # noqa: E402


def profile(path: Path, x, threads: int, runs: int) -> tuple[dict[str, float], dict[str, str]]:
    """Mean kernel time (ms) per node over ``runs`` runs (after 2 warm-up runs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()  # the timed runs' settings (runner.ort_session), plus the profiler
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    for _ in range(2 + runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            per_node[name].append(e["dur"] / 1000.0)
            op_of[name] = e.get("args", {}).get("op_name", "?")
    return {n: sum(v[2:]) / max(1, len(v[2:])) for n, v in per_node.items()}, op_of


def _plain(node: str) -> str:
    """An optimized node's name without ORT's layout suffixes, to match it across the two graphs."""
    for suffix in ("_nchwc", "_output_0"):
        node = node.removesuffix(suffix)
    return node


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", choices=list(MODELS))
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    spec, shape = MODELS[args.model]
    entries, x = build_variants(spec, shape, [{"prune_ratio": 0.5, "round_to": args.round_to}])
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"m{i}.onnx" for i in range(2)]
        for e, p in zip(entries, paths):
            export_onnx(e.module, x, p)
        (t0, ops0), (t1, ops1) = (profile(p, x, args.threads, args.runs) for p in paths)
        by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for n, t in t0.items():
        by_op[ops0[n]][0] += t
    for n, t in t1.items():
        by_op[ops1[n]][1] += t
    total0, total1 = sum(t0.values()), sum(t1.values())
    macs_ratio = entries[1].macs / entries[0].macs
    print(f"{args.model} CR 0.5 round_to {args.round_to}, {args.threads} thread(s): kernel time {total0:.1f} -> "
          f"{total1:.1f} ms (ratio {total1 / total0:.3f}); MACs ratio {macs_ratio:.3f}")
    print("op type            orig ms  pruned ms  share orig  ratio")
    ops = sorted(by_op.items(), key=lambda kv: -kv[1][0])
    for op, (a, b) in ops:
        print(f"{op:<18} {a:8.2f} {b:10.2f} {100 * a / total0:10.1f}% {b / a if a else float('nan'):6.3f}")
    nodes = []
    k0, k1 = ({_plain(n): n for n in t} for t in (t0, t1))
    for key in k0.keys() & k1.keys():  # same optimized node in both graphs
        a, b = t0[k0[key]], t1[k1[key]]
        nodes.append({"node": key, "op": ops1[k1[key]], "orig_ms": a, "pruned_ms": b, "latency_ratio": b / a,
                      "excess_ms": b - macs_ratio * a})
    nodes.sort(key=lambda c: -c["excess_ms"])
    only = sorted(((n, t1[n], ops1[n]) for n in t1 if _plain(n) not in k0), key=lambda v: -v[1])
    print(f"nodes in both graphs whose time exceeds the model's MACs ratio the most ({len(nodes)} matched):")
    for c in nodes[: args.top]:
        print(f"  {c['node'][:58]:<58} {c['op']:<12} {c['orig_ms']:6.2f} -> {c['pruned_ms']:6.2f} ms "
              f"(ratio {c['latency_ratio']:.3f})")
    print(f"nodes only in the pruned graph: {len(only)}, {sum(v[1] for v in only):.2f} ms; largest: "
          + ", ".join(f"{n[:40]} ({op}, {t:.2f} ms)" for n, t, op in only[:5]))
    out = Path(args.out or Path(__file__).parent / "results" / f"profile_ort_{args.model}_r{args.round_to}.json")
    payload: dict[str, Any] = {"benchmark": "profile_ort", "command": command(), "macs_ratio": macs_ratio,
                               "kernel_ms": [total0, total1], "by_op": {k: v for k, v in ops}, "nodes": nodes,
                               "only_in_pruned": [{"node": n, "ms": t, "op": op} for n, t, op in only]}
    print(f"wrote {write_json(out, payload)}")


if __name__ == "__main__":
    main()
