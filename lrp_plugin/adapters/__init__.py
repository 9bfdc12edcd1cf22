"""Model-family adapters. Importing one never imports an optional library at import time."""

from .base import ADAPTERS, Adapter, find_adapter, get_adapter, register_adapter
from .timm_resnet import TIMM_RESNET, create_resnet

__all__ = ["ADAPTERS", "Adapter", "TIMM_RESNET", "create_resnet", "find_adapter", "get_adapter", "register_adapter"]
