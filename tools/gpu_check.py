"""Issue 19 on a GPU, in one run: the checks of tests/gpu/ and the CUDA latency table, results as JSON.

    PYTHONPATH=. python3 tools/gpu_check.py [--out benchmarks/results/gpu_check.json] [--only NAME ...]
        [--skip NAME ...] [--device cuda|cpu] [--runs 30]

Every check runs in its own try/except: a failure is recorded with its traceback and the next check
runs; the JSON is rewritten (whole, via a temporary file) after each check, so a run that is cut off
keeps what it finished. ``--device cpu`` runs the same code on the CPU at small sizes (a dry run of
everything but the CUDA-specific lines). Exit status 0 when no check failed.

In this order (the acceptance checks and the table first, so a run cut short keeps them): exact_mode,
bf16_training, fp16_gradscaler, compile (if inductor fails: compile_aot_eager as a second data point),
latency_table (ResNet50 224, layer selection CR 0.5/0.7 x round_to 1/8/16 x fp32/fp16 x batch 1/64,
PyTorch eager, channels_last, CUDA events; pruned/original latency ratio per run), channels_last, ddp,
half_models, mmengine_amp (checks in tests/gpu/checks.py), latency_cli and latency_cuda_graphs
(``lrp latency --device cuda`` end to end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "gpu"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

OPTIONAL = {"mmengine", "cv2", "addict", "yapf", "termcolor", "rich", "mm_toy"}  # missing: skipped, not failed


class Skipped(Exception):
    """A check that cannot run here (a missing optional library, a GPU-only feature on the CPU)."""


def say(msg: str) -> None:
    print(msg, flush=True)


def environment(device: str) -> dict[str, Any]:
    import torch

    from lrp_plugin.latency.runner import device_facts

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                           "device": device, "machine": device_facts()}
    if device.startswith("cuda") and torch.cuda.is_available():
        from lrp_plugin.latency.runner import gpu_facts

        env["gpu"] = gpu_facts(torch)
    for module in ("timm", "torch_pruning", "mmengine", "onnxruntime"):
        try:
            env[module] = __import__(module).__version__
        except ImportError as exc:
            env[module] = f"missing ({exc})"
    return env


def latency_cli(device: str, out_dir: Path, *extra: str) -> dict[str, Any]:
    """``lrp latency`` end to end on the device: torch + torchscript, fp16 (bf16 on a CPU), channels_last (and
    ``extra`` flags); the JSON it writes is read back."""
    from lrp_plugin.latency import cli

    cuda = device.startswith("cuda")
    backends = ["torch"] if "--cuda-graphs" in extra else ["torch", "torchscript"]
    args = ["timm:resnet18", "--prune-ratio", "0.5", "--backend", *backends, "--device", "cuda" if cuda else "cpu",
            "--fp16" if cuda else "--bf16", "--channels-last", *extra,
            "--input-shape", "3,224,224" if cuda else "3,64,64", "--runs", "20" if cuda else "3",
            "--warmup", "5" if cuda else "1", "--no-plot", "--quiet", "--out", str(out_dir)]
    code = cli.main(args)
    assert code == 0, f"lrp latency exited {code}"
    result = json.loads((out_dir / "latency.json").read_text())
    blocks = result["backends"]
    assert set(blocks) == set(backends)
    for block in blocks.values():
        assert block["device"] == ("cuda" if cuda else "cpu") and block["precision"] == ("fp16" if cuda else "bf16")
    return {"args": args, "ratios": {b: blk["ratios"] for b, blk in blocks.items()},
            "median_ms": {b: {m: s["median_ms"] for m, s in blk["models"].items()} for b, blk in blocks.items()},
            "gpu": blocks["torch"].get("gpu"), "device_facts_gpus": result["device"].get("gpus")}


def latency_table(device: str, runs: int) -> dict[str, Any]:
    """ResNet50 at 224 (resnet18 at 64 on a CPU): CR 0.5/0.7 x round_to 1/8/16, fp32/fp16 x batch 1/64."""
    from bench_latency_common import build_variants, models_info, time_cells
    from round_to_study import recommend, rows_for

    cuda = device.startswith("cuda")
    spec, shape = ("timm:resnet50", [3, 224, 224]) if cuda else ("timm:resnet18", [3, 64, 64])
    variants = [{"prune_ratio": cr, "round_to": n} for cr in (0.5, 0.7) for n in (1, 8, 16)]
    t0 = time.time()
    entries, _ = build_variants(spec, shape, variants)
    build_s = time.time() - t0
    info = models_info(entries)
    precisions, batches = (("fp32", "fp16"), (1, 64)) if cuda else (("fp32", "bf16"), (1, 2))
    cells = [{"device": "cuda" if cuda else "cpu", "precision": p, "batch": b, "channels_last": True}
             for p in precisions for b in batches]
    timed = time_cells(entries, shape, ["torch"], cells, warmup=10 if cuda else 1, runs=runs)
    rows = rows_for(spec.split(":")[1], info, timed)
    table = format_table(rows, precisions, batches)
    say(table)
    return {"spec": spec, "input_shape": shape, "build_seconds": build_s, "rows": rows,
            "recommendation": recommend(rows), "table_markdown": table}


def format_table(rows: list[dict], precisions: tuple, batches: tuple) -> str:
    """The issue's table: one line per (CR, round_to), latency ratio per (precision, batch)."""
    cols = [(p, b) for p in precisions for b in batches]
    head = ("| build | MACs ratio | " + " | ".join(f"{p} bs{b}" for p, b in cols) + " |\n|---|---|"
            + "---|" * len(cols))
    lines = [head]
    for cr, n in sorted({(r["cr"], r["round_to"]) for r in rows}):
        cell = {(r["precision"], r["batch"]): r for r in rows if r["cr"] == cr and r["round_to"] == n}
        first = next(iter(cell.values()))
        values = [f"{cell[c]['latency_ratio']:.3f}" if c in cell else "-" for c in cols]
        lines.append(f"| CR {cr}, round_to {n} | {first['macs_ratio']:.3f} | " + " | ".join(values) + " |")
    original = {(r["precision"], r["batch"]): r["original_ms"] for r in rows}
    lines.append("(pruned/original latency, median of per-run ratios; original ms: "
                 + ", ".join(f"{p} bs{b} {original[(p, b)]:.2f}" for p, b in cols if (p, b) in original) + ")")
    return "\n".join(lines)


def write(out: Path, payload: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=1, default=str)
    os.replace(tmp, out)


def run_check(name: str, fn: Callable[[], Any], payload: dict[str, Any], out: Path) -> None:
    say(f"[{name}] started")
    t0 = time.time()
    try:
        record = {"status": "pass", "result": fn()}
    except Skipped as exc:
        record = {"status": "skipped", "reason": str(exc)}
    except ModuleNotFoundError as exc:
        if exc.name not in OPTIONAL:
            record = {"status": "fail", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        else:
            record = {"status": "skipped", "reason": f"{exc.name} is not importable ({exc})"}
    except Exception as exc:  # noqa: BLE001 - recorded; the next check still runs
        record = {"status": "fail", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    record["seconds"] = round(time.time() - t0, 1)
    payload["checks"][name] = record
    payload["summary"] = {s: sorted(n for n, r in payload["checks"].items() if r["status"] == s)
                          for s in ("pass", "fail", "skipped")}
    write(out, payload)
    detail = record.get("error") or record.get("reason") or ""
    say(f"[{name}] {record['status']} in {record['seconds']} s {detail}".rstrip())
    if record["status"] == "fail":
        say(record["traceback"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run at small sizes)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    ap.add_argument("--only", nargs="+", help="run only these checks")
    ap.add_argument("--skip", nargs="+", default=[], help="skip these checks")
    ap.add_argument("--runs", type=int, default=30, help="timed rounds per latency cell (default 30)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    started = time.time()

    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        say(f"no CUDA GPU here (torch {torch.__version__}, CUDA {torch.version.cuda}): use --device cpu for a dry run")
        return 2
    import checks

    payload: dict[str, Any] = {"tool": "tools/gpu_check.py", "command": " ".join(sys.argv),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(device),
                               "checks": {}, "summary": {"pass": [], "fail": [], "skipped": []}}
    write(out, payload)
    work = Path(tempfile.mkdtemp(prefix="lrp-gpu-check-"))

    # the acceptance checks and the latency table first: a run cut short keeps what matters most
    plan: dict[str, Callable[[], Any]] = {
        "exact_mode": lambda: checks.check_exact_mode(device),
        "bf16_training": lambda: checks.check_bf16_training(device),
        "fp16_gradscaler": lambda: checks.check_fp16_gradscaler(device),
        "compile": lambda: checks.check_compile(device),
        "latency_table": lambda: latency_table(device, args.runs),
        "channels_last": lambda: checks.check_channels_last(device),
        "ddp": lambda: checks.check_ddp(device),
        "half_models": lambda: checks.check_half_models(device),
        "mmengine_amp": lambda: checks.check_mmengine_amp(device, str(work / "mm")),
        "latency_cli": lambda: latency_cli(device, work / "latency"),
    }
    if device.startswith("cuda"):
        plan["latency_cuda_graphs"] = lambda: latency_cli(device, work / "latency-graphs", "--cuda-graphs")
    unknown = (set(args.only or []) | set(args.skip)) - set(plan)
    if unknown:
        say(f"unknown checks {sorted(unknown)}: use {sorted(plan)}")
        return 2
    for name, fn in plan.items():
        if (args.only and name not in args.only) or name in args.skip:
            continue
        run_check(name, fn, payload, out)
        if name == "compile" and payload["checks"][name]["status"] == "fail":  # e.g. no C compiler for Triton
            run_check("compile_aot_eager", lambda: checks.check_compile(device, backend="aot_eager"), payload, out)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    payload["seconds"] = round(time.time() - started, 1)
    write(out, payload)
    say(f"done in {payload['seconds']} s: {json.dumps(payload['summary'])}; wrote {out}")
    return 1 if payload["summary"]["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
