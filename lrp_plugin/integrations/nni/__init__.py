"""NNI 3.0 extension: L1/L2/FPGM pruners that mask BatchNorm too, and a lossless ModelSpeedup.

The pruners (``pruners.py``) are NNI pruners (same constructor, config lists, wrappers,
``compress()`` returning ``(model, masks)``); the only change is that the BatchNorm after each
selected conv is added to the config with its gamma and beta masks *aligned* to the conv's
filters, so NNI's own wrappers hold them during NNI-driven fine-tuning (``TorchEvaluator``).
``config_lists.py`` loads and checks config lists; ``masks.py`` says what NNI masks mean
(filters, BN-only masks of network slimming) or refuses them by name (element-wise sparsity,
masked output layers); ``speedup.py`` holds ``LosslessSpeedup(model, dummy_input,
masks).speedup_model()``, which replaces NNI's ``ModelSpeedup`` (which fails on current torch).
"""

from .config_lists import CONFIG_DIR, SUPPORTED_KEYS, UnsupportedConfigError, check_config_list, load_config_list
from .masks import NNIMaskPlan, apply_nni_masks, interpret_nni_masks, masks_from_nni, nni_masked_copy
from .pruners import FPGMPruner, L1NormPruner, L2NormPruner
from .speedup import LosslessSpeedup

__all__ = ["CONFIG_DIR", "SUPPORTED_KEYS", "FPGMPruner", "L1NormPruner", "L2NormPruner", "LosslessSpeedup",
           "NNIMaskPlan", "UnsupportedConfigError", "apply_nni_masks", "check_config_list", "interpret_nni_masks",
           "load_config_list", "masks_from_nni", "nni_masked_copy"]
