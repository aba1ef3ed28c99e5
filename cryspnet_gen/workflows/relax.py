"""Moved: in-process relaxation lives in :mod:`cryspnet_gen.relax` (imported by generation and workflows alike)
and :class:`~cryspnet_gen.records.RelaxedCandidate` in :mod:`cryspnet_gen.records`.

This module keeps the old import path ``cryspnet_gen.workflows.relax`` working: names are looked up there.
"""

from __future__ import annotations

from cryspnet_gen.runtime import forward_moved

__getattr__ = forward_moved(
    "cryspnet_gen.workflows.relax",
    ("cryspnet_gen.relax", "cryspnet_gen.records", "cryspnet_gen.runtime", "cryspnet_gen.symmetry"),
    " (moved to cryspnet_gen.relax)",
)
