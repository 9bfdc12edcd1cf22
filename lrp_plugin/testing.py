"""Helpers for tests and demos: make BatchNorm effects visible on random models."""

from __future__ import annotations

from .core.modules import randomize_batchnorm

__all__ = ["randomize_batchnorm"]
