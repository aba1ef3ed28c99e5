"""Moved: in-process relaxation lives in :mod:`cryspnet_gen.relax` (imported by generation and workflows alike).

This module keeps the old import path ``cryspnet_gen.workflows.relax`` working.
"""

from cryspnet_gen.records import RelaxedCandidate
from cryspnet_gen.relax import (
    DEFAULT_FMAX,
    DEFAULT_STEPS,
    StructureRelaxation,
    load_chgnet_optimizer,
    rank_by_energy,
    relax_candidates,
    relax_structure,
    relaxed_candidate,
    space_group_of,
)
from cryspnet_gen.runtime import torch_threads
from cryspnet_gen.symmetry import SYMPREC

__all__ = [
    "DEFAULT_FMAX",
    "DEFAULT_STEPS",
    "SYMPREC",
    "RelaxedCandidate",
    "StructureRelaxation",
    "load_chgnet_optimizer",
    "rank_by_energy",
    "relax_candidates",
    "relax_structure",
    "relaxed_candidate",
    "space_group_of",
    "torch_threads",
]
