"""cryspnet-gen: chemical formula -> candidate crystal structures.

A re-implementation and extension of CRYSPNet (Liang et al., Phys. Rev. Materials 4, 123802, 2020).
Nothing heavy happens at import time: the public functions are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# ``featurize`` is deliberately not re-exported: the name belongs to the submodule ``cryspnet_gen.featurize``
# (a package attribute of that name would flip from function to module once the submodule is imported).
__all__ = [
    "GenerateOptions",
    "__version__",
    "explain_formula",
    "generate_candidates",
    "generate_many",
    "load_predictor",
    "read_candidates",
    "similar_materials",
    "write_candidates",
]

_LAZY = {
    "load_predictor": ("cryspnet_gen.predict", "load_predictor"),
    "generate_candidates": ("cryspnet_gen.generate", "generate_candidates"),
    "generate_many": ("cryspnet_gen.generate", "generate_many"),
    "GenerateOptions": ("cryspnet_gen.options", "GenerateOptions"),
    "write_candidates": ("cryspnet_gen.files", "write_candidates"),
    "read_candidates": ("cryspnet_gen.files", "read_candidates"),
    "similar_materials": ("cryspnet_gen.explain.similar", "similar_materials"),
    "explain_formula": ("cryspnet_gen.explain.similar", "explain_formula"),
}

if TYPE_CHECKING:  # pragma: no cover
    from cryspnet_gen.explain.similar import explain_formula, similar_materials
    from cryspnet_gen.files import read_candidates, write_candidates
    from cryspnet_gen.generate import generate_candidates, generate_many
    from cryspnet_gen.options import GenerateOptions
    from cryspnet_gen.predict import load_predictor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cryspnet_gen' has no attribute {name!r}")
