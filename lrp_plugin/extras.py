"""Optional libraries: import one or say which extra installs it (``MissingExtraError``)."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """``importlib.import_module(module)``, or a MissingExtraError naming ``pip install 'lrp_plugin[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" ({purpose})" if purpose else ""
        raise MissingExtraError(
            f"{module} is not installed{what}: pip install 'lrp_plugin[{extra}]' (or run `make setup`)"
        ) from exc
