"""Old import paths kept for one release: names that moved warn once per access, then resolve."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

__all__ = ["moved"]


def moved(old_module: str, new_homes: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` resolving `new_homes[name]` (`"package.module:attr"` or a module).

    The new modules are imported by name when first used, so an old path adds no import edge.
    """

    def __getattr__(name: str):
        if name not in new_homes:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, attr = new_homes[name].partition(":")
        warnings.warn(
            f"`{old_module}.{name}` is deprecated and will be removed in tfp_iaf 0.3; use "
            f"`{module}.{attr or name}` instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), attr or name)

    return __getattr__
