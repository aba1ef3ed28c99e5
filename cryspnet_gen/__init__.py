"""cryspnet-gen: chemical formula -> candidate crystal structures.

A re-implementation and extension of CRYSPNet (Liang et al., Phys. Rev. Materials 4, 123802, 2020).
Nothing heavy happens at import time: the public functions are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "featurize",
    "feature_labels",
    "load_predictor",
    "generate_candidates",
    "write_candidates",
]

_LAZY = {
    "featurize": ("cryspnet_gen.featurize", "featurize"),
    "feature_labels": ("cryspnet_gen.featurize", "feature_labels"),
    "load_predictor": ("cryspnet_gen.predict", "load_predictor"),
    "generate_candidates": ("cryspnet_gen.generate", "generate_candidates"),
    "write_candidates": ("cryspnet_gen.generate", "write_candidates"),
}

if TYPE_CHECKING:  # pragma: no cover
    from cryspnet_gen.featurize import feature_labels, featurize


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cryspnet_gen' has no attribute {name!r}")
