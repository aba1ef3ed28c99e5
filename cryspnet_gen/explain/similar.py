"""``similar_materials`` and ``explain_formula``: the known compounds a prediction leans on, and why it says what
it says.

The known compounds are the ground states (lowest energy above hull per formula) of the shipped prototype
library (every Materials Project structure, CC BY 4.0) or of any prototype library folder; each has its
structure in the library, so a neighbour with the query's anonymous formula is a template the query can be
substituted into (``substitutable``). The representation is the bundle's
(:mod:`cryspnet_gen.explain.representation`, ``"combined"`` by default). The index is built on first use
(featurizing and predicting ~105k formulas, about a minute on 2 cores) and cached on disk (~100 MB); later
processes load it in well under a second.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd

from cryspnet_gen.explain.attribution import Explanation, explain_features
from cryspnet_gen.explain.neighbours import KnownCompoundIndex, ground_states
from cryspnet_gen.explain.representation import Representation, RepresentationKind
from cryspnet_gen.predict import predictor_for

__all__ = [
    "DEFAULT_REPRESENTATION",
    "explain_formula",
    "known_compound_index",
    "resolve_library",
    "similar_materials",
]

#: The representation ``similar`` uses unless told otherwise (chosen on validation, see docs/interpretability.md).
DEFAULT_REPRESENTATION: RepresentationKind = "combined"

SIMILAR_COLUMNS = (
    "formula",
    "material_id",
    "space_group",
    "symbol",
    "bravais",
    "distance",
    "e_above_hull",
    "experimental",
    "polymorphs",
    "query",
    "substitutable",
)


def resolve_library(library: Any = None) -> Any:
    """A loaded prototype library from a folder, a shipped name, a loaded library or None (the shipped one)."""
    from cryspnet_gen.sources.templates import PrototypeLibrary
    from cryspnet_gen.sources.templates.prototypes import load_library

    if isinstance(library, PrototypeLibrary):
        return library
    return load_library(_library_folder(library))


def _library_folder(library: Any) -> Path:
    """The folder of a prototype library given by name or path (None: the shipped default), not loaded."""
    from cryspnet_gen.bundle import bundles_root
    from cryspnet_gen.sources.templates import DEFAULT_LIBRARY, PrototypeLibrary
    from cryspnet_gen.sources.templates.prototypes import LIBRARY_MANIFEST

    if isinstance(library, PrototypeLibrary) and library.path is not None:
        return Path(library.path)
    root = bundles_root()
    name = DEFAULT_LIBRARY if library is None else str(library)
    folder = Path(name).expanduser()
    if not folder.is_dir() and root is not None and (root / name).is_dir():
        folder = root / name
    if not (folder / LIBRARY_MANIFEST).is_file():
        raise ValueError(
            f"{name!r} is not a prototype library (a folder with {LIBRARY_MANIFEST} and prototypes.parquet): "
            "similar materials need one; build one with `cryspnet-gen templates build --prototypes`"
        )
    return folder.resolve()


def _library_key(library: Any) -> tuple[str, Any]:
    """A cache key that changes with the library's table, and the library (or how to load it)."""
    from cryspnet_gen.sources.templates import PrototypeLibrary
    from cryspnet_gen.sources.templates.prototypes import LIBRARY_MANIFEST, LIBRARY_TABLE

    folder = _library_folder(library)
    # The table's sha256 as the library's manifest records it (checked when the library loads): the same on
    # every clone or install, unlike the file's modification time, so a new checkout does not re-embed.
    try:
        manifest = json.loads((folder / LIBRARY_MANIFEST).read_text())
        key = "sha256:" + str(manifest["files"][LIBRARY_TABLE]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            st = (folder / LIBRARY_TABLE).stat()
            stamp = f"{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            stamp = "missing"
        key = f"{folder}|{stamp}"
    source = library if isinstance(library, PrototypeLibrary) else str(folder)
    return key, source


def _bundle_key(predictor: Any) -> str:
    manifest = predictor.manifest
    parts = {k: manifest.get(k) for k in ("name", "version", "weights", "trees", "feature_weights")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def _index_for(predictor: Any, library_key: str, library: Any, kind: str) -> KnownCompoundIndex:
    def table() -> pd.DataFrame:
        return ground_states(resolve_library(library).all_rows)

    representation = Representation.of(predictor, kind)  # type: ignore[arg-type]
    return KnownCompoundIndex.build(
        table, representation, cache_key=f"{_bundle_key(predictor)}|{library_key}"
    )


def known_compound_index(
    model: Any = None, library: Any = None, representation: RepresentationKind = DEFAULT_REPRESENTATION
) -> KnownCompoundIndex:
    """The index of known compounds of a bundle and a prototype library (both default to the shipped ones).

    Built on first use and cached (see the module docstring); a cached index needs neither the library's table
    nor a featurization.
    """
    if representation not in get_args(RepresentationKind):
        raise ValueError(
            f"Unknown representation {representation!r}; choose from {get_args(RepresentationKind)}"
        )
    key, source = _library_key(library)
    return _index_for(predictor_for(model), key, source, representation)


def _features(formula: str) -> tuple[str, np.ndarray]:
    """Reduced formula and features of a query; one-line ValueError for a formula that cannot be used."""
    from cryspnet_gen.featurize import featurize
    from cryspnet_gen.formula import reduced_formula

    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(f"{formula!r} is not a formula: give one like 'NaCl' or 'Li7La3Zr2O12'")
    feats = featurize([formula])
    if feats.errors[0] is not None:
        raise ValueError(feats.errors[0])
    return reduced_formula(formula) or formula, feats.matrix[0]


def similar_materials(
    formula: str,
    n: int = 10,
    *,
    model: Any = None,
    library: Any = None,
    representation: RepresentationKind = DEFAULT_REPRESENTATION,
) -> pd.DataFrame:
    """The ``n`` known compounds nearest to ``formula`` in a bundle's representation.

    Parameters
    ----------
    formula
        Any formula :func:`cryspnet_gen.formula.parse_composition` accepts.
    n
        How many (>= 1).
    model
        Bundle name, folder or :class:`~cryspnet_gen.predict.Predictor` (default: the shipped default).
    library
        Prototype library folder, shipped name or loaded library (default: the shipped one).
    representation
        ``"combined"``, ``"weighted"``, ``"features"``, ``"hidden"`` or ``"predictions"``
        (:mod:`cryspnet_gen.explain.representation`).

    Returns
    -------
    pandas.DataFrame
        Nearest first, columns ``formula, material_id, space_group, symbol, bravais, distance, e_above_hull,
        experimental, polymorphs, query, substitutable``: ``query`` marks the queried formula itself when it is
        known (it is listed, not dropped), ``substitutable`` a neighbour whose structure the template source
        can substitute the query into (same anonymous formula). ``frame.attrs`` holds the bundle, library and
        representation.

    Raises
    ------
    ValueError
        For a formula that cannot be parsed or featurized, or ``n < 1``.
    """
    from cryspnet_gen.formula import anonymous_formula
    from cryspnet_gen.symmetry import space_group_symbol

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    reduced, x = _features(formula)
    predictor = predictor_for(model)
    index = known_compound_index(predictor, library, representation)
    (rows,) = index.query(x[None, :], int(n))
    anonymous = anonymous_formula(reduced)
    rows.insert(3, "symbol", [space_group_symbol(int(g)) for g in rows["space_group"]])
    rows["query"] = rows["formula"] == reduced
    rows["substitutable"] = rows["anonymous"] == anonymous
    out = rows[list(SIMILAR_COLUMNS)]
    out.attrs.update(
        {
            "formula": reduced,
            "bundle": f"{predictor.name} v{predictor.version}",
            "library": str(_library_folder(library)),
            "representation": index.representation.describe(),
            "known_compounds": len(index),
        }
    )
    return out


def explain_formula(formula: str, *, model: Any = None) -> Explanation:
    """The prediction for ``formula`` with the signed effects of its features and property families.

    See :mod:`cryspnet_gen.explain.attribution`; ``model`` as in :func:`similar_materials`.
    """
    reduced, x = _features(formula)
    return explain_features(predictor_for(model), reduced, x)
