"""checkpoint_safety.py: MMEngine checkpoints load with weights_only=True; allow-listing happens
when the hook (or LRPPruned) is built, never on import."""

from __future__ import annotations

import subprocess
import sys

import torch
from _extras import require


def test_missing_mmengine_names_the_extra():
    code = ("import sys; sys.modules['mmengine'] = None\n"
            "try:\n    import lrp_plugin.integrations.mmengine\n"
            "except ImportError as e:\n    print(type(e).__name__, e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.startswith("MissingExtraError") and "pip install 'lrp_plugin[mmdet]'" in result.stdout, (
        result.stdout, result.stderr[-2000:])


def test_import_allow_lists_nothing_building_the_hook_does():
    require("mmengine")
    code = (
        "import torch\n"
        "from mmengine.logging import HistoryBuffer\n"
        "import lrp_plugin.integrations.mmengine as mm\n"
        "assert HistoryBuffer not in torch.serialization.get_safe_globals(), 'import must not allow-list'\n"
        "mm.LosslessPruningHook(); n = len(torch.serialization.get_safe_globals())\n"
        "assert HistoryBuffer in torch.serialization.get_safe_globals()\n"
        "mm.LosslessPruningHook(); assert len(torch.serialization.get_safe_globals()) == n, 'once per process'\n"
        "assert getattr not in torch.serialization.get_safe_globals(), 'builtins.getattr stays refused'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_message_hub_loads_weights_only(tmp_path):
    require("mmengine")
    from mmengine.logging import HistoryBuffer

    from lrp_plugin.integrations.mmengine import allow_mmengine_checkpoints, portable_message_hub

    allow_mmengine_checkpoints()
    buffer = HistoryBuffer()
    for value in (1.5, 2.5, 4.0):
        buffer.update(value)
    live = {"log_scalars": {"train/loss": buffer}, "runtime_info": {"iter": 3}}
    checkpoint = {"message_hub": live}
    portable_message_hub(checkpoint)
    assert live["log_scalars"]["train/loss"] is buffer, "the live MessageHub is never changed"
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    back = torch.load(tmp_path / "ckpt.pth", weights_only=True)["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(back, HistoryBuffer) and back.current() == 4.0 and back.mean() == buffer.mean()
    assert back.max_length == buffer.max_length
