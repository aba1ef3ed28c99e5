"""Moved: template candidates live in :mod:`cryspnet_gen.sources.templates` (store, building, substitution,
scoring, candidates) and merging in :mod:`cryspnet_gen.ranking`.

This module keeps the old import path working (``from cryspnet_gen.templates import TemplateStore``): every name
is looked up in those two modules on first use.
"""

from __future__ import annotations

from cryspnet_gen.runtime import forward_moved

__getattr__ = forward_moved(
    "cryspnet_gen.templates",
    ("cryspnet_gen.sources.templates", "cryspnet_gen.ranking", "cryspnet_gen.formula"),
    " (template code moved to cryspnet_gen.sources.templates and cryspnet_gen.ranking)",
)
