"""Composition -> CRYSPNet feature matrix.

The feature set is CRYSPNet's: matminer's Magpie ``ElementProperty`` (without the "mode" statistic),
``Stoichiometry``, ``ValenceOrbital`` (fractions), ``IonProperty`` (fast charge balance), ``BandCenter`` and
``ElementFraction``, followed by one extra column, the number of elements (``NElements``). Every matminer argument
is pinned in :data:`FEATURIZER_SETTINGS` (matminer's defaults change between releases: ``impute_nan`` became
True in 0.10.0), and the labels are matminer's own, in that order.

The batch path reproduces matminer's numbers with vectorised NumPy over element tables read at run time from
the very data-source objects the matminer featurizers hold (built once, lazily), so it agrees with
:func:`matminer_featurizers` to about 1e-12 relative while being orders of magnitude faster.

``impute_nan=True`` everywhere: matminer replaces an element's missing value by the mean of that property over
the elements that have it, so no feature is NaN for a supported element (Z <= 103). Rows are NaN only for
inputs rejected by :func:`parse_composition`. ``ElementFraction`` has a column for every element up to Og; those
of Z > 103 are always 0 here.

Examples
--------
>>> feats = featurize(["LiFePO4", "La1.8Sr0.2CuO4", "Xx2O"])
>>> feats.matrix.shape, feats.errors[2] is not None
((3, 243), True)
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.formula import (
    ADDUCT_SEPARATORS,
    MAX_TOTAL_ATOMS,
    MAX_Z,
    MIN_AMOUNT,
    Parsed,
    describe_formula,
    formula_error,
    parse_amounts,
    parse_composition,
    parse_string,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matminer.featurizers.base import BaseFeaturizer
    from pymatgen.core import Composition

__all__ = [
    "FEATURIZER_SETTINGS",
    "MAX_TOTAL_ATOMS",
    "MAX_Z",
    "MIN_AMOUNT",
    "N_ELEMENTS_LABEL",
    "Features",
    "clear_caches",
    "feature_labels",
    "featurize",
    "featurize_one",
    "matminer_featurizers",
    "parse_composition",
    "reference_featurize",
]

logger = logging.getLogger(__name__)

#: Label of the one feature that is not matminer's: the number of distinct elements.
N_ELEMENTS_LABEL = "NElements"

_MM = "matminer.featurizers.composition"
#: Every matminer class and argument of the feature set, JSON-serialisable (store it in model manifests).
#: Treat it as read-only: the featurizers, labels and fast path are all built from it.
FEATURIZER_SETTINGS: dict[str, Any] = {
    "name": "cryspnet-magpie",
    "version": 1,
    "featurizers": [
        {
            "class": f"{_MM}.ElementProperty",
            "args": {
                "data_source": "magpie",
                # ElementProperty.from_preset("magpie").features, checked against matminer at run time
                "features": [
                    "Number",
                    "MendeleevNumber",
                    "AtomicWeight",
                    "MeltingT",
                    "Column",
                    "Row",
                    "CovalentRadius",
                    "Electronegativity",
                    "NsValence",
                    "NpValence",
                    "NdValence",
                    "NfValence",
                    "NValence",
                    "NsUnfilled",
                    "NpUnfilled",
                    "NdUnfilled",
                    "NfUnfilled",
                    "NUnfilled",
                    "GSvolume_pa",
                    "GSbandgap",
                    "GSmagmom",
                    "SpaceGroupNumber",
                ],
                # the magpie preset's statistics without "mode"
                "stats": ["minimum", "maximum", "range", "mean", "avg_dev"],
                "impute_nan": True,
            },
        },
        {"class": f"{_MM}.Stoichiometry", "args": {"p_list": [0, 2, 3, 5, 7, 10], "num_atoms": False}},
        {
            "class": f"{_MM}.ValenceOrbital",
            "args": {"orbitals": ["s", "p", "d", "f"], "props": ["frac"], "impute_nan": True},
        },
        {
            "class": f"{_MM}.IonProperty",
            "args": {
                "data_source": {
                    "class": "matminer.utils.data.PymatgenData",
                    "args": {"use_common_oxi_states": True, "impute_nan": True},
                },
                "fast": True,
                "impute_nan": True,
            },
        },
        {"class": f"{_MM}.BandCenter", "args": {"impute_nan": True}},
        {"class": f"{_MM}.ElementFraction", "args": {}},
    ],
    "extra_features": [{"label": N_ELEMENTS_LABEL, "definition": "number of distinct elements"}],
    "input_rules": {
        "max_z": MAX_Z,
        "min_amount": MIN_AMOUNT,
        "max_total_atoms": MAX_TOTAL_ATOMS,
        "noble_gas_only": "rejected",
        "isotopes_D_T": "rejected",
        "adduct_separators": list(ADDUCT_SEPARATORS),
        "oxidation_states_on_species": "ignored",
    },
}


# --------------------------------------------------------------------------------------------------------------
# matminer reference configuration


def _instantiate(spec: Mapping[str, Any]) -> Any:
    """Build ``{"class": "module.Class", "args": {...}}``; nested specs become objects too."""
    module_name, _, class_name = spec["class"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    args = {
        key: _instantiate(value) if isinstance(value, Mapping) and "class" in value else value
        for key, value in spec["args"].items()
    }
    return cls(**args)


def matminer_featurizers() -> list[BaseFeaturizer]:
    """Return matminer's featurizers configured exactly as :data:`FEATURIZER_SETTINGS` says.

    This is the reference the fast path is tested and benchmarked against; the ``NElements`` column is not
    among them (see :func:`reference_featurize`).
    """
    import warnings

    with warnings.catch_warnings():
        # pymatgen warns about noble gases lacking electronegativity while PymatgenData imputes it
        warnings.simplefilter("ignore", UserWarning)
        return [_instantiate(spec) for spec in FEATURIZER_SETTINGS["featurizers"]]


@functools.lru_cache(maxsize=1)
def _reference() -> tuple[Any, ...]:
    return tuple(matminer_featurizers())


def reference_featurize(composition: Composition) -> np.ndarray:
    """Featurize one composition with matminer itself (slow; float64, the ``NElements`` column appended)."""
    values: list[float] = []
    for featurizer in _reference():
        values.extend(float(v) for v in featurizer.featurize(composition))
    values.append(float(len(composition.element_composition)))
    return np.asarray(values, dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _labels() -> tuple[str, ...]:
    return _cached_tables_and_labels()[1]


def _build_labels() -> tuple[str, ...]:
    labels = [label for featurizer in _reference() for label in featurizer.feature_labels()]
    if N_ELEMENTS_LABEL in labels:  # pragma: no cover - would need a matminer change
        raise RuntimeError(f"matminer already has a feature labelled {N_ELEMENTS_LABEL!r}")
    labels.append(N_ELEMENTS_LABEL)
    if len(set(labels)) != len(labels):  # pragma: no cover
        raise RuntimeError("duplicate feature labels in the matminer configuration")
    return tuple(labels)


def feature_labels() -> list[str]:
    """Return the ordered feature labels: matminer's own labels, then ``NElements``.

    They are the model input contract; store them with trained weights.
    """
    return list(_labels())


# --------------------------------------------------------------------------------------------------------------
# parsing: cryspnet_gen.formula (the one parser; parse_composition is re-exported here for old imports)


# --------------------------------------------------------------------------------------------------------------
# element tables, taken from the matminer featurizers' own data sources


@dataclass(frozen=True)
class _Tables:
    """Per-element arrays indexed by Z (row 0 is unused)."""

    magpie: np.ndarray  # (n_properties, 119) ElementProperty's properties
    valence: np.ndarray  # (n_orbitals, 119) ValenceOrbital's N{orb}Valence
    n_valence: np.ndarray  # (119,) ValenceOrbital's NValence
    electronegativity: np.ndarray  # (119,) IonProperty's "X"
    band_base: np.ndarray  # (119,) BandCenter's 0.5 * (first ionisation + electron affinity) / 96.48
    oxidation_states: tuple[tuple[float, ...], ...]  # IonProperty's oxidation states, per Z
    stats: tuple[str, ...]
    p_list: tuple[int, ...]


@functools.lru_cache(maxsize=1)
def _tables() -> _Tables:
    return _cached_tables_and_labels()[0]


def _build_tables() -> _Tables:
    import warnings

    from matminer.featurizers.composition import (
        BandCenter,
        ElementFraction,
        ElementProperty,
        IonProperty,
        Stoichiometry,
        ValenceOrbital,
    )
    from pymatgen.core import Element

    featurizers = _reference()
    kinds = [ElementProperty, Stoichiometry, ValenceOrbital, IonProperty, BandCenter, ElementFraction]
    if [type(f) for f in featurizers] != kinds:  # pragma: no cover - guards edits to FEATURIZER_SETTINGS
        raise RuntimeError("FEATURIZER_SETTINGS no longer matches the fast path's featurizer layout")
    prop, stoich, valence, ion, band, _ = featurizers
    preset = ElementProperty.from_preset("magpie", impute_nan=prop.impute_nan)
    if list(prop.features) != list(preset.features):  # pragma: no cover
        raise RuntimeError("the magpie preset's properties changed in this matminer version")
    unsupported = set(prop.stats) - {"minimum", "maximum", "range", "mean", "avg_dev"}
    if unsupported or list(valence.props) != ["frac"] or stoich.num_atoms or not ion.fast:  # pragma: no cover
        raise RuntimeError("FEATURIZER_SETTINGS asks for something the fast path does not implement")

    elements = [Element.from_Z(z) for z in range(1, 119)]

    def column(source: Any, name: str) -> np.ndarray:
        values = [np.nan] + [float(source.get_elemental_property(e, name)) for e in elements]
        return np.asarray(values, dtype=np.float64)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pymatgen: "No Pauling electronegativity for Ne"
        magpie = np.stack([column(prop.data_source, name) for name in prop.features])
        orbitals = np.stack([column(valence.data_source, f"N{orb}Valence") for orb in valence.orbitals])
        n_valence = column(valence.data_source, "NValence")
        electronegativity = column(ion.data_source, "X")
        # the same arithmetic, in the same order, as BandCenter.featurize
        band_base = np.asarray(
            [np.nan]
            + [
                0.5
                * (
                    band.deml_data.get_elemental_property(e, "first_ioniz") / 1000
                    + band.magpie_data.get_elemental_property(e, "ElectronAffinity")
                )
                / 96.48
                for e in elements
            ],
            dtype=np.float64,
        )
        oxidation_states = (
            (),
            *(tuple(float(o) for o in ion.data_source.get_oxidation_states(e)) for e in elements),
        )
    supported = slice(1, MAX_Z + 1)
    checks = {
        "magpie": magpie,
        "valence": orbitals,
        "NValence": 1.0 / n_valence,
        "X": electronegativity,
        "band centre": np.log(band_base),
    }
    for name, table in checks.items():
        if not np.isfinite(table[..., supported]).all():  # pragma: no cover - impute_nan=True fills the gaps
            raise RuntimeError(f"non-finite values in the {name} element table although impute_nan=True")
    return _Tables(
        magpie=magpie,
        valence=orbitals,
        n_valence=n_valence,
        electronegativity=electronegativity,
        band_base=band_base,
        oxidation_states=oxidation_states,
        stats=tuple(prop.stats),
        p_list=tuple(int(p) for p in stoich.p_list),
    )


# The tables and labels are derived from matminer's data sources, but importing matminer (which pulls in
# scikit-learn and scipy.stats) costs seconds; a command-line prediction would spend most of its start-up there.
# So they are kept on disk, keyed by everything they depend on: the featurizer settings and the matminer and
# pymatgen versions. A missing, stale or unreadable file is rebuilt from matminer.
_TABLES_FORMAT = 1
# The fields of _Tables stored as they are (the others are packed into plain arrays).
_ARRAY_TABLES = ("magpie", "valence", "n_valence", "electronegativity", "band_base")


def _tables_cache_path() -> Any:
    import hashlib
    import json
    from importlib.metadata import version

    from cryspnet_gen.config import cache_dir

    key = json.dumps(
        [_TABLES_FORMAT, FEATURIZER_SETTINGS, version("matminer"), version("pymatgen-core"), MAX_Z],
        sort_keys=True,
        default=str,
    )
    return cache_dir() / "featurizer" / f"tables-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _save_tables(path: Any, tables: _Tables, labels: tuple[str, ...]) -> None:
    import os
    import tempfile

    ox_lengths = np.array([len(states) for states in tables.oxidation_states], dtype=np.int64)
    ox_values = np.array([o for states in tables.oxidation_states for o in states], dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            **{name: getattr(tables, name) for name in _ARRAY_TABLES},
            ox_lengths=ox_lengths,
            ox_values=ox_values,
            stats=np.array(tables.stats),
            p_list=np.array(tables.p_list, dtype=np.int64),
            labels=np.array(labels),
        )
    os.replace(tmp, path)


def _load_tables(path: Any) -> tuple[_Tables, tuple[str, ...]]:
    with np.load(path, allow_pickle=False) as data:
        ends = np.cumsum(data["ox_lengths"])
        values = data["ox_values"]
        states = tuple(
            tuple(float(o) for o in values[end - n : end])
            for n, end in zip(data["ox_lengths"], ends, strict=True)
        )
        tables = _Tables(
            **{name: data[name] for name in _ARRAY_TABLES},
            oxidation_states=states,
            stats=tuple(str(s) for s in data["stats"]),
            p_list=tuple(int(p) for p in data["p_list"]),
        )
        return tables, tuple(str(label) for label in data["labels"])


@functools.lru_cache(maxsize=1)
def _cached_tables_and_labels() -> tuple[_Tables, tuple[str, ...]]:
    path = _tables_cache_path()
    if path.is_file():
        try:
            return _load_tables(path)
        except Exception as exc:  # a damaged cache file is rebuilt, never trusted
            logger.warning("rebuilding the featurizer cache %s (%s)", path, exc)
    tables, labels = _build_tables(), _build_labels()
    try:
        _save_tables(path, tables, labels)
    except OSError as exc:  # a read-only home is no reason to fail
        logger.info("could not write the featurizer cache %s (%s)", path, exc)
    return tables, labels


# --------------------------------------------------------------------------------------------------------------
# the fast path


_CHARGE_TOLERANCE = 1e-8  # np.isclose(x, 0)'s default atol


@functools.lru_cache(maxsize=1 << 16)
def _compound_possible(zs: tuple[int, ...], amounts: tuple[float, ...]) -> bool:
    """IonProperty(fast=True)'s "compound possible": some choice of one oxidation state per element is neutral.

    matminer tries every combination, ``np.isclose(np.dot(ox, amounts), 0)`` (|sum| <= 1e-8), and an element
    without oxidation states makes it False (an empty product). With many combinations the same test is done on
    the set of distinct partial sums, pruning those that the remaining elements can no longer bring back to 0.
    """
    states = _tables().oxidation_states
    terms = [[o * a for o in states[z]] for z, a in zip(zs, amounts, strict=True)]
    if math.prod(map(len, terms)) <= 512:  # usually: try them all, as matminer does
        return any(-_CHARGE_TOLERANCE <= sum(ox) <= _CHARGE_TOLERANCE for ox in itertools.product(*terms))
    n = len(terms)
    # low[i], high[i]: the range that the terms of elements i, i+1, ... can still add
    low = [0.0] * (n + 1)
    high = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        low[i] = low[i + 1] + min(terms[i])
        high[i] = high[i + 1] + max(terms[i])
    partial: Iterable[float] = (0.0,)
    for i, term in enumerate(terms):
        lo, hi = -high[i + 1] - _CHARGE_TOLERANCE, -low[i + 1] + _CHARGE_TOLERANCE
        partial = {u for s in partial for t in term if lo <= (u := s + t) <= hi}
        if not partial:
            return False
    return True  # after the last element, [lo, hi] is [-1e-8, 1e-8]


def _featurize_group(zs: np.ndarray, w: np.ndarray, possible: np.ndarray, n_features: int) -> np.ndarray:
    """Features (float64) of R compositions with the same number n of elements: zs, w of shape (R, n)."""
    t = _tables()
    n_rows, n_el = zs.shape
    out = np.empty((n_rows, n_features), dtype=np.float64)
    total = w.sum(axis=1)  # matminer's sum of amounts, in formula order
    col = 0

    # ElementProperty: statistics weighted by the amounts
    values = t.magpie[:, zs]  # (P, R, n)
    mean = (values * w).sum(axis=2) / total
    stat_values = {
        "minimum": values.min(axis=2),
        "maximum": values.max(axis=2),
        "range": values.max(axis=2) - values.min(axis=2),
        "mean": mean,
        "avg_dev": (np.abs(values - mean[:, :, None]) * w).sum(axis=2) / total,
    }
    block = np.stack([stat_values[s] for s in t.stats], axis=-1)  # (P, R, S)
    n_block = block.shape[0] * block.shape[2]
    out[:, col : col + n_block] = block.transpose(1, 0, 2).reshape(n_rows, n_block)
    col += n_block

    # Stoichiometry: p-norms of the atomic fractions
    fractions = w / total[:, None]
    for p in t.p_list:
        out[:, col] = n_el if p == 0 else ((fractions**p).sum(axis=1)) ** (1.0 / p)
        col += 1

    # ValenceOrbital "frac": mean electrons in each shell over the mean number of valence electrons
    n_valence = (t.n_valence[zs] * w).sum(axis=1) / total
    shells = (t.valence[:, zs] * w).sum(axis=2) / total  # (n_orbitals, R)
    out[:, col : col + shells.shape[0]] = (shells / n_valence).T
    col += shells.shape[0]

    # IonProperty: compound possible, max and average ionic character
    if n_el < 2:
        out[:, col : col + 3] = (1.0, 0.0, 0.0)
    else:
        first, second = np.triu_indices(n_el, k=1)
        x = t.electronegativity[zs]
        ionic = 1.0 - np.exp(-0.25 * (x[:, first] - x[:, second]) ** 2)
        out[:, col] = possible
        out[:, col + 1] = ionic.max(axis=1)
        out[:, col + 2] = (fractions[:, first] * fractions[:, second] * ionic).sum(axis=1)
    col += 3

    # BandCenter: geometric mean of the per-element band-centre estimates
    out[:, col] = np.prod(t.band_base[zs] ** fractions, axis=1)
    col += 1

    # ElementFraction: atomic fraction per element, H..Og
    out[:, col : col + 118] = 0.0
    out[np.arange(n_rows)[:, None], col + zs - 1] = fractions
    col += 118

    out[:, col] = n_el
    col += 1
    if col != n_features:  # pragma: no cover
        raise RuntimeError(f"fast path produced {col} features, expected {n_features}")
    return out


def _featurize_parsed(rows: list[Parsed], n_features: int) -> np.ndarray:
    """float64 (len(rows), n_features) for validated rows, grouped by number of elements."""
    out = np.empty((len(rows), n_features), dtype=np.float64)
    groups: dict[int, list[int]] = {}
    for i, (zs, _) in enumerate(rows):
        groups.setdefault(len(zs), []).append(i)
    for n_el, index in groups.items():
        z_matrix = np.array([rows[i][0] for i in index], dtype=np.intp).reshape(len(index), n_el)
        w_matrix = np.array([rows[i][1] for i in index], dtype=np.float64).reshape(len(index), n_el)
        possible = (
            np.array([_compound_possible(*rows[i]) for i in index], dtype=np.float64)
            if n_el > 1
            else np.ones(len(index))
        )
        out[index] = _featurize_group(z_matrix, w_matrix, possible, n_features)
    return out


@dataclass(frozen=True)
class Features:
    """Feature matrix of a batch, one row per input in input order.

    Attributes
    ----------
    matrix
        float32, shape (N, F); a row of NaN where the input was rejected.
    errors
        Per input: None, or the reason it was rejected (naming the formula).
    labels
        The F feature labels (:func:`feature_labels`).
    formulas
        Per input: the formula as given (``Composition.formula`` for a Composition).
    """

    matrix: np.ndarray
    errors: list[str | None]
    labels: list[str]
    formulas: list[str]

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the rows that were featurized."""
        return np.array([e is None for e in self.errors], dtype=bool)

    def __len__(self) -> int:
        return len(self.errors)

    def to_dataframe(self) -> pd.DataFrame:
        """The matrix as a DataFrame: columns are the labels, the index the input formulas."""
        import pandas as pd

        return pd.DataFrame(self.matrix, columns=self.labels, index=pd.Index(self.formulas, name="formula"))


def _as_items(formulas: object) -> list[object]:
    from pymatgen.core import Composition

    if isinstance(formulas, (str, bytes, Composition, Mapping)) or not isinstance(formulas, Iterable):
        return [formulas]
    return list(formulas)


def featurize(formulas: str | Composition | Iterable[str | Composition]) -> Features:
    """Featurize formulas in one vectorised batch.

    Parameters
    ----------
    formulas
        A formula string, a pymatgen ``Composition``, or an iterable of them. Repeated inputs are computed once.

    Returns
    -------
    Features
        One row per input, in order. Rejected inputs (see :func:`parse_composition` for the rules) get a NaN row
        and an error message; they never stop the batch.
    """
    items = _as_items(formulas)
    labels = feature_labels()
    n_features = len(labels)
    errors: list[str | None] = [None] * len(items)
    row_of_input = np.full(len(items), -1, dtype=np.intp)
    unique_rows: list[Parsed] = []
    row_of_parsed: dict[Parsed, int] = {}
    row_of_string: dict[str, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, str) and item in row_of_string:
            row_of_input[i] = row_of_string[item]
            continue
        parsed = parse_string(item) if type(item) is str else parse_amounts(item)
        if isinstance(parsed, str):
            errors[i] = formula_error(item, parsed)
            continue
        row = row_of_parsed.setdefault(parsed, len(unique_rows))
        if row == len(unique_rows):
            unique_rows.append(parsed)
        row_of_input[i] = row
        if isinstance(item, str):
            row_of_string[item] = row

    matrix = np.full((len(items), n_features), np.nan, dtype=np.float32)
    if unique_rows:
        values = _featurize_parsed(unique_rows, n_features)
        good = row_of_input >= 0
        matrix[good] = values[row_of_input[good]]
    n_bad = sum(e is not None for e in errors)
    logger.debug("featurized %d inputs (%d distinct, %d rejected)", len(items), len(unique_rows), n_bad)
    return Features(
        matrix=matrix, errors=errors, labels=labels, formulas=[describe_formula(x) for x in items]
    )


def clear_caches() -> None:
    """Forget the per-formula caches (parsed formulas, charge-balance answers); the element tables stay."""
    parse_string.cache_clear()
    _compound_possible.cache_clear()


def featurize_one(formula: str | Composition) -> np.ndarray:
    """Featurize a single formula: float32 vector of length ``len(feature_labels())``.

    Raises
    ------
    ValueError
        When the formula is rejected (see :func:`parse_composition`).
    """
    parsed = parse_amounts(formula)
    if isinstance(parsed, str):
        raise ValueError(formula_error(formula, parsed))
    return _featurize_parsed([parsed], len(_labels()))[0].astype(np.float32)
