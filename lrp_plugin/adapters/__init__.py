"""Model-family adapters. Importing one never imports an optional library at import time."""

from .base import Adapter, find_adapter, register_adapter
from .timm_resnet import TIMM_RESNET, create_resnet

__all__ = ["Adapter", "TIMM_RESNET", "create_resnet", "find_adapter", "register_adapter"]
