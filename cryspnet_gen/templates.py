"""Moved: template candidates live in :mod:`cryspnet_gen.sources.templates` (store, building, substitution,
scoring, candidates) and merging in :mod:`cryspnet_gen.ranking`.

This module keeps the old import path working (``from cryspnet_gen.templates import TemplateStore``): every name
is looked up in those two modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = ("cryspnet_gen.sources.templates", "cryspnet_gen.ranking", "cryspnet_gen.formula")


def __getattr__(name: str) -> Any:
    for home in _HOMES:
        module = importlib.import_module(home)
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(
        f"module 'cryspnet_gen.templates' has no attribute {name!r} (template code moved to "
        f"cryspnet_gen.sources.templates and cryspnet_gen.ranking)"
    )
