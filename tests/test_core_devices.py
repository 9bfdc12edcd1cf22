"""What GPU users do, reproduced on the CPU (issue 19): channels_last models, mixed precision (bf16 autocast,
fp16 autocast with a GradScaler), the verification's exact arithmetic and its message when a difference is
only arithmetic. The CUDA side of the same checks is tests/gpu/ (skipped without a GPU)."""

from __future__ import annotations

import warnings

import pytest
import torch
from _extras import require
from torch import nn
from torch.nn import functional as F

import lrp_plugin as lrp
from lrp_plugin.core.verify import arithmetic_setting, exact_arithmetic, precision_switches
from lrp_plugin.testing import randomize_batchnorm

timm = require("timm")


def _timm(name: str, channels_last: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model(name, pretrained=False, num_classes=10)).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _x(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _train(model: nn.Module, x: torch.Tensor, steps: int, dtype: torch.dtype, scaler=None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    target = torch.randint(0, 10, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    model.train()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(model(x), target)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    model.eval()


# ------------------------------------------------------------------------------------------- channels_last


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_channels_last_masks_holds_and_rebuilds_like_contiguous(name):
    """timm's --channels-last: adaptive_avg_pool2d on a channels_last tensor adds an as_strided (issue 19:
    3 groups skipped, then a refusal); now no group is skipped, the masks equal the contiguous model's, and
    the rebuilt model is lossless and channels_last again."""
    x = _x()
    cl, plain = _timm(name), _timm(name, channels_last=False)
    masks = lrp.compute_masks(cl, x, "l1", 0.5)
    assert masks.meta.get("skipped", {}) == {}
    reference = lrp.compute_masks(plain, x, "l1", 0.5)
    assert masks.keys() == reference.keys() and all(torch.equal(masks[k], reference[k]) for k in masks)
    lrp.apply_masks(cl, masks)
    _train(cl, x, 2, torch.bfloat16)
    assert lrp.masks_hold(cl)
    result = lrp.reconstruct(cl, x)
    assert result.report.lossless and result.report.max_rel_error <= 1e-5 and not result.report.skipped
    convs = [m.weight for m in result.model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(_last(w) for w in convs), "the rebuilt model lost the caller's channels_last format"
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), cl(x), rtol=1e-4, atol=1e-5)


def test_a_mean_over_channels_is_not_taken_for_a_per_channel_op():
    """autograd saves dim=-3 as 2**64 - 3; read unsigned, a mean over channels passed as per-channel."""

    class ChannelMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            return self.head(y * y.mean(dim=-3, keepdim=True))

    model = randomize_batchnorm(ChannelMean()).eval()
    masks = lrp.compute_masks(model, _x(size=8), "l1", 0.5)
    assert "conv" in masks.meta["skipped"] and "mean" in masks.meta["skipped"]["conv"]


# ------------------------------------------------------------------------------------------- mixed precision


def test_bf16_autocast_and_fp16_gradscaler_hold_masks_exactly():
    """Masked weights stay exactly zero under bf16 autocast and under fp16 autocast with a GradScaler whose
    first steps overflow (skipped), and the rebuild is lossless in float32."""
    x = _x()
    for dtype, scaler in ((torch.bfloat16, None), (torch.float16, torch.amp.GradScaler("cpu", init_scale=2.0 ** 24))):
        model = _timm("resnet18")
        lrp.apply_masks(model, lrp.compute_masks(model, x, "l1", 0.5))
        kept = model.conv1.weight.detach().clone()
        _train(model, x, 12, dtype, scaler)
        assert not torch.equal(kept, model.conv1.weight), "no step was taken: the check would prove nothing"
        assert lrp.masks_hold(model), dtype
        if scaler is not None:
            assert scaler.get_scale() < 2.0 ** 24, "the scaler never skipped a step"
        assert lrp.reconstruct(model, x).report.max_rel_error <= 1e-5


def test_reconstruct_inside_autocast_verifies_in_float32():
    """Called inside the user's autocast block, the check still compares float32 forwards, and the
    block's autocast is back on afterwards."""
    model = _timm("resnet18")
    x = _x()
    lrp.apply_masks(model, lrp.compute_masks(model, x, "l1", 0.5))
    seen = []

    def forward(m, inputs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return m(inputs)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = lrp.reconstruct(model, x, forward_fn=forward)
        assert torch.is_autocast_enabled("cpu")
    assert seen and not any(seen)
    assert result.report.lossless and result.report.max_rel_error <= 1e-5


# ------------------------------------------------------------------------------------------- exact arithmetic


def test_exact_arithmetic_switches_off_and_restores_even_on_errors():
    switches = precision_switches()
    assert switches, "this torch exposes no precision switch to turn off"
    coarse = {s.name: ("tf32" if s.exact == "ieee" else True if s.exact is False else "high") for s in switches}
    before = {s.name: s.get() for s in switches}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning from mixing the old and new TF32 APIs
        try:
            for s in switches:
                if "mkldnn" not in s.name:  # tf32 on oneDNN needs a CPU that has it
                    s.set(coarse[s.name])
            user = {s.name: s.get() for s in switches}
            with pytest.raises(RuntimeError, match="inside"):
                with exact_arithmetic() as state:
                    assert all(s.get() == s.exact for s in switches)
                    assert set(state.changed) >= {n for n in coarse if "mkldnn" not in n}
                    raise RuntimeError("inside")
            assert {s.name: s.get() for s in switches} == user
        finally:
            for s in switches:
                s.set(before[s.name])
    assert {s.name: s.get() for s in switches} == before


def test_an_arithmetic_difference_is_named_as_such():
    """No removed channel carries anything into a consumer: an error above the tolerance is arithmetic, and the
    message says so, names the dtype and the settings, and never a group rooted at None."""
    model = _timm("resnet18")
    x = _x()
    lrp.apply_masks(model, lrp.compute_masks(model, x, "l1", 0.5))
    with pytest.raises(lrp.LosslessError) as info:
        lrp.reconstruct(model, x, tolerance=1e-12)
    message = str(info.value)
    assert "arithmetic" in message and "float32" in message and "TF32" in message and "tolerance=" in message
    assert "None" not in message and "worst group" not in message
    assert info.value.report.worst_group is None
    with pytest.warns(UserWarning, match="arithmetic"):
        result = lrp.reconstruct(model, x, tolerance=1e-12, strict=False)
    assert result.report.lossless is False and result.report.worst_group is None


def test_arithmetic_setting_names_reduced_precision():
    model = nn.Conv2d(3, 4, 3).to(torch.bfloat16)
    text = arithmetic_setting(model)
    assert "bfloat16" in text and "cpu" in text and "relative precision" in text


def test_a_real_leak_still_names_its_group():
    """intersection removes channels a producer still uses: the message names a real group, not arithmetic."""
    model = _timm("resnet18", channels_last=False)
    x = _x()
    lrp.apply_masks(model, lrp.compute_masks(model, x, "l1", 0.5))
    with pytest.raises(lrp.LosslessError) as info:
        lrp.reconstruct(model, x, merge="intersection")
    message = str(info.value)
    assert "worst group rooted at layer" in message and "arithmetic" not in message
