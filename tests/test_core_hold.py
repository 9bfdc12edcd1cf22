"""Masks stay exactly zero through training, checkpoints and DDP."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _extras import require
from toy_models import ToyNet

import lrp_plugin as lrp
from lrp_plugin.adapters import create_resnet
from lrp_plugin.testing import randomize_batchnorm


@pytest.fixture(autouse=True, scope="module")
def _needs_timm():
    require("timm")


BLOCKS = [("res", 8), ("cat", 4, 6), ("dw", 12), ("res", 16)]


def _masked_toy(seed=0):
    torch.manual_seed(seed)
    model = randomize_batchnorm(ToyNet(BLOCKS), seed)
    x = torch.randn(4, 3, 16, 16)
    masks = lrp.compute_masks(model, x, "gm", 0.5)
    lrp.apply_masks(model, masks)
    return model, x, masks


def _train(model, steps, optimizer, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, 16, 16, generator=gen)
        y = torch.randint(0, 5, (8,), generator=gen)
        logits, dense = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + dense.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
], ids=["sgd", "nesterov", "adamw"])
def test_masks_survive_20_steps_exactly(make_optimizer):
    model, x, masks = _masked_toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, 20, make_optimizer(model.parameters()))
    assert lrp.masks_hold(model)  # exact zeros, atol=0
    # training did change the kept weights, so the test is not vacuous
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.endswith("weight"))
    # the BN of every masked conv has exact-zero gamma and beta on masked channels
    modules = dict(model.named_modules())
    for conv, bn in masks.norm_layers.items():
        off = ~masks[conv]
        assert modules[bn].weight[off].eq(0).all() and modules[bn].bias[off].eq(0).all()
    assert lrp.reconstruct(model, x).report.lossless


def test_masked_checkpoint_round_trip(tmp_path):
    model, x, masks = _masked_toy()
    _train(model, 3, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    path = lrp.save_masked(model, tmp_path / "masked.pt")
    # the state_dict keeps the unpruned layout: a plain model loads it
    plain = ToyNet(BLOCKS)
    plain.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    fresh = ToyNet(BLOCKS)
    restored = lrp.load_masked(fresh, path)
    assert set(restored) == set(masks)
    assert all(torch.equal(restored[k], masks[k]) for k in masks)
    assert restored.norm_layers == masks.norm_layers
    _train(fresh, 5, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4))
    assert lrp.masks_hold(fresh)


def test_loading_unmasked_weights_into_a_masked_model_re_zeroes_them():
    model, _, _ = _masked_toy()
    donor = randomize_batchnorm(ToyNet(BLOCKS), 5)
    model.load_state_dict(donor.state_dict())
    assert lrp.masks_hold(model)


def test_remove_masks_stops_holding():
    model, _, masks = _masked_toy()
    assert lrp.remove_masks(model) is not None and lrp.get_masks(model) is None
    _train(model, 3, torch.optim.SGD(model.parameters(), lr=0.1))
    # without the hold, a masked BN beta that feeds a residual add (no ReLU to block its
    # gradient) moves again; filters and gammas see all-zero inputs and stay 0 by themselves
    modules = dict(model.named_modules())
    conv = "blocks.0.body.1"
    bn = masks.norm_layers[conv]
    assert modules[bn].bias[~masks[conv]].abs().sum() > 0


def _ddp_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, _, _ = _masked_toy(seed=0)  # same init on both ranks
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    _train(ddp, 10, torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4), seed=rank)
    params = {k: v.detach() for k, v in model.named_parameters()}
    result = {"holds": lrp.masks_hold(ddp), "state": model.state_dict(), "params": params}
    torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_masks_hold_under_ddp(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["holds"] for r in results)
    # ranks trained on different data yet their weights stayed in sync, as DDP promises
    # (BN running stats are per rank after the last step)
    assert all(torch.equal(results[0]["params"][k], results[1]["params"][k]) for k in results[0]["params"])
    reference, _, masks = _masked_toy()
    reference.load_state_dict(results[0]["state"])
    assert lrp.masks_hold(reference)


def test_masks_hold_on_timm_resnet_training():
    torch.manual_seed(0)
    model = randomize_batchnorm(create_resnet("resnet18", num_classes=5, cifar_stem=True))
    x = torch.randn(2, 3, 32, 32)
    lrp.apply_masks(model, lrp.compute_masks(model, x, "l1", 0.5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 5, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert lrp.masks_hold(model)
    assert lrp.reconstruct(model, x).report.lossless


class _FrozenStem(torch.nn.Sequential):
    """Re-freezes its first conv + BN whenever its mode changes, as mmdet/mmseg frozen_stages do."""

    def train(self, mode=True):
        super().train(mode)
        for p in [*self[0].parameters(), *self[1].parameters()]:
            p.requires_grad_(False)
        return self


def test_frozen_stages_are_masked_held_and_reconstructed():
    nn = torch.nn
    model = randomize_batchnorm(_FrozenStem(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                                            nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)))
    model.train()
    x = torch.randn(2, 3, 16, 16)
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    assert sorted(masks) == ["0", "3"]  # the frozen conv is traced and masked too
    lrp.apply_masks(model, masks)
    assert not model[0].weight.requires_grad  # freezing left as it was
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for _ in range(3):
        loss = model(torch.randn(2, 3, 16, 16)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert lrp.masks_hold(model)
    result = lrp.reconstruct(model, x)
    assert result.report.lossless and result.model[0].out_channels == 4
    assert not result.model[0].weight.requires_grad and result.model[3].weight.requires_grad
