"""Device facts (CPU, cores, runtimes; Pi governor/temperature/throttling; Jetson power mode/clocks; GPUs).

The collectors live in ``runner.py`` because the same code must run on the device without this
package; this module is the host-side entry point and formats the facts for the terminal.
"""

from __future__ import annotations

from typing import Any

from .runner import device_facts, device_warnings, runtime_versions

__all__ = ["describe", "device_facts", "device_warnings", "runtime_versions"]


def describe(facts: dict[str, Any]) -> str:
    """One line: where the numbers were taken, with the facts that change latency."""
    rt = facts.get("runtimes", {})
    parts = [f"{facts.get('board') or facts.get('cpu_model')} ({facts.get('machine')}, {facts.get('cpus_usable')}"
             f"/{facts.get('cpu_count')} cores usable)", f"python {rt.get('python')}"]
    parts += [f"{k} {rt[k]}" for k in ("onnxruntime", "torch") if rt.get(k)]
    for gpu in facts.get("gpus") or []:  # nvidia-smi: clocks in MHz
        parts.append(f"GPU {gpu.get('name')} (SM {gpu.get('clocks.sm')}/{gpu.get('clocks.max.sm')} MHz, "
                     f"{gpu.get('temperature.gpu')} C, {gpu.get('power.draw')} W)")
    for key, label in (("governor", "governor"), ("temperature_c", "temp C"), ("throttled", "throttled"),
                       ("nvpmodel", "nvpmodel"), ("clocks_locked", "clocks locked")):
        if facts.get(key) is not None:
            value = facts[key] if key != "nvpmodel" else " ".join(str(facts[key]).split())[:60]
            parts.append(f"{label} {value}")
    return ", ".join(parts)
