"""The GPU checks of issue 19, one function each, shared by ``tests/gpu/`` (pytest, CUDA only) and
``tools/gpu_check.py`` (one script, JSON out; ``--device cpu`` runs the same code on the CPU).

Each check builds real models (timm, random weights, randomized BatchNorm), runs what a GPU user runs
(bf16/fp16 autocast, GradScaler, torch.compile, DDP, MMEngine's AmpOptimWrapper, channels_last),
asserts what must hold, and returns the numbers it measured. Nothing here changes global settings
without restoring them.
"""

from __future__ import annotations

import copy
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn import functional as F

import lrp_plugin as lrp
from lrp_plugin.core.verify import exact_arithmetic, precision_switches
from lrp_plugin.testing import randomize_batchnorm

LOSSLESS = 1e-5  # the acceptance bound for float32 models


@dataclass(frozen=True)
class Scale:
    """Model and input sizes: ``full`` on a GPU, ``small`` for the CPU dry run."""

    model: str  # timm name of the main model
    compile_model: str  # timm name for torch.compile (compiling is the slow part)
    size: int
    batch: int
    steps: int


SCALES = {"cuda": Scale("resnet50", "resnet18", 160, 16, 30), "cpu": Scale("resnet18", "resnet18", 64, 2, 3)}


def scale_for(device: str) -> Scale:
    return SCALES["cuda" if device.startswith("cuda") else "cpu"]


def timm_model(name: str, device: str, *, channels_last: bool = True, num_classes: int = 10) -> nn.Module:
    timm = __import__("timm")
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model(name, pretrained=False, num_classes=num_classes)).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def example(scale: Scale, device: str, batch: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch or scale.batch, 3, scale.size, scale.size, generator=gen)
    return x.to(device).contiguous(memory_format=torch.channels_last)


def precision_settings() -> dict[str, Any]:
    """The caller-visible float32 precision switches, by name (to prove they come back unchanged)."""
    return {s.name: s.get() for s in precision_switches()}


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-300)).item()


def independent_error(masked: nn.Module, rebuilt: nn.Module, x: torch.Tensor) -> float:
    """Masked vs rebuilt in float64 on the CPU: what the rebuild changed, with no device arithmetic in it."""
    a, b = copy.deepcopy(masked).cpu().double().eval(), copy.deepcopy(rebuilt).cpu().double().eval()
    with torch.no_grad():
        return max_rel(a(x.cpu().double()), b(x.cpu().double()))


def train(model: nn.Module, x: torch.Tensor, steps: int, *, dtype: torch.dtype | None = None,
          scaler: Any = None, forward: nn.Module | None = None) -> dict[str, Any]:
    """SGD with momentum and weight decay on random labels (autocast to ``dtype`` if given); returns what moved."""
    forward = model if forward is None else forward
    device = x.device.type
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    target = torch.randint(0, 10, (x.shape[0],), generator=torch.Generator().manual_seed(2)).to(x.device)
    kept = next(p for p in model.parameters() if p.dim() == 4).detach().clone()
    skipped = 0
    model.train()
    for _ in range(steps):
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(forward(x), target)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scale_before = scaler.get_scale()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            skipped += int(scaler.get_scale() < scale_before)  # the scale drops exactly when a step was skipped
    model.eval()
    moved = (next(p for p in model.parameters() if p.dim() == 4).detach() - kept).abs().max().item()
    assert moved > 0, "training did not change the weights: the check would prove nothing"
    return {"steps": steps, "loss": loss.item(), "weights_moved": moved, "skipped_steps": skipped}


def masked_then(model: nn.Module, x: torch.Tensor) -> lrp.ChannelMasks:
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    assert not masks.meta.get("skipped"), f"groups skipped: {masks.meta.get('skipped')}"
    lrp.apply_masks(model, masks)
    return masks


def rebuild_and_measure(model: nn.Module, x: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
    """reconstruct with the caller's default precision settings; lossless, settings unchanged, layout kept."""
    before = precision_settings()
    result = lrp.reconstruct(model, x, **kwargs)
    assert precision_settings() == before, "reconstruct changed the caller's precision settings"
    report = result.report
    assert report.lossless and report.max_rel_error <= LOSSLESS, report.max_rel_error
    independent = independent_error(model, result.model, x)
    assert independent <= LOSSLESS, independent
    channels_last = _channels_last_kept(lrp.unwrap_model(model), result.model)
    return {"max_rel_error": report.max_rel_error, "float64_cpu_error": independent, "tolerance": report.tolerance,
            "params_ratio": report.params_ratio, "macs_ratio": report.macs_ratio, "channels_last_kept": channels_last,
            "precision_settings": {k: str(v) for k, v in before.items()}}


def _channels_last_kept(masked: nn.Module, rebuilt: nn.Module) -> bool | None:
    """None if the caller's model was not channels_last; else whether every k>1 conv weight still is."""
    def last(w: torch.Tensor) -> bool:
        return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()

    was = [m.weight for m in masked.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    if not any(last(w) for w in was):
        return None
    now = [m.weight for m in rebuilt.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    kept = all(last(w) for w in now)
    assert kept, "the rebuilt model lost the caller's channels_last memory format"
    return kept


# --------------------------------------------------------------------------------------------- the checks


def check_exact_mode(device: str) -> dict[str, Any]:
    """A conv on the device against float64 on the CPU: default settings (TF32 where the GPU has it) and
    inside ``exact_arithmetic`` (what verification uses); the caller's settings come back."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(8, 64, 56, 56, generator=gen)
    with torch.no_grad():
        ref = conv.double()(x.double())
        conv = conv.float().to(device)
        xd = x.to(device)
        before = precision_settings()
        default = max_rel(ref, conv(xd).cpu())
        with exact_arithmetic() as state:
            exact = max_rel(ref, conv(xd).cpu())
        assert precision_settings() == before, "exact_arithmetic did not restore the settings"
    assert exact <= 1e-5, f"float32 conv in exact mode is off by {exact:.3g}"
    return {"default_settings_error": default, "exact_mode_error": exact, "switched": sorted(state.changed)}


def check_bf16_training(device: str) -> dict[str, Any]:
    """Issue 19's case: timm model, channels_last, masks held through SGD under bf16 autocast, then reconstruct
    on the device with default PyTorch settings: lossless <= 1e-5, masks exactly zero."""
    scale = scale_for(device)
    model = timm_model(scale.model, device)
    x = example(scale, device)
    masked_then(model, x)
    trained = train(model, x, scale.steps, dtype=torch.bfloat16)
    assert lrp.masks_hold(model), "a masked weight moved under bf16 autocast"
    return {"model": scale.model, "input": list(x.shape), **trained, **rebuild_and_measure(model, x)}


def check_fp16_gradscaler(device: str) -> dict[str, Any]:
    """fp16 autocast with a GradScaler (started high enough to overflow, so steps are skipped too): masked
    weights stay exactly zero; reconstruct is lossless."""
    scale = scale_for(device)
    model = timm_model(scale.model, device)
    x = example(scale, device)
    masked_then(model, x)
    scaler = torch.amp.GradScaler(device.split(":")[0], init_scale=2.0 ** 24)  # fp16 gradients overflow at first
    trained = train(model, x, max(scale.steps, 16), dtype=torch.float16, scaler=scaler)
    assert trained["skipped_steps"] > 0, "the scaler never overflowed: start it higher"
    assert lrp.masks_hold(model), "a masked weight moved under fp16 autocast + GradScaler"
    return {"model": scale.model, **trained, **rebuild_and_measure(model, x)}


def check_compile(device: str, backend: str = "inductor") -> dict[str, Any]:
    """torch.compile (default: inductor) of the masked model; training through the compiled module holds the
    masks exactly; reconstruct accepts the compiled module (it rebuilds the module inside)."""
    scale = scale_for(device)
    model = timm_model(scale.compile_model, device)
    x = example(scale, device)
    masked_then(model, x)
    compiled = torch.compile(model, backend=backend)
    trained = train(model, x, max(3, scale.steps // 3), dtype=torch.bfloat16, forward=compiled)
    assert lrp.masks_hold(compiled), "a masked weight moved under torch.compile"
    torch._dynamo.reset()  # free the compiled graphs before the rebuild's traces
    return {"model": scale.compile_model, "backend": backend, **trained, **rebuild_and_measure(compiled, x)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def process_group(backend: str) -> Iterator[None]:
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_ddp(device: str) -> dict[str, Any]:
    """DDP (NCCL on CUDA, gloo on the CPU; one rank: this machine's one GPU) around the masked model, trained
    under bf16 autocast: the masks hold; reconstruct takes the DDP-wrapped model."""
    from torch.nn.parallel import DistributedDataParallel

    scale = scale_for(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    model = timm_model(scale.model, device)
    x = example(scale, device)
    masked_then(model, x)
    with process_group(backend):
        ddp = DistributedDataParallel(model, device_ids=[torch.device(device).index or 0]
                                      if device.startswith("cuda") else None)
        trained = train(ddp.module, x, max(3, scale.steps // 3), dtype=torch.bfloat16, forward=ddp)
        assert lrp.masks_hold(ddp), f"a masked weight moved under DDP ({backend})"
        measured = rebuild_and_measure(ddp, x)
    return {"model": scale.model, "backend": backend, **trained, **measured}


def check_half_models(device: str) -> dict[str, Any]:
    """Models stored in fp16 / bf16 (not autocast): reconstruct verifies in their dtype with its tolerance."""
    scale = scale_for(device)
    out = {}
    for dtype in ((torch.float16, torch.bfloat16) if device.startswith("cuda") else (torch.bfloat16,)):
        model = timm_model(scale.model, device).to(dtype)
        x = example(scale, device).to(dtype)
        masked_then(model, x)
        result = lrp.reconstruct(model, x, strict=False)
        report = result.report
        assert report.lossless, f"{dtype}: {report.max_rel_error} > {report.tolerance}"
        out[str(dtype).replace("torch.", "")] = {"max_rel_error": report.max_rel_error,
                                                 "tolerance": report.tolerance,
                                                 "float64_cpu_error": independent_error(model, result.model, x)}
    return out


def check_channels_last(device: str) -> dict[str, Any]:
    """channels_last and contiguous copies of one model give the same masks and the same rebuilt outputs."""
    scale = scale_for(device)
    x = example(scale, device)
    cl, plain = timm_model(scale.model, device), timm_model(scale.model, device, channels_last=False)
    masks_cl, masks_plain = masked_then(cl, x), masked_then(plain, x.contiguous())
    assert masks_cl.keys() == masks_plain.keys() and all(torch.equal(masks_cl[k], masks_plain[k]) for k in masks_cl)
    measured = rebuild_and_measure(cl, x)
    assert measured["channels_last_kept"], "the rebuilt model is not channels_last"
    return {"model": scale.model, "masked_layers": len(masks_cl), **measured}


def check_mmengine_amp(device: str, work_dir: str) -> dict[str, Any]:
    """MMEngine's AmpOptimWrapper (fp16 with dynamic loss scaling; MMEngine offers it on GPUs only, so the CPU
    dry run uses OptimWrapper) on the toy model of tests/mm_toy.py: masks held through MMEngine's own
    ``train_step``, lossless rebuild. Then the same through a Runner with LosslessPruningHook, where the
    Runner can be built (its visualizer needs OpenCV and matplotlib; without them that part is skipped)."""
    from mm_toy import SIZE, ToyConvNet
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    model = randomize_batchnorm(ToyConvNet()).to(device)
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(device)
    logits = lambda m, inputs: m.logits(inputs)  # noqa: E731
    masks = lrp.compute_masks(model, x, "l1", 0.5, forward_fn=logits)
    lrp.apply_masks(model, masks)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    wrapper = AmpOptimWrapper(optimizer=sgd, dtype="float16", loss_scale="dynamic") if cuda else OptimWrapper(sgd)
    data = dict(inputs=x, data_samples=torch.randint(0, 3, (4,), generator=torch.Generator().manual_seed(2)))
    kept = model.stem[0].weight.detach().clone()
    model.train()
    for _ in range(8):
        model.train_step(data, wrapper)
    model.eval()
    assert not torch.equal(kept, model.stem[0].weight), "no step was taken: the check would prove nothing"
    assert lrp.masks_hold(model), f"a masked weight moved under {type(wrapper).__name__}"
    result = lrp.reconstruct(model, x, forward_fn=logits)
    assert result.report.lossless and result.report.max_rel_error <= LOSSLESS, result.report.max_rel_error
    out = {"optim_wrapper": type(wrapper).__name__, "train_step": {"max_rel_error": result.report.max_rel_error,
                                                                   "params_ratio": result.report.params_ratio}}
    try:
        out["runner"] = _runner_with_hook(device, work_dir, "AmpOptimWrapper" if cuda else "OptimWrapper")
    except ModuleNotFoundError as exc:
        if exc.name not in ("cv2", "matplotlib"):
            raise
        out["runner"] = f"skipped: MMEngine's Runner needs {exc.name}, not installed here"
    return out


def _runner_with_hook(device: str, work_dir: str, wrapper: str) -> dict[str, Any]:
    from mm_toy import toy_config
    from mmengine.runner import Runner

    from lrp_plugin.integrations.mmengine import LosslessPruningHook

    cfg = toy_config(work_dir, max_iters=6)
    cfg.optim_wrapper = dict(type=wrapper, optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=5e-4),
                             **({"dtype": "float16", "loss_scale": "dynamic"} if wrapper == "AmpOptimWrapper" else {}))
    cfg.default_hooks = dict(logger=dict(type="LoggerHook", interval=1))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, LosslessPruningHook))
    param = next(runner.model.parameters())
    assert param.device.type == torch.device(device).type, f"the Runner trained on {param.device}"
    assert lrp.masks_hold(runner.model), f"a masked weight moved under {wrapper} in the Runner"
    assert hook.report.lossless and hook.report.max_rel_error <= LOSSLESS, hook.report.max_rel_error
    return {"optim_wrapper": type(runner.optim_wrapper).__name__, "device": str(param.device),
            "max_rel_error": hook.report.max_rel_error, "params_ratio": hook.report.params_ratio}


CHECKS = {"exact_mode": check_exact_mode, "channels_last": check_channels_last,
          "bf16_training": check_bf16_training, "fp16_gradscaler": check_fp16_gradscaler,
          "half_models": check_half_models, "ddp": check_ddp, "compile": check_compile}
