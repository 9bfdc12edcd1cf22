"""What the core needs to know about a model family, and nothing about training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..core.graph import ForwardFn


@dataclass
class Adapter:
    """Model-family knowledge: a tensor-only forward, layers never pruned, an example input."""

    name: str
    matches: Callable[[nn.Module], bool]
    example_inputs: Callable[..., Any]
    ignored_layers: Callable[[nn.Module], list[str]] = field(default=lambda model: [])
    forward_fn: ForwardFn | None = None
    prepare: Callable[[nn.Module], nn.Module] = field(default=lambda model: model)


_REGISTRY: list[Adapter] = []


def register_adapter(adapter: Adapter) -> Adapter:
    _REGISTRY.append(adapter)
    return adapter


def find_adapter(model: nn.Module) -> Adapter | None:
    """The first registered adapter that recognises ``model`` (None for plain CNNs)."""
    return next((a for a in _REGISTRY if a.matches(model)), None)
