"""The adapter registry: what the core needs to know about a model family, and nothing about training.

Adapters are registered by name: a duplicate name is refused unless ``force=True``, except
when the SAME module (same full dotted path, e.g. a reload) declares it again, which keeps the
first object. ``find_adapter`` imports the built-in adapter modules (``BUILTIN_LOCATIONS``) on
demand, so callers never need import-order tricks; third-party adapters register with
``register_adapter`` in their own module (for OpenMMLab's tools: a module listed in the
config's ``custom_imports``). Adapters registered later are tried first, so a user's adapter
for a model family wins over the generic built-in one. README "Adapters" documents each field.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from torch import nn

from ..core.graph import ForwardFn
from ..errors import InvalidArgumentError, UnknownModelError


@dataclass
class Adapter:
    """Model-family knowledge: a tensor-only forward, layers never pruned, an example input.

    ``name``: the registry key (``get_adapter(name)``). ``matches(model)``: True for the models
    this adapter handles. ``example_inputs(model)``: a tracing input (a tensor, or a tuple/dict of
    them). ``ignored_layers(model)``: module names never pruned beyond what tracing finds (layers
    feeding a model output are always kept). ``forward_fn(model, inputs)``: the tensor-only
    forward to trace, when ``model(inputs)`` does not return tensors (None: ``model(inputs)``).
    ``prepare(model)``: a model that traces in one process (e.g. SyncBN reverted), applied
    before rebuilding from a spec. ``module``: set by ``register_adapter``.
    """

    name: str
    matches: Callable[[nn.Module], bool]
    example_inputs: Callable[..., Any]
    ignored_layers: Callable[[nn.Module], list[str]] = field(default=lambda model: [])
    forward_fn: ForwardFn | None = None
    prepare: Callable[[nn.Module], nn.Module] = field(default=lambda model: model)
    module: str = ""  # the module that declared it (set by register_adapter)


# Modules that register the built-in adapters; each imports its optional library lazily.
BUILTIN_LOCATIONS = (
    "lrp_plugin.adapters.timm_resnet",
    "lrp_plugin.adapters.mmdet_detector",
    "lrp_plugin.adapters.mmseg_segmentor",
)


class AdapterRegistry:
    """Adapters by name, in registration order; built-in locations are imported on first lookup."""

    def __init__(self, locations: Iterable[str] = ()):
        self._adapters: dict[str, Adapter] = {}
        self.locations = list(locations)
        self._imported = False

    def register(self, adapter: Adapter, *, force: bool = False, module: str | None = None) -> Adapter:
        if not isinstance(adapter, Adapter):
            raise InvalidArgumentError(f"register_adapter takes an Adapter, got {type(adapter).__name__}")
        adapter.module = module or adapter.module
        existing = self._adapters.get(adapter.name)
        # the same module run again (importlib.reload) re-declares the same adapter; another module
        # with the same last name part (a user's acme.timm_resnet) is a different declaration
        same_declaration = existing is not None and bool(adapter.module) and existing.module == adapter.module
        if same_declaration and not force:  # keep the object callers already hold
            return existing
        if existing is not None and not force:
            raise InvalidArgumentError(
                f"an adapter named {adapter.name!r} is already registered (from {existing.module or 'unknown'}); "
                "choose another name or pass force=True to replace it")
        self._adapters[adapter.name] = adapter
        return adapter

    def _import_locations(self) -> None:
        if self._imported:
            return
        self._imported = True
        for location in self.locations:
            importlib.import_module(location)

    def names(self) -> list[str]:
        self._import_locations()
        return list(self._adapters)

    def get(self, name: str) -> Adapter:
        self._import_locations()
        if name not in self._adapters:
            raise UnknownModelError(f"no adapter named {name!r}: registered are {list(self._adapters)}")
        return self._adapters[name]

    def find(self, model: nn.Module) -> Adapter | None:
        """The most recently registered adapter that recognises ``model`` (None for plain CNNs).

        Newest first: a user's adapter for one family wins over a generic built-in one.
        """
        self._import_locations()
        return next((a for a in reversed(self._adapters.values()) if a.matches(model)), None)


ADAPTERS = AdapterRegistry(BUILTIN_LOCATIONS)


def register_adapter(adapter: Adapter, *, force: bool = False) -> Adapter:
    """Register ``adapter`` under its name; the declaring module is recorded for duplicate checks."""
    import inspect

    caller = inspect.currentframe().f_back
    module = caller.f_globals.get("__name__", "") if caller is not None else ""
    return ADAPTERS.register(adapter, force=force, module=module)


def find_adapter(model: nn.Module) -> Adapter | None:
    """The adapter that recognises ``model``, importing the built-in ones on demand."""
    return ADAPTERS.find(model)


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name`` (``'timm-resnet'``, ``'mmdet-detector'``, ``'mmseg-segmentor'``)."""
    return ADAPTERS.get(name)
