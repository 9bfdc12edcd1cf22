"""Multi-process training on CPU (gloo) through MMEngine's Runner, for machines without GPUs.

    torchrun --nproc_per_node 2 -m lrp_plugin.integrations.mmengine.train_cpu CONFIG [--work-dir DIR]

The stock ``tools/dist_train.sh`` is the GPU path; on CPU it fails because mmengine's
``init_dist`` calls ``torch.cuda.set_device``. This launcher starts the gloo process group
itself (so the Runner does not), and builds DDP with ``device_ids=None``, as CPU modules need.
Everything else is the config's: the hook masks on every rank and rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import os
import sys

from ...errors import UsageError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def build_cpu_runner(cfg):
    """A Runner for ``cfg`` in the already started gloo group, with DDP on CPU."""
    from mmengine.runner import Runner

    cfg.launcher = "pytorch"
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    wrapper.setdefault("type", "MMDistributedDataParallel")
    wrapper["device_ids"] = None  # CPU modules: DDP takes no device ids
    cfg.model_wrapper_cfg = wrapper
    return Runner.from_cfg(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun --nproc_per_node N -m lrp_plugin.integrations.mmengine.train_cpu",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--work-dir", help="defaults to the config's work_dir, else ./work_dirs/<config name>")
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the work dir")
    args = parser.parse_args(argv)
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise UsageError(f"train_cpu runs under torchrun (missing {missing}): "
                         f"torchrun --nproc_per_node 2 -m lrp_plugin.integrations.mmengine.train_cpu {args.config}")

    import torch.distributed as dist
    from mmengine.config import Config

    dist.init_process_group(backend="gloo")  # before the Runner: its init_dist would call torch.cuda.set_device
    try:
        cfg = Config.fromfile(args.config)
        if args.work_dir:
            cfg.work_dir = args.work_dir
        elif cfg.get("work_dir") is None:
            cfg.work_dir = os.path.join("./work_dirs", os.path.splitext(os.path.basename(args.config))[0])
        cfg.resume = bool(args.resume) or bool(cfg.get("resume", False))
        build_cpu_runner(cfg).train()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
