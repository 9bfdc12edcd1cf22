"""Two processes on CPU (gloo) through the hook, started the documented way:
``torchrun --nproc_per_node 2 -m lrp_plugin.integrations.mmengine.train_cpu CONFIG``.

A probe hook (written by the test, imported by the config) records on every rank what the
model and LosslessPruningHook hold after training. Checked: DDP wrapped the model, the same
masks are held on both ranks, both ranks trained the same weights, and the pruned files were
written once, by rank 0.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _extras import require

require("mmengine")

TESTS = Path(__file__).resolve().parent

PROBE = '''
import json, os
from pathlib import Path

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
import lrp_plugin as lrp
from lrp_plugin.integrations.mmengine import LosslessPruningHook


@HOOKS.register_module()
class RankProbe(Hook):
    priority = "LOWEST"  # after LosslessPruningHook's after_train

    def after_train(self, runner):
        hook = next(h for h in runner.hooks if isinstance(h, LosslessPruningHook))
        model = lrp.unwrap_model(runner.model)
        record = dict(rank=get_rank(), world=get_world_size(), wrapper=type(runner.model).__name__,
                      held=lrp.masks_hold(runner.model), held_masks=sorted(lrp.get_masks(model) or {}),
                      kept={k: int(v.sum()) for k, v in hook.masks.items()},
                      weights=float(sum(p.detach().double().abs().sum() for p in model.parameters())),
                      pruned_path=str(hook.pruned_path) if hook.pruned_path else None,
                      lossless=hook.report.lossless)
        Path(runner.work_dir, f"rank{get_rank()}.json").write_text(json.dumps(record))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config: Path, work: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """The README's CPU command, 2 processes, in a subprocess."""
    paths = [str(extra_path) if extra_path else None, str(TESTS), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, paths)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "lrp_plugin.integrations.mmengine.train_cpu",
           str(config), "--work-dir", str(work)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=config.parent, timeout=600)


def test_two_cpu_processes_hold_masks_and_rank0_writes(tmp_path):
    from mm_toy import toy_config

    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "rank_probe.py").write_text(PROBE)
    cfg = toy_config(tmp_path / "unused")
    cfg.custom_imports.imports.append("rank_probe")
    cfg.custom_hooks.append(dict(type="RankProbe"))
    cfg.train_dataloader.batch_size = 1  # 8 images, 2 ranks: distinct images per rank
    cfg.pop("work_dir")
    cfg.dump(str(tmp_path / "dist.py"))
    work = tmp_path / "work"

    result = _torchrun(tmp_path / "dist.py", work, extra_path=tmp_path / "probe")
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])

    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert all(r["wrapper"] == "MMDistributedDataParallel" for r in ranks)
    assert all(r["held"] and r["lossless"] for r in ranks), "masks exactly zero on every rank"
    assert ranks[0]["kept"] == ranks[1]["kept"] and len(ranks[0]["kept"]) > 0
    assert ranks[0]["held_masks"] == ranks[1]["held_masks"] == sorted(ranks[0]["kept"])
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-9), "DDP kept the ranks in step"
    assert ranks[0]["pruned_path"] == str(work / "pruned.pth") and ranks[1]["pruned_path"] is None
    assert sorted(p.name for p in work.glob("pruned*")) == ["pruned.pth", "pruned.pth.spec.json", "pruned.py"]
    from lrp_plugin.integrations.mmengine import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()  # the message hub's HistoryBuffer (nothing else unpickles)
    saved = torch.load(work / "iter_2.pth", map_location="cpu", weights_only=True)["meta"]["lrp"]["masks"]
    assert {k: int(v.sum()) for k, v in saved["masks"].items()} == ranks[0]["kept"]


def test_reconstruct_first_is_refused_under_ddp(tmp_path):
    """The model cannot be rebuilt inside DDP: a clear error on the ranks, no pruned files."""
    from mm_toy import toy_config

    cfg = toy_config(tmp_path / "unused", order="reconstruct_then_finetune")
    cfg.pop("work_dir")
    cfg.dump(str(tmp_path / "dist.py"))
    result = _torchrun(tmp_path / "dist.py", tmp_path / "work")
    assert result.returncode != 0
    assert "cannot rebuild a model already wrapped in DDP" in result.stdout + result.stderr
    assert not list((tmp_path / "work").glob("pruned*"))


def test_train_cpu_outside_torchrun_names_the_command(tmp_path):
    from lrp_plugin.errors import UsageError
    from lrp_plugin.integrations.mmengine.train_cpu import TORCHRUN_ENV, main

    if any(k in os.environ for k in TORCHRUN_ENV):
        pytest.skip("running under torchrun")
    with pytest.raises(UsageError, match="torchrun --nproc_per_node 2"):
        main([str(tmp_path / "cfg.py")])
