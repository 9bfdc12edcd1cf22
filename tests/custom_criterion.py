"""A criterion defined outside lrp_plugin and registered by name (issue 21): the tests use it by
name in compute_masks, an NNI pruner and the mmengine hook."""

import torch

import lrp_plugin as lrp

NAME = "tests-max-abs"


def max_abs(weight: torch.Tensor) -> torch.Tensor:
    """Largest |w| of each output filter."""
    return weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=1)


lrp.register_criterion(NAME, max_abs, aliases=("testsmaxabs2",))
