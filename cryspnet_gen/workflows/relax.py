"""Moved: in-process relaxation lives in :mod:`cryspnet_gen.relax` (imported by generation and workflows alike)
and :class:`~cryspnet_gen.records.RelaxedCandidate` in :mod:`cryspnet_gen.records`.

This module keeps the old import path ``cryspnet_gen.workflows.relax`` working: names are looked up there.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = ("cryspnet_gen.relax", "cryspnet_gen.records", "cryspnet_gen.runtime", "cryspnet_gen.symmetry")


def __getattr__(name: str) -> Any:
    for home in _HOMES:
        module = importlib.import_module(home)
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(
        f"module 'cryspnet_gen.workflows.relax' has no attribute {name!r} (moved to cryspnet_gen.relax)"
    )
