"""Output of a latency run: a terminal table, JSON, CSV and a PNG plot (matplotlib, Agg, imported lazily)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..core.files import write_text

CSV_FIELDS = ["backend", "model", "params", "macs", "macs_ratio", "runs", "threads", "device", "precision", "mean_ms",
              "std_ms", "median_ms", "p10_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "throughput_per_s",
              "latency_ratio_median", "latency_ratio_mean", "latency_ratio_std", "latency_ratio_p10",
              "latency_ratio_p90", "latency_over_macs_ratio"]


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (backend, model): latency stats next to params/MACs and both ratios."""
    out = []
    models = result.get("models", {})
    for backend, block in result["backends"].items():
        for name, s in block["models"].items():
            info = models.get(name, {})
            r = block["ratios"].get(name)
            row = {"backend": backend, "model": name, "params": info.get("params"), "macs": info.get("macs"),
                   "macs_ratio": info.get("macs_ratio"), "runs": s["runs"], "threads": block["threads"],
                   "device": block.get("device"), "precision": block.get("precision"),
                   **{k: s[k] for k in ("mean_ms", "std_ms", "median_ms", "p10_ms", "p90_ms", "p99_ms", "min_ms",
                                         "max_ms", "throughput_per_s")}}
            if r is not None:
                row.update(latency_ratio_median=r["median"], latency_ratio_mean=r["mean"],
                           latency_ratio_std=r["std"], latency_ratio_p10=r["p10"], latency_ratio_p90=r["p90"])
                if info.get("macs_ratio"):
                    row["latency_over_macs_ratio"] = r["median"] / info["macs_ratio"]
            out.append(row)
    return out


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: per backend and model, latency with spread, and the ratios side by side."""
    headers = ["backend", "model", "MACs", "MACs ratio", "median ms", "mean±std ms", "p90 ms", "p99 ms", "min ms",
               "per s", "latency ratio (p10-p90)"]
    table = []
    for r in rows(result):
        ratio = ("-" if r.get("latency_ratio_median") is None else  # trtexec summaries have no p10: "-"
                 f"{r['latency_ratio_median']:.3f} ({_fmt(r['latency_ratio_p10'], '.3f')}-"
                 f"{_fmt(r['latency_ratio_p90'], '.3f')})")
        table.append([r["backend"], r["model"], _fmt(r["macs"] and r["macs"] / 1e6, ".1f") + "M",
                      _fmt(r["macs_ratio"], ".3f"), _fmt(r["median_ms"], ".2f"),
                      f"{_fmt(r['mean_ms'], '.2f')}±{_fmt(r['std_ms'], '.2f')}", _fmt(r["p90_ms"], ".2f"),
                      _fmt(r["p99_ms"], ".2f"), _fmt(r["min_ms"], ".2f"), _fmt(r["throughput_per_s"], ".1f"), ratio])
    widths = [max(len(str(x)) for x in [h] + [row[i] for row in table]) for i, h in enumerate(headers)]
    lines = ["  ".join(f"{h:<{w}}" for h, w in zip(headers, widths))]
    lines += ["  ".join(f"{str(c):<{w}}" for c, w in zip(row, widths)) for row in table]
    s = result.get("settings", {})
    head = (f"latency ({result.get('mode', 'local')}{' on ' + result['host'] if result.get('host') else ''}): "
            f"input {s.get('input_shape')}, {s.get('threads')} threads, warm-up {s.get('warmup')}, "
            f"models interleaved; ratios are per-run pruned/{result.get('reference')} from the same runs")
    if s.get("device") == "cuda" or s.get("precision", "fp32") != "fp32" or s.get("channels_last"):
        head += (f"\nPyTorch on {s.get('device') or 'cpu'}, {s.get('precision')}"
                 + (", channels_last" if s.get("channels_last") else "")
                 + (", CUDA graphs" if s.get("cuda_graphs") else "")
                 + (" (CUDA events, cuDNN autotuned)" if s.get("device") == "cuda" else ""))
    from .device import describe

    tail = [f"device: {describe(result['device'])}"] if result.get("device") else []
    tail += [f"WARNING: {w}" for w in result.get("warnings", [])]
    return "\n".join([head, *lines, *tail])


def write_json(path: Path, result: dict[str, Any]) -> Path:
    return write_text(path, json.dumps(result, indent=1))


def write_csv(path: Path, result: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows(result):
            w.writerow(r)
    return path


def plot_png(path: Path, result: dict[str, Any]) -> Path:
    """Median latency per model with p10-p90 whiskers, one panel per backend, ratios written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(result["backends"])
    fig, axes = plt.subplots(1, len(backends), figsize=(4.5 * len(backends), 4), squeeze=False)
    for ax, b in zip(axes[0], backends):
        block = result["backends"][b]
        names = list(block["models"])
        med = [block["models"][n]["median_ms"] for n in names]
        lo = [m - (block["models"][n]["p10_ms"] if block["models"][n]["p10_ms"] is not None else m)
              for m, n in zip(med, names)]
        hi = [(block["models"][n]["p90_ms"] if block["models"][n]["p90_ms"] is not None else m) - m
              for m, n in zip(med, names)]
        bars = ax.bar(range(len(names)), med, yerr=[lo, hi], capsize=4,
                      color=["#888888"] + ["#3a7bd5"] * (len(names) - 1))
        for bar, n in zip(bars, names):
            r = block["ratios"].get(n)
            macs = result.get("models", {}).get(n, {}).get("macs_ratio")
            if r is not None:
                label = f"x{r['median']:.2f}" + (f"\n(MACs x{macs:.2f})" if macs else "")
                ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                            fontsize=8, xytext=(0, 8), textcoords="offset points")
        ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
        ax.set_title(f"{b}, {block['threads'] or '-'} threads, {block['runs'] or '-'} runs", fontsize=9)
        ax.set_ylabel("latency per batch (ms): median, p10-p90")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(out_dir: Path, result: dict[str, Any], plot: bool = True) -> dict[str, Path]:
    """latency.json, latency.csv and (unless ``plot=False``) latency.png in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"json": write_json(out_dir / "latency.json", result), "csv": write_csv(out_dir / "latency.csv", result)}
    if plot:
        paths["png"] = plot_png(out_dir / "latency.png", result)
    return paths
