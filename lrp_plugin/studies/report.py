"""Report folders: every number as JSON, a Markdown summary, and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.files import write_text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str))


def plot_channels(path: Path, original: dict[str, int], pruned: dict[str, dict[str, int]]) -> Path:
    """Output channels of every conv: original against each pruned model."""
    plt = _pyplot()
    names = list(original)
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.22), 4))
    ax.bar(range(len(names)), [original[n] for n in names], color="#cccccc", label="original")
    for label, channels in pruned.items():
        ax.plot(range(len(names)), [channels.get(n, 0) for n in names], marker="o", markersize=3, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    ax.set_title("Channels per conv layer, before and after reconstruction")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_accuracy_vs_macs(path: Path, points: list[dict[str, Any]]) -> Path:
    """Accuracy against MACs, one marker per (criterion, variant); ``points`` carry label/macs/accuracy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for p in points:
        ax.scatter(p["macs"] / 1e6, p["accuracy"] * 100, s=45, marker=p.get("marker", "o"), label=p["label"])
    ax.set_xlabel("MACs (millions; the paper's FLOPs = 2 x MACs)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against MACs per criterion")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
