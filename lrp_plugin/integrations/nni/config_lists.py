"""NNI config lists: loading the shipped ones, and refusing by name what our pruners do not implement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ...compat import nni_checked_config_list, nni_select_modules
from ...configs import config_root, resolve_config
from ...errors import InvalidArgumentError

# Config keys our pruners honour; every other NNI key is refused by name, never ignored.
SUPPORTED_KEYS = {"op_types", "op_names", "op_names_re", "exclude_op_names", "exclude_op_types",
                  "exclude_op_names_re", "sparse_ratio", "target_names", "granularity"}
_LEGACY_KEYS = {"sparsity", "sparsity_per_layer", "exclude", "op_partial_names"}  # translated by NNI itself
_WEIGHT_SETTING_KEYS = {"sparse_ratio", "granularity"}
_BIAS_SETTING_KEYS = {"align"}
_DEFAULT_BIAS_ALIGN = {"module_name": None, "target_name": "weight", "dims": [0]}
CONFIG_DIR = config_root() / "nni"  # package data: found in a wheel install as in a checkout


class UnsupportedConfigError(InvalidArgumentError):
    """An NNI config key or value that these pruners do not implement, or that names no module."""


def load_config_list(name_or_path: str | Path) -> list[dict[str, Any]]:
    """A config list from a JSON file, or by name from the shipped ``configs/nni``
    (e.g. ``"resnet_cr0.5"``; ``lrp configs list`` prints them)."""
    path = Path(name_or_path)
    if path.is_file():
        text, source = path.read_text(), str(path)
    else:
        name = resolve_config(str(name_or_path), kind="nni")  # FileNotFoundError listing the shipped ones
        text, source = CONFIG_DIR.joinpath(name.split("/", 1)[1]).read_text(), name
    data = json.loads(text)
    config_list = data["config_list"] if isinstance(data, dict) else data
    if not isinstance(config_list, list):
        raise UnsupportedConfigError(f"{source} must hold a list of config dicts (or {{'config_list': [...]}})")
    return config_list


def selected_modules(model: nn.Module, config: dict, index: int) -> dict[str, nn.Module]:
    """The modules config entry ``index`` selects; an ``op_names`` entry that names no module is an
    UnsupportedConfigError naming it (NNI itself raises a bare KeyError from its config.py)."""
    try:
        return nni_select_modules(model, config)
    except KeyError as exc:
        name = exc.args[0] if exc.args else "?"
        raise UnsupportedConfigError(
            f"config_list[{index}] names {name!r} in op_names, which is not a module of the model; "
            "fix or remove that entry (model.named_modules() lists the names)") from None


def check_config_list(model: nn.Module, config_list: list[dict]) -> list[dict]:
    """NNI's own validation first (so NNI's errors stay NNI's), then refuse what we do not implement."""
    if not isinstance(config_list, list) or not config_list:
        raise UnsupportedConfigError("config_list must be a non-empty list of dicts, as for NNI's pruners")
    converted = nni_checked_config_list(config_list)
    for index, config in enumerate(converted):
        settings = config.get("target_settings", {})
        unknown = set(config) - SUPPORTED_KEYS - _LEGACY_KEYS - {"target_settings"}
        for target, setting in settings.items():
            allowed = _WEIGHT_SETTING_KEYS if target == "weight" else _BIAS_SETTING_KEYS if target == "bias" else set()
            unknown |= {f"target_settings.{target}.{key}" for key in set(setting) - allowed}
            if target == "bias" and setting.get("align", _DEFAULT_BIAS_ALIGN) != _DEFAULT_BIAS_ALIGN:
                unknown.add("target_settings.bias.align (other than the default: aligned to the weight's filters)")
        if unknown:
            raise UnsupportedConfigError(
                f"config_list[{index}] uses {sorted(unknown)}, which lrp_plugin's pruners do not implement "
                f"(supported: {sorted(SUPPORTED_KEYS)} and legacy 'sparsity'); remove them or use NNI's pruner")
        weight = settings.get("weight", {})
        if weight.get("granularity", config.get("granularity", "default")) not in ("default", "out_channel"):
            raise UnsupportedConfigError(f"config_list[{index}]: granularity must be 'out_channel' (per filter)")
        if set(config.get("target_names", ["weight", "bias"])) - {"weight", "bias"}:
            raise UnsupportedConfigError(f"config_list[{index}]: target_names may only name 'weight' and 'bias'")
        selected = selected_modules(model, config, index)
        if not selected:
            continue  # e.g. the exclusion entries NNI makes from a legacy {'exclude': True}
        ratio = config.get("sparse_ratio", weight.get("sparse_ratio"))
        if ratio is None or not 0.0 <= float(ratio) < 1.0:
            raise UnsupportedConfigError(
                f"config_list[{index}] needs a sparse_ratio in [0, 1) (the fraction of filters masked per conv)")
        not_conv = sorted(n for n, m in selected.items() if not isinstance(m, nn.Conv2d))
        if not_conv:
            raise UnsupportedConfigError(
                f"config_list[{index}] selects {not_conv[:4]}, which are not Conv2d: these pruners mask conv filters "
                "and their BatchNorm; narrow op_types/op_names to Conv2d")
    return converted
