"""The prototype library: Materials Project structures in Wyckoff form, one (or a few) per structure type.

A *structure type* is (anonymous formula, space group, Wyckoff letters of each canonical element): every NaCl-like
rock salt is one type. The library keeps, per type, the representatives the template source substitutes into
(lowest energy above hull first, experimentally known preferred, chemically different when more than one is
kept) and, for the known-compound lookup, every low-energy or experimentally known compound itself.

Each row is stored in its symmetrised Wyckoff form: spglib's Hall number, the conventional standard cell
parameters and one site per Wyckoff orbit (element, letter, fractional position); the full cell is rebuilt from
spglib's symmetry operations of that Hall number on first use. That makes the library an order of magnitude
smaller than P1 structures. A library folder::

    prototypes.parquet   the rows (no pickle)
    manifest.json        format and version, counts, filters, where the data came from, sha256 of the table
    README.md            what it was built from, licence and attribution (Materials Project, CC BY 4.0)

:func:`load_library` checks the table's sha256 against the manifest and refuses a changed file with a
:class:`~cryspnet_gen.sources.templates.store.TemplateStoreError` naming it.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.data import file_digest
from cryspnet_gen.formula import anonymous_of, canonical_elements, reduced_formula_of_numbers
from cryspnet_gen.sources.templates.build import TemplateRecord, symmetry_of_record
from cryspnet_gen.sources.templates.store import TemplateStore, TemplateStoreError, read_store_files
from cryspnet_gen.symmetry import SYMPREC

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LIBRARY_FORMAT",
    "LIBRARY_MANIFEST",
    "LIBRARY_TABLE",
    "LIBRARY_VERSION",
    "PrototypeLibrary",
    "analyse_wyckoff",
    "expand_orbits",
    "load_library",
    "select_prototypes",
    "type_key",
    "write_library",
]

logger = logging.getLogger(__name__)

LIBRARY_FORMAT = "cryspnet-gen prototype library"
LIBRARY_VERSION = 1
LIBRARY_TABLE = "prototypes.parquet"
LIBRARY_MANIFEST = "manifest.json"
#: Fractional-coordinate grid on which expanded positions are compared (spglib's standard cells are idealised).
_GRID = 1000
# Stored fractional coordinates are integers in units of 1/_FRAC_SCALE.
_FRAC_SCALE = 65536
LIBRARY_COLUMNS = (
    "template_id",
    "formula",
    "anonymous",
    "space_group",
    "hall_number",
    "e_above_hull",
    "experimental",
    "nsites",
    "volume_per_atom",
    "elements",
    "wyckoff",
    "cell",
    "orbit_numbers",
    "orbit_frac",
    "representative",
    "type_size",
)


# ---------------------------------------------------------------------------------------------------------
# Wyckoff form
# ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=600)
def _operations(hall_number: int) -> tuple[np.ndarray, np.ndarray]:
    import spglib

    ops = spglib.get_symmetry_from_database(int(hall_number))
    if ops is None:  # pragma: no cover - every Hall number 1..530 is in spglib's database
        raise ValueError(f"spglib has no operations for Hall number {hall_number}")
    return np.asarray(ops["rotations"], dtype=float), np.asarray(ops["translations"], dtype=float)


def expand_orbits(hall_number: int, numbers: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every site of the conventional cell from one site per orbit: ``(numbers, frac)``.

    Positions are the images of each representative under the Hall number's operations (centring included),
    reduced into [0, 1) and de-duplicated on a 1/1000 grid.
    """
    rot, trans = _operations(hall_number)
    frac = np.asarray(frac, dtype=float).reshape(-1, 3)
    images = np.einsum("oij,mj->omi", rot, frac) + trans[:, None, :]  # [ops, m, 3]
    images -= np.floor(images)
    out_numbers, out_frac = [], []
    for m, z in enumerate(np.asarray(numbers, dtype=int)):
        grid = np.rint(images[:, m, :] * _GRID).astype(np.int64) % _GRID
        _, first = np.unique(grid, axis=0, return_index=True)
        out_frac.append(images[np.sort(first), m, :])
        out_numbers.append(np.full(len(first), z, dtype=int))
    return np.concatenate(out_numbers), np.concatenate(out_frac)


def _cell_params(lattice: np.ndarray) -> list[float]:
    from pymatgen.core import Lattice

    return [float(x) for x in Lattice(lattice).parameters]


def analyse_wyckoff(rec: TemplateRecord) -> dict[str, Any] | str:
    """A library row of a record (Wyckoff form of its conventional standard cell), or why it was rejected."""
    import spglib

    analysed = symmetry_of_record(rec)
    if isinstance(analysed, str):
        return analysed
    _, _, numbers, ds = analysed
    try:
        std = (ds.std_lattice, ds.std_positions, ds.std_types)
        sd = spglib.get_symmetry_dataset(std, symprec=1e-3)  # the idealised standard cell: its own orbits
    except Exception as exc:  # spglib raises SpglibError on odd cells
        return f"spglib: {exc}"
    if sd is None or sd.hall_number != ds.hall_number:
        return "standard cell not in the standard setting"
    std_types = np.asarray(ds.std_types, dtype=int)
    reps = sorted({int(e) for e in sd.equivalent_atoms})
    orbit_numbers = std_types[reps]
    orbit_frac = np.asarray(ds.std_positions, dtype=float)[reps]
    expanded, _ = expand_orbits(int(ds.hall_number), orbit_numbers, orbit_frac)
    if len(expanded) != len(std_types):
        return "orbits do not rebuild the standard cell"
    uniq, counts = np.unique(std_types, return_counts=True)
    amounts = {int(z): int(n) for z, n in zip(uniq, counts, strict=True)}
    g = math.gcd(*amounts.values())
    amounts = {z: n // g for z, n in amounts.items()}
    order = canonical_elements(amounts)
    letters = [str(sd.wyckoffs[r]) for r in reps]
    signature = [
        "".join(sorted(w for w, z in zip(letters, orbit_numbers, strict=True) if z == el)) for el in order
    ]
    std_lattice = np.asarray(ds.std_lattice, dtype=float)
    return {
        "template_id": str(rec.template_id),
        "formula": reduced_formula_of_numbers(std_types)[0],
        "anonymous": anonymous_of(amounts.values()),
        "space_group": int(ds.number),
        "hall_number": int(ds.hall_number),
        "e_above_hull": math.nan if rec.e_above_hull is None else float(rec.e_above_hull),
        "experimental": bool(getattr(rec, "experimental", False)),
        "nsites": len(std_types),
        "input_sites": len(numbers),
        "volume_per_atom": abs(float(np.linalg.det(std_lattice))) / len(std_types),
        "elements": [int(z) for z in order],
        "wyckoff": signature,
        "cell": _cell_params(std_lattice),
        "orbit_numbers": [int(z) for z in orbit_numbers],
        "orbit_frac": orbit_frac.reshape(-1).round(6).tolist(),
    }


def analyse_many(records: Iterable[TemplateRecord]) -> Iterator[dict[str, Any] | str]:
    """:func:`analyse_wyckoff` for each record (warnings of pymatgen about noble gases silenced)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")
        for rec in records:
            yield analyse_wyckoff(rec)


# ---------------------------------------------------------------------------------------------------------
# choosing representatives
# ---------------------------------------------------------------------------------------------------------


def _diverse(rows: pd.DataFrame, n: int) -> list[int]:
    """Up to ``n`` row labels of one structure type: the best first, then those whose elements differ most."""
    labels = list(rows.index)
    chosen = [labels[0]]
    elements = {i: set(rows.at[i, "elements"]) for i in labels}
    while len(chosen) < n and len(chosen) < len(labels):
        rest = [i for i in labels if i not in chosen]
        # most elements not seen in any chosen representative; ties keep the better-ranked row
        best = max(rest, key=lambda i: min(len(elements[i] - elements[c]) for c in chosen))
        if min(len(elements[best] - elements[c]) for c in chosen) == 0:
            break
        chosen.append(best)
    return chosen


_ANONYMOUS_TOKEN = re.compile(r"([A-Z]|X\d+)(\d*)")


def type_key(anonymous: str, space_group: int, wyckoff: Iterable[str]) -> str:
    """The structure type of a row: anonymous formula, space group and Wyckoff letters per canonical element.

    Elements of equal amount are interchangeable in an anonymous formula, so their letter strings are sorted
    within each block of equal amounts (rock salt is one type whether Na or Cl sits on 4a).
    """
    amounts = [int(n or 1) for _, n in _ANONYMOUS_TOKEN.findall(anonymous)]
    letters = list(wyckoff)
    parts: list[str] = []
    for _, block in itertools.groupby(
        range(len(letters)), key=lambda i: amounts[i] if i < len(amounts) else -1
    ):
        parts.extend(sorted(letters[i] for i in block))
    return f"{anonymous}|{int(space_group)}|{'/'.join(parts)}"


def select_prototypes(
    table: pd.DataFrame,
    *,
    per_type: int = 1,
    known_e_above_hull: float | None = 0.0,
    exclude_formulas: Iterable[str] = (),
) -> pd.DataFrame:
    """The library rows of an analysed table.

    Parameters
    ----------
    table
        Rows of :func:`analyse_wyckoff`.
    per_type
        Representatives kept per structure type (ranked by experimentally known first, then energy above hull,
        then chemically different from those already kept); 0 keeps every structure (a full store).
    known_e_above_hull
        Rows kept, besides the representatives, for the known-compound lookup: experimentally known ones and
        those at most this far above the hull (eV/atom); ``None`` keeps no others.
    exclude_formulas
        Reduced formulas left out entirely (a benchmark's validation and test formulas).
    """
    banned = set(exclude_formulas)
    frame = table[~table["formula"].isin(banned)].copy()
    frame["type_key"] = [
        type_key(a, g, w)
        for a, g, w in zip(frame["anonymous"], frame["space_group"], frame["wyckoff"], strict=True)
    ]
    ehull = frame["e_above_hull"].fillna(np.inf)
    frame = frame.assign(_e=ehull, _x=~frame["experimental"].astype(bool))
    frame = frame.sort_values(["type_key", "_x", "_e", "template_id"], kind="stable")
    sizes = frame.groupby("type_key", sort=False)["template_id"].transform("size")
    frame["type_size"] = sizes.astype(np.int32)
    reps: list[int] = []
    if per_type == 0:  # every structure: a full template store in Wyckoff form
        reps = list(frame.index)
    for _, rows in frame.groupby("type_key", sort=False) if per_type else ():
        reps.extend(_diverse(rows, per_type) if per_type > 1 else [rows.index[0]])
    frame["representative"] = False
    frame.loc[reps, "representative"] = True
    keep = frame["representative"].copy()
    if known_e_above_hull is not None:
        keep |= frame["experimental"].astype(bool) | (frame["_e"] <= known_e_above_hull)
    out = frame[keep].drop(columns=["type_key", "_e", "_x"])
    return out.sort_values(["anonymous", "space_group", "template_id"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# the library folder
# ---------------------------------------------------------------------------------------------------------


def write_library(
    frame: pd.DataFrame,
    out: str | os.PathLike[str],
    *,
    name: str,
    description: str,
    filters: dict[str, Any],
    readme: str = "",
    overwrite: bool = False,
) -> Path:
    """Write a library folder (table, manifest with its sha256, README); returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(out)
    if (root / LIBRARY_TABLE).exists() and not overwrite:
        raise TemplateStoreError(f"{root} already holds a prototype library; pass overwrite=True (--force)")
    root.mkdir(parents=True, exist_ok=True)
    columns = {
        "template_id": pa.array(frame["template_id"].astype(str)),
        "formula": pa.array(frame["formula"].astype(str)),
        "anonymous": pa.array(frame["anonymous"].astype(str)),
        "space_group": pa.array(frame["space_group"].astype(np.int16)),
        "hall_number": pa.array(frame["hall_number"].astype(np.int16)),
        "e_above_hull": pa.array(frame["e_above_hull"].astype(np.float32)),
        "experimental": pa.array(frame["experimental"].astype(bool)),
        "nsites": pa.array(frame["nsites"].astype(np.int16)),
        "volume_per_atom": pa.array(frame["volume_per_atom"].astype(np.float32)),
        "elements": pa.array(list(frame["elements"]), type=pa.list_(pa.uint8())),
        "wyckoff": pa.array(list(frame["wyckoff"]), type=pa.list_(pa.string())),
        "cell": pa.array(list(frame["cell"]), type=pa.list_(pa.float32())),
        "orbit_numbers": pa.array(list(frame["orbit_numbers"]), type=pa.list_(pa.uint8())),
        # fractional coordinates in units of 1/65536 (< 2e-4 Å in a 10 Å cell): half the bytes of float32
        "orbit_frac": pa.array(
            [
                np.rint(np.mod(np.asarray(f, dtype=float), 1.0) * _FRAC_SCALE).astype(np.int64) % _FRAC_SCALE
                for f in frame["orbit_frac"]
            ],
            type=pa.list_(pa.uint16()),
        ),
        "representative": pa.array(frame["representative"].astype(bool)),
        "type_size": pa.array(frame["type_size"].astype(np.int32)),
    }
    tmp = root / (LIBRARY_TABLE + ".tmp")
    pq.write_table(pa.table(columns), tmp, compression="zstd", compression_level=19)
    tmp.replace(root / LIBRARY_TABLE)
    import pymatgen.core

    manifest = {
        "format": LIBRARY_FORMAT,
        "version": LIBRARY_VERSION,
        "name": name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "description": description,
        "licence": "Materials Project data, CC BY 4.0 (Jain et al., APL Mater. 1, 011002 (2013))",
        "n_rows": len(frame),
        "n_representatives": int(frame["representative"].sum()),
        "n_types": len(
            {
                type_key(a, g, w)
                for a, g, w, r in zip(
                    frame["anonymous"],
                    frame["space_group"],
                    frame["wyckoff"],
                    frame["representative"],
                    strict=True,
                )
                if r
            }
        ),
        "filters": filters,
        "symprec": SYMPREC,
        "pymatgen": pymatgen.core.__version__,
        "files": {
            LIBRARY_TABLE: {
                "sha256": file_digest(root / LIBRARY_TABLE),
                "bytes": (root / LIBRARY_TABLE).stat().st_size,
            }
        },
    }
    (root / LIBRARY_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if readme:
        (root / "README.md").write_text(readme)
    return root


class PrototypeLibrary(TemplateStore):
    """A loaded prototype library: a :class:`TemplateStore` whose cells are rebuilt from their Wyckoff form.

    The template ranking sees only the representatives of each structure type; :meth:`known` finds the
    compounds of a formula among all rows (representatives and the known-compound rows).
    """

    def __init__(self, frame: pd.DataFrame, path: Path | None = None, manifest: dict[str, Any] | None = None):
        self.all_rows = frame.reset_index(drop=True)
        reps = self.all_rows[self.all_rows["representative"].to_numpy(dtype=bool)]
        super().__init__(reps, path, manifest)
        self._known_index: dict[str, np.ndarray] | None = None

    def __repr__(self) -> str:
        return (
            f"PrototypeLibrary({str(self.path)!r}, {len(self)} prototypes, {len(self.all_rows)} rows, "
            f"{len(self._by_anonymous)} anonymous formulas)"
        )

    def row_cell(self, row: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lattice, numbers, frac)`` of one row, rebuilt from its Wyckoff form."""
        return _row_cell(row)

    def known(self, reduced_formula: str) -> pd.DataFrame:
        """The library's compounds of exactly this reduced formula (all rows), lowest energy above hull first."""
        if self._known_index is None:
            groups = self.all_rows.groupby("formula", sort=False).indices
            self._known_index = {str(k): np.asarray(v) for k, v in groups.items()}
        idx = self._known_index.get(reduced_formula)
        if idx is None:
            return self.all_rows.iloc[:0]
        rows = self.all_rows.iloc[idx]
        order = rows.assign(_e=rows["e_above_hull"].fillna(np.inf)).sort_values(["_e", "template_id"])
        return order.drop(columns="_e")


def _row_cell(row: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from pymatgen.core import Lattice

    numbers, frac = expand_orbits(
        int(row["hall_number"]),
        np.asarray(row["orbit_numbers"], dtype=int),
        np.asarray(row["orbit_frac"], dtype=float) / _FRAC_SCALE,
    )
    lattice = Lattice.from_parameters(*(float(x) for x in row["cell"])).matrix
    return lattice, numbers, frac


_LIBRARY_FORMAT: dict[str, Any] = {
    "what": "prototype library",
    "manifest_name": LIBRARY_MANIFEST,
    "table_name": LIBRARY_TABLE,
    "version": LIBRARY_VERSION,
    "columns": LIBRARY_COLUMNS,
}


@functools.lru_cache(maxsize=4)
def _check_coordinate_column(table: Path, path: str, rebuild: str) -> None:
    """Refuse a table whose coordinates are not integers in 1/65536 (a development build stored floats, which
    this reader would turn into zeros: every atom on the origin)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        column = pq.read_schema(table).field("orbit_frac").type
    except (KeyError, OSError, pa.ArrowInvalid) as exc:
        raise TemplateStoreError(
            f"prototype library {path!r}: unreadable {table.name} ({exc}); {rebuild}"
        ) from None
    if not (pa.types.is_list(column) and pa.types.is_unsigned_integer(column.value_type)):
        raise TemplateStoreError(
            f"prototype library {path!r}: coordinates stored as {column}, not as integers in 1/{_FRAC_SCALE} (an "
            f"older build); {rebuild}"
        )


def _load_cached(path: str, stamp: tuple[int, int]) -> PrototypeLibrary:
    root = Path(path)
    table = root / LIBRARY_TABLE
    rebuild = "reinstall cryspnet-gen or rebuild it with 'cryspnet-gen templates build --prototypes ...'"

    def check(manifest: dict[str, Any]) -> None:
        if manifest.get("format") != LIBRARY_FORMAT:
            raise TemplateStoreError(
                f"{root / LIBRARY_MANIFEST} is not a {LIBRARY_FORMAT} manifest; {rebuild}"
            )
        expected = (manifest.get("files") or {}).get(LIBRARY_TABLE, {}).get("sha256")
        if not table.is_file():
            raise TemplateStoreError(f"prototype library {path!r}: {LIBRARY_TABLE} is missing; {rebuild}")
        if expected is None or file_digest(table) != expected:
            raise TemplateStoreError(
                f"prototype library {path!r}: {table} does not match the sha256 in its manifest (changed or "
                f"damaged); {rebuild}"
            )
        _check_coordinate_column(table, path, rebuild)

    manifest, frame = read_store_files(root, **_LIBRARY_FORMAT, rebuild=rebuild, check=check)
    return PrototypeLibrary(frame, root, manifest)


def load_library(path: str | os.PathLike[str]) -> PrototypeLibrary:
    """Open a prototype library folder (cached per process until its table changes)."""
    root = Path(path).expanduser().resolve()
    try:
        st = (root / LIBRARY_TABLE).stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)
    if not (root / LIBRARY_MANIFEST).is_file():
        raise TemplateStoreError(
            f"no prototype library at {str(path)!r} (no {LIBRARY_MANIFEST}); build one with "
            "'cryspnet-gen templates build --prototypes --from ../shared/data --out DIR'"
        )
    return _load_cached(str(root), stamp)
