"""Template candidates: known structures of the same stoichiometry type, substituted, scaled and ranked.

Random Wyckoff placement in a predicted space group rarely reproduces a real structure; most compounds,
however, share their anonymous formula (``ABC3``) and space group with some known compound. This module keeps a
*template store* of known structures and turns the templates of a formula's anonymous formula into candidates:

1. **Store** (:func:`build_store`, ``cryspnet-gen templates build``): ordered structures from a data folder like
   ``../shared/data`` (its Materials Project CIFs), a folder of CIF / POSCAR / pymatgen-JSON files, or the
   Materials Project API (``mp-api``, needs an API key). Each entry keeps its cell, its space group (spglib,
   symprec 0.1, as everywhere in this package), the Wyckoff letters of each element and the energy above hull
   when known. The store is a folder (``templates.parquet`` + ``manifest.json``) that lives outside the package:
   pass it as ``templates=`` or set ``CRYSPNET_GEN_TEMPLATES``. Loading indexes it by anonymous formula, so a
   look-up takes milliseconds.
2. **Substitution**: the formula's elements are mapped onto the template's elements of the same amount (every
   such one-to-one mapping is scored). The substitution likelihood is the mean over elements of
   ``log P(target element | template element)`` from Hautier et al.'s data-mined ionic substitution model
   (pymatgen's :class:`~pymatgen.analysis.structure_prediction.substitution_probability.SubstitutionProbability`,
   which ships with pymatgen: the conditional probability that the structure predictor of that paper uses). It is
   defined for ions; since oxidation states cannot be assigned reliably to the intermetallics that are a large
   part of MP, each element pair takes the largest value over the two elements' oxidation states in the table. The
   8 elements the table lacks (noble gases, Pm, At, Rn, Fr, Ra) fall back to the table's "never observed" value
   minus a Mendeleev-number distance (Pettifor's chemical scale), identity always scoring highest.
3. **Scaling**: the cell is scaled isotropically to the predicted volume per atom (CRYSPNet's volume model; the
   template's own volume when there is no prediction); the template's space group is checked on the result.
4. **Score** (log scale, higher is better; :class:`TemplateScoring`)::

       score = w_model x log max(P(lattice) x P(group | lattice), p_floor)   # CRYSPNet, the template's group
             + w_substitution x substitution log-likelihood
             + w_prevalence x log(number of stored entries with this anonymous formula and group)

   CRYSPNet's own candidates get ``w_model x log P(lattice) x P(group | lattice) + cryspnet_offset`` so that both
   sources rank in one list (:func:`merge_candidates`). The weights were tuned on validation formulas (never test ones):
   see ``docs/benchmarks.md``.

Templates of one structure type often map onto the same candidate; candidates are de-duplicated first by
(group, element -> Wyckoff letters) and then with pymatgen's ``StructureMatcher``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from pymatgen.core import Composition, Structure

    from cryspnet_gen.generate import Candidate, CandidateList
    from cryspnet_gen.predict import Prediction, Predictor

__all__ = [
    "ENV_VAR",
    "STORE_VERSION",
    "TemplateOption",
    "TemplateRecord",
    "TemplateScoring",
    "TemplateStore",
    "TemplateStoreError",
    "anonymous_formula",
    "build_store",
    "cryspnet_needed",
    "load_store",
    "merge_candidates",
    "records_from_data_dir",
    "records_from_folder",
    "records_from_materials_project",
    "resolve_store",
    "substitution_matrix",
    "template_candidates",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the default template store folder.
ENV_VAR = "CRYSPNET_GEN_TEMPLATES"
STORE_VERSION = 1
STORE_TABLE = "templates.parquet"
STORE_MANIFEST = "manifest.json"
#: Symmetry tolerance (Å) for a template's space group and Wyckoff letters, as in the rest of the package.
SYMPREC = 0.1
#: Elements a store can hold (pymatgen's Element knows more, the featurizer and CRYSPNet up to 103).
MAX_Z = 103
#: Most element-to-site mappings scored per template (a formula of many equal amounts has n! of them).
MAX_ASSIGNMENTS = 720
_STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".json")
_STRUCTURE_NAMES = ("POSCAR", "CONTCAR")


class TemplateStoreError(ValueError):
    """A template store is missing, unreadable or of another format version."""


# ---------------------------------------------------------------------------------------------------------
# anonymous formulas
# ---------------------------------------------------------------------------------------------------------


def _integer_amounts(composition: Composition) -> dict[int, int]:
    """Atomic number -> amount in the reduced integer formula."""
    amounts = {el.Z: float(n) for el, n in composition.element_composition.items() if n > 0}
    values = list(amounts.values())
    if any(abs(v - round(v)) > 1e-6 for v in values):
        raise ValueError(
            f"{composition.formula!r} has non-integer amounts; templates need an integer formula"
        )
    ints = {z: round(v) for z, v in amounts.items()}
    g = math.gcd(*ints.values())
    return {z: n // g for z, n in ints.items()}


def _anonymous(amounts: Iterable[int]) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    parts = []
    for i, n in enumerate(sorted(amounts)):
        parts.append(f"{letters[i] if i < 26 else f'X{i}'}{n if n != 1 else ''}")
    return "".join(parts)


def anonymous_formula(formula: str | Composition) -> str:
    """The anonymous formula of a composition's reduced integer formula, amounts ascending: ``"ABC3"``.

    Equal to pymatgen's ``Composition.anonymized_formula`` for integer formulas.
    """
    from pymatgen.core import Composition

    comp = Composition(formula) if isinstance(formula, str) else formula
    return _anonymous(_integer_amounts(comp).values())


def _canonical_elements(amounts: dict[int, int]) -> list[int]:
    """Elements ordered by (amount, atomic number): the order in which template sites are stored."""
    return sorted(amounts, key=lambda z: (amounts[z], z))


# ---------------------------------------------------------------------------------------------------------
# records and store building
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TemplateRecord:
    """One structure offered to a store: ``lattice`` (3x3, rows), ``frac`` (n x 3), ``numbers`` (n)."""

    template_id: str
    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray
    e_above_hull: float | None = None
    source: str = ""


def _analyse_record(rec: TemplateRecord) -> dict[str, Any] | str:
    """Store row of a record (space group, Wyckoff letters per element...) or why it was rejected."""
    import spglib

    numbers = np.asarray(rec.numbers, dtype=int)
    if len(numbers) == 0:
        return "no atoms"
    if numbers.min() < 1 or numbers.max() > MAX_Z:
        return f"element with Z > {MAX_Z} or < 1"
    lattice = np.asarray(rec.lattice, dtype=float).reshape(3, 3)
    frac = np.asarray(rec.frac, dtype=float).reshape(-1, 3)
    volume = abs(float(np.linalg.det(lattice)))
    if not volume > 1e-3:
        return "degenerate cell"
    try:
        ds = spglib.get_symmetry_dataset((lattice, frac, numbers), symprec=SYMPREC)  # type: ignore[arg-type]
    except Exception as exc:  # spglib raises SpglibError on odd cells
        return f"spglib: {exc}"
    if ds is None:
        return "spglib found no symmetry"
    uniq, counts = np.unique(numbers, return_counts=True)
    amounts = {int(z): int(n) for z, n in zip(uniq, counts, strict=True)}
    g = math.gcd(*amounts.values())
    amounts = {z: n // g for z, n in amounts.items()}
    order = _canonical_elements(amounts)
    equivalent = np.asarray(ds.equivalent_atoms)
    wyckoffs = list(ds.wyckoffs)
    signature = []
    for z in order:
        orbits = sorted({int(e) for e, n in zip(equivalent, numbers, strict=True) if n == z})
        signature.append("".join(sorted(wyckoffs[o] for o in orbits)))
    from cryspnet_gen.data import _reduced_formula

    return {
        "template_id": str(rec.template_id),
        "formula": _reduced_formula(numbers)[0],
        "anonymous": _anonymous(amounts.values()),
        "space_group": int(ds.number),
        "nsites": len(numbers),
        "e_above_hull": math.nan if rec.e_above_hull is None else float(rec.e_above_hull),
        "volume_per_atom": volume / len(numbers),
        "source": rec.source,
        "elements": [int(z) for z in order],
        "wyckoff": signature,
        "lattice": lattice.reshape(-1).round(8).tolist(),
        "numbers": numbers.tolist(),
        "frac": frac.reshape(-1).round(8).tolist(),
    }


def _analyse_chunk(records: list[TemplateRecord]) -> list[dict[str, Any] | str]:
    import warnings

    with warnings.catch_warnings():  # pymatgen: "No Pauling electronegativity for Ar" (noble-gas formulas)
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")
        return [_analyse_record(r) for r in records]


def records_from_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Iterator[TemplateRecord]:
    """The Materials Project structures of a data folder (``mp2025_topology``), with their energy above hull."""

    from cryspnet_gen.config import resolve_data_dir
    from cryspnet_gen.data import MP_LATTICE, MP_STRUCTURES, _read_csv, _require, read_cif_cell

    root = resolve_data_dir(data_dir)
    lattice = _read_csv(_require(root, MP_LATTICE), ["material_id", "ehull_formula_spg"])
    ehull = dict(zip(lattice["material_id"], lattice["ehull_formula_spg"], strict=True))
    for rel in MP_STRUCTURES:
        frame: pd.DataFrame = _read_csv(_require(root, rel), ["material_id", "cif"])
        for mid, cif in zip(frame["material_id"], frame["cif"], strict=True):
            try:
                lat, frac, numbers = read_cif_cell(cif)
            except ValueError as exc:
                logger.warning("%s: unreadable CIF (%s)", mid, exc)
                continue
            e = ehull.get(mid)
            yield TemplateRecord(
                str(mid), lat, frac, numbers, None if e is None or e != e else float(e), "mp2025"
            )


def _structures_in_file(path: Path) -> list[tuple[str, Structure, float | None]]:
    """(id, structure, e_above_hull or None) for every structure in a CIF / POSCAR / JSON file."""
    from pymatgen.core import Structure

    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        items = data if isinstance(data, list) else [data]
        out = []
        for i, item in enumerate(items):
            e = None
            if isinstance(item, dict) and "structure" in item and "lattice" not in item:
                e = item.get("e_above_hull", item.get("energy_above_hull"))
                name = str(item.get("material_id") or item.get("entry_id") or f"{path.stem}-{i}")
                s = item["structure"]
                s = s if isinstance(s, Structure) else Structure.from_dict(s)
            elif isinstance(item, dict) and "lattice" in item:
                s = Structure.from_dict(item)
                name = f"{path.stem}-{i}" if len(items) > 1 else path.stem
                e = (item.get("properties") or {}).get("e_above_hull")
            else:
                raise ValueError(f"item {i} is neither a pymatgen Structure nor a dict with a 'structure'")
            out.append((name, s, None if e is None else float(e)))
        return out
    if path.suffix.lower() == ".cif":
        from pymatgen.io.cif import CifParser

        structures = CifParser(path).parse_structures(primitive=False)
        if len(structures) == 1:
            return [(path.stem, structures[0], None)]
        return [(f"{path.stem}-{i}", s, None) for i, s in enumerate(structures)]
    return [(path.stem, Structure.from_file(path), None)]


def records_from_folder(folder: str | os.PathLike[str]) -> Iterator[TemplateRecord]:
    """Every structure in a folder tree of CIF, POSCAR/CONTCAR/``*.vasp`` and pymatgen JSON files.

    A JSON file holds one ``Structure.as_dict()``, a list of them, or entries with ``"structure"`` (and
    optionally ``"material_id"`` and ``"e_above_hull"``) such as a ``ComputedStructureEntry`` dump. Ids are
    the file's path relative to the folder (plus ``-i`` for files with several structures). Unreadable files
    and disordered structures are skipped with a warning.
    """
    import warnings

    root = Path(folder)
    if not root.is_dir():
        raise TemplateStoreError(f"template source {str(root)!r} is not a folder")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and (p.suffix.lower() in _STRUCTURE_SUFFIXES or p.name.startswith(_STRUCTURE_NAMES))
    )
    for path in files:
        rel = path.relative_to(root)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = _structures_in_file(path)
        except Exception as exc:  # any unreadable file is skipped, the others go on
            logger.warning("%s: skipped (%s: %s)", rel, type(exc).__name__, exc)
            continue
        for name, s, e in found:
            if not s.is_ordered:
                logger.warning("%s: skipped (disordered structure)", rel)
                continue
            tid = str(rel.with_name(name)) if name != path.stem else str(rel)
            if name.startswith(("mp-", "mvc-", "agm")):
                tid = name
            yield TemplateRecord(
                tid,
                s.lattice.matrix.copy(),
                s.frac_coords.copy(),
                np.array([site.specie.Z for site in s]),
                e,
                "folder",
            )


def records_from_materials_project(
    api_key: str | None = None,
    *,
    max_sites: int | None = None,
    max_e_above_hull: float | None = None,
    client: Any = None,
) -> Iterator[TemplateRecord]:
    """Structures from the Materials Project API (``pip install mp-api``; key from ``api_key`` or ``MP_API_KEY``).

    ``client``: an open ``MPRester`` to use instead of opening one (its ``materials.summary.search`` is called).
    """
    if client is None:
        try:
            from mp_api.client import MPRester
        except ImportError as exc:
            raise TemplateStoreError(
                "--from materials-project needs the Materials Project client: pip install mp-api "
                "(or build the store from a local folder or data folder instead)"
            ) from exc
        key = api_key or os.environ.get("MP_API_KEY")
        if not key:
            raise TemplateStoreError(
                "--from materials-project needs an API key: pass --api-key or set MP_API_KEY "
                "(get one at https://next-gen.materialsproject.org/api)"
            )
        with MPRester(key) as mpr:
            yield from records_from_materials_project(
                max_sites=max_sites, max_e_above_hull=max_e_above_hull, client=mpr
            )
        return
    query: dict[str, Any] = {"fields": ["material_id", "structure", "energy_above_hull"]}
    if max_sites is not None:
        query["num_sites"] = (1, max_sites)
    if max_e_above_hull is not None:
        query["energy_above_hull"] = (0, max_e_above_hull)
    for doc in client.materials.summary.search(**query):
        s = doc.structure
        if not s.is_ordered:
            continue
        yield TemplateRecord(
            str(doc.material_id),
            s.lattice.matrix.copy(),
            s.frac_coords.copy(),
            np.array([site.specie.Z for site in s]),
            None if doc.energy_above_hull is None else float(doc.energy_above_hull),
            "materials-project",
        )


@dataclass
class BuildReport:
    """What :func:`build_store` did."""

    path: Path
    n_read: int
    n_stored: int
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def __str__(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.rejected.most_common())
        return (
            f"template store {self.path}: {self.n_stored} of {self.n_read} structures stored "
            f"in {self.seconds:.0f} s" + (f" (left out: {why})" if why else "")
        )


def _reject_reason(reason: str) -> str:
    return reason.split(":")[0]


def build_store(
    records: Iterable[TemplateRecord],
    out: str | os.PathLike[str],
    *,
    max_sites: int | None = None,
    max_e_above_hull: float | None = None,
    exclude_formulas: Iterable[str] = (),
    description: str = "",
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Analyse ``records`` and write a template store folder ``out``.

    Parameters
    ----------
    records
        Structures, e.g. from :func:`records_from_data_dir`, :func:`records_from_folder` or
        :func:`records_from_materials_project`.
    out
        The store folder (created; an existing store is replaced only with ``overwrite``).
    max_sites
        Leave out structures with more atoms than this.
    max_e_above_hull
        Leave out structures whose energy above hull (eV/atom) is known and larger.
    exclude_formulas
        Leave out these reduced formulas (any spelling pymatgen parses), e.g. a benchmark's test formulas.
    description
        Where the structures came from, kept in the manifest.
    workers
        Processes for the symmetry analysis.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from cryspnet_gen.data import normalize_formula

    start = time.perf_counter()
    out = Path(out)
    if (out / STORE_TABLE).exists() and not overwrite:
        raise TemplateStoreError(
            f"{out} already holds a template store; pass overwrite=True (--force) to replace it"
        )
    excluded = set()
    for f in exclude_formulas:
        norm = normalize_formula(f)
        if norm is None:
            raise ValueError(f"exclude list: cannot parse formula {f!r}")
        excluded.add(norm)
    rejected: Counter = Counter()
    rows: list[dict[str, Any]] = []
    n_read = 0
    bar = tqdm(desc="templates", unit="structure", disable=not progress)

    def keep(rec: TemplateRecord) -> bool:
        if max_sites is not None and len(rec.numbers) > max_sites:
            rejected[f"more than {max_sites} sites"] += 1
            return False
        if (
            max_e_above_hull is not None
            and rec.e_above_hull is not None
            and rec.e_above_hull > max_e_above_hull
        ):
            rejected[f"above hull by more than {max_e_above_hull} eV/atom"] += 1
            return False
        return True

    def take(results: list[dict[str, Any] | str]) -> None:
        for res in results:
            if isinstance(res, str):
                rejected[_reject_reason(res)] += 1
            elif res["formula"] in excluded:
                rejected["excluded formula"] += 1
            else:
                rows.append(res)
        bar.update(len(results))

    chunk: list[TemplateRecord] = []
    chunks: Iterator[list[TemplateRecord]]

    def chunked() -> Iterator[list[TemplateRecord]]:
        nonlocal n_read
        for rec in records:
            n_read += 1
            if keep(rec):
                chunk.append(rec)
                if len(chunk) >= 500:
                    yield list(chunk)
                    chunk.clear()
            else:
                bar.update(1)
        if chunk:
            yield list(chunk)

    chunks = chunked()
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            for results in pool.map(_analyse_chunk, chunks):
                take(results)
    else:
        for part in chunks:
            take(_analyse_chunk(part))
    bar.close()

    ids = Counter(r["template_id"] for r in rows)
    dupes = {i for i, n in ids.items() if n > 1}
    if dupes:
        seen: Counter = Counter()
        for r in rows:
            if r["template_id"] in dupes:
                seen[r["template_id"]] += 1
                r["template_id"] = f"{r['template_id']}#{seen[r['template_id']]}"
    frame = pd.DataFrame(rows, columns=list(_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STORE_TABLE + ".tmp")
    frame.to_parquet(tmp, index=False)
    import pymatgen.core

    manifest = {
        "format": "cryspnet-gen template store",
        "version": STORE_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "description": description,
        "n_templates": len(frame),
        "n_read": n_read,
        "rejected": dict(rejected),
        "filters": {
            "max_sites": max_sites,
            "max_e_above_hull": max_e_above_hull,
            "excluded_formulas": len(excluded),
        },
        "symprec": SYMPREC,
        "pymatgen": pymatgen.core.__version__,
    }
    tmp.replace(out / STORE_TABLE)
    (out / STORE_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    _load_store_cached.cache_clear()
    return BuildReport(out, n_read, len(frame), rejected, time.perf_counter() - start)


_COLUMNS = (
    "template_id",
    "formula",
    "anonymous",
    "space_group",
    "nsites",
    "e_above_hull",
    "volume_per_atom",
    "source",
    "elements",
    "wyckoff",
    "lattice",
    "numbers",
    "frac",
)


# ---------------------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _AnonymousGroup:
    """Arrays of the templates of one anonymous formula: rows, canonical elements, groups, Wyckoff letters."""

    rows: np.ndarray
    elements: np.ndarray  # [n, m] atomic numbers in canonical order
    space_groups: np.ndarray
    wyckoff: list[tuple[str, ...]]
    prototype: np.ndarray  # id of (group, Wyckoff letters per canonical position)
    prevalence: np.ndarray


class TemplateStore:
    """A loaded template store, indexed by anonymous formula. Use :func:`load_store` to open one."""

    def __init__(self, frame: pd.DataFrame, path: Path | None = None, manifest: dict[str, Any] | None = None):
        self.frame = frame.reset_index(drop=True)
        self.path = path
        self.manifest = manifest or {}
        self._by_anonymous: dict[str, np.ndarray] = {
            str(key): np.asarray(idx, dtype=np.int64)
            for key, idx in self.frame.groupby("anonymous", sort=False).indices.items()
        }
        self.space_groups = self.frame["space_group"].to_numpy().astype(np.int64)
        self.formulas = self.frame["formula"].to_numpy().astype(str)
        self.template_ids = self.frame["template_id"].to_numpy().astype(str)
        pairs = zip(self.frame["anonymous"], self.space_groups, strict=True)
        self.prevalence: Counter = Counter((str(a), int(g)) for a, g in pairs)
        self._groups: dict[str, _AnonymousGroup] = {}

    def group(self, anonymous: str) -> _AnonymousGroup | None:
        """The templates of one anonymous formula as arrays (built on first use, then cached)."""
        if anonymous in self._groups:
            return self._groups[anonymous]
        idx = self._by_anonymous.get(anonymous)
        if idx is None or len(idx) == 0:
            return None
        elements = np.stack([np.asarray(e, dtype=np.int64) for e in self.frame["elements"].to_numpy()[idx]])
        wyckoff = [tuple(str(w) for w in ws) for ws in self.frame["wyckoff"].to_numpy()[idx]]
        groups = self.space_groups[idx]
        protos: dict[tuple[Any, ...], int] = {}
        proto = np.asarray(
            [protos.setdefault((int(g), w), len(protos)) for g, w in zip(groups, wyckoff, strict=True)]
        )
        prevalence = np.asarray([self.prevalence[(anonymous, int(g))] for g in groups], dtype=np.float64)
        grp = _AnonymousGroup(idx, elements, groups, wyckoff, proto, prevalence)
        self._groups[anonymous] = grp
        return grp

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"TemplateStore({str(self.path)!r}, {len(self)} templates, {len(self._by_anonymous)} anonymous formulas)"

    def lookup(self, formula: str | Composition, space_group: int | None = None) -> pd.DataFrame:
        """The templates with the anonymous formula of ``formula`` (and ``space_group`` if given)."""
        idx = self._by_anonymous.get(anonymous_formula(formula), np.empty(0, dtype=np.int64))
        rows = self.frame.iloc[idx]
        if space_group is not None:
            rows = rows[rows["space_group"] == int(space_group)]
        return rows

    def indices(self, anonymous: str) -> np.ndarray:
        """Row numbers of the templates of an anonymous formula."""
        return self._by_anonymous.get(anonymous, np.empty(0, dtype=np.int64))

    def structure(self, i: int) -> Structure:
        """The stored structure of row ``i``."""
        from pymatgen.core import Lattice, Structure

        row = self.frame.iloc[int(i)]
        species: list[Any] = [int(z) for z in row["numbers"]]
        return Structure(
            Lattice(np.asarray(row["lattice"], dtype=float).reshape(3, 3)),
            species,
            np.asarray(row["frac"], dtype=float).reshape(-1, 3),
        )


@functools.lru_cache(maxsize=4)
def _load_store_cached(path: str, mtime: float) -> TemplateStore:
    import pandas as pd

    root = Path(path)
    try:
        manifest = json.loads((root / STORE_MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TemplateStoreError(
            f"template store {path!r}: cannot read {STORE_MANIFEST} ({exc}); rebuild it with "
            "'cryspnet-gen templates build --from ... --out ...'"
        ) from exc
    if manifest.get("version") != STORE_VERSION:
        raise TemplateStoreError(
            f"template store {path!r} has format version {manifest.get('version')!r}, this cryspnet-gen reads "
            f"version {STORE_VERSION}; rebuild it with 'cryspnet-gen templates build'"
        )
    try:
        frame = pd.read_parquet(root / STORE_TABLE)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise TemplateStoreError(
            f"template store {path!r}: {STORE_TABLE} is unreadable ({type(exc).__name__}: {exc}); rebuild it"
        ) from exc
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise TemplateStoreError(f"template store {path!r} lacks the column(s) {missing}; rebuild it")
    return TemplateStore(frame, root, manifest)


def load_store(path: str | os.PathLike[str]) -> TemplateStore:
    """Open a template store folder (cached per process until the folder's table changes)."""
    root = Path(path).expanduser().resolve()
    table = root / STORE_TABLE
    if not table.is_file():
        raise TemplateStoreError(
            f"no template store at {str(path)!r} (no {STORE_TABLE}); build one with "
            "'cryspnet-gen templates build --from ../shared/data --out STORE'"
        )
    return _load_store_cached(str(root), table.stat().st_mtime)


def resolve_store(templates: TemplateStore | str | os.PathLike[str] | None) -> TemplateStore | None:
    """A store from an argument, else from ``$CRYSPNET_GEN_TEMPLATES``, else ``None`` (templates off)."""
    if isinstance(templates, TemplateStore):
        return templates
    if templates is not None:
        return load_store(templates)
    env = os.environ.get(ENV_VAR)
    return load_store(env) if env else None


# ---------------------------------------------------------------------------------------------------------
# substitution
# ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def substitution_matrix() -> np.ndarray:
    """``L[t, s]`` = log P(element ``t`` replaces element ``s``), by atomic number (0..MAX_Z).

    Hautier et al.'s conditional substitution probability (pymatgen ``SubstitutionProbability.cond_prob``),
    maximised over the oxidation states of the two elements in its table; an element always scores highest
    with itself. Elements not in the table: the table's "never observed" value (``alpha``) minus
    |Mendeleev-number difference| / 10.
    """
    import warnings

    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    with warnings.catch_warnings():  # pymatgen warns about elements without electronegativity (noble gases)
        warnings.simplefilter("ignore")
        return _substitution_matrix(SubstitutionProbability())


def _substitution_matrix(sp: Any) -> np.ndarray:
    """The table of :func:`substitution_matrix` from a pymatgen ``SubstitutionProbability``."""
    from pymatgen.core import Element

    by_z: dict[int, list[Any]] = {}
    for s in sp.species:
        by_z.setdefault(s.Z, []).append(s)
    n = MAX_Z + 1
    mendeleev = np.zeros(n)
    for z in range(1, n):
        try:
            mendeleev[z] = Element.from_Z(z).mendeleev_no or 0
        except ValueError:
            mendeleev[z] = 0
    table = np.full((n, n), np.nan)
    for t, ts in by_z.items():
        for s, ss in by_z.items():
            if t <= MAX_Z and s <= MAX_Z:
                table[t, s] = max(math.log(sp.cond_prob(a, b)) for a in ts for b in ss)
    floor = float(np.nanmin(table)) if np.isfinite(table).any() else sp.alpha
    diff = np.abs(mendeleev[:, None] - mendeleev[None, :])
    fallback = floor - diff / 10.0
    out = np.where(np.isnan(table), fallback, table)
    best = out.max(axis=0)  # per template element s: the best replacement score
    idx = np.arange(n)
    out[idx, idx] = best + 1.0
    out[0, :] = out[:, 0] = -1e9
    return out


def _assignments(target: dict[int, int]) -> np.ndarray:
    """All one-to-one maps of target elements onto canonical template positions with the same amounts.

    Row ``a`` gives, for each canonical position ``j`` (ordered by amount, then atomic number), the atomic number
    of the target element placed there.
    """
    order = _canonical_elements(target)
    blocks: list[list[int]] = []
    for _amount, group in itertools.groupby(order, key=lambda z: target[z]):
        blocks.append(list(group))
    perms = [list(itertools.permutations(b)) for b in blocks]
    out = []
    for combo in itertools.product(*perms):
        out.append([z for block in combo for z in block])
        if len(out) >= MAX_ASSIGNMENTS:
            break
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# scoring and candidates
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateScoring:
    """Weights of the template score (log scale); see the module docstring.

    The defaults were tuned with ``bench/tune_templates.py`` on 300 MP-20 and 200 MPTS-52 validation formulas
    (none of them in a test set; each formula's own templates left out), maximising the mean of match@1 and
    match@20: only the ratio ``w_substitution / w_model`` matters much (8 was best, 4 close), how common a
    structure type is adds nothing (``w_prevalence`` 0), and CRYSPNet's own candidates rank best after the
    templates (``cryspnet_offset`` -8; from -4 up they displaced better template candidates). Table in
    ``docs/benchmarks.md``.
    """

    w_model: float = 0.25
    w_substitution: float = 2.0
    w_prevalence: float = 0.0
    p_floor: float = 1e-3
    cryspnet_offset: float = -8.0

    def template_score(
        self, p_pair: np.ndarray, substitution: np.ndarray, prevalence: np.ndarray
    ) -> np.ndarray:
        return (
            self.w_model * np.log(np.maximum(p_pair, self.p_floor))
            + self.w_substitution * substitution
            + self.w_prevalence * np.log(prevalence)
        )

    def cryspnet_score(self, probability: float) -> float:
        return self.w_model * math.log(max(probability, 1e-12)) + self.cryspnet_offset


@dataclass
class TemplateOption:
    """One (template, element mapping) before it is built: its score and the parts of it."""

    row: int
    mapping: tuple[int, ...]  # target atomic number per canonical template position
    score: float
    p_pair: float
    substitution: float
    prevalence: int
    key: tuple[Any, ...]


def rank_options(
    store: TemplateStore,
    target: dict[int, int],
    pair_probability: dict[int, float],
    scoring: TemplateScoring,
    *,
    exclude_formulas: Iterable[str] = (),
    space_groups: Iterable[int] | None = None,
    limit: int | None = None,
) -> list[TemplateOption]:
    """Every (template, mapping) for a target composition, best score first, one per de-duplication key.

    ``target``: atomic number -> amount in the reduced integer formula. ``pair_probability``: space group ->
    CRYSPNet's P(lattice) x P(group | lattice). ``space_groups``: use only templates in these groups.
    """
    anon = _anonymous(target.values())
    grp = store.group(anon)
    if grp is None:
        return []
    keep = np.ones(len(grp.rows), dtype=bool)
    banned = set(exclude_formulas)
    if banned:
        keep &= ~np.isin(store.formulas[grp.rows], list(banned))
    if space_groups is not None:
        keep &= np.isin(grp.space_groups, list({int(g) for g in space_groups}))
    sel = np.flatnonzero(keep)
    if len(sel) == 0:
        return []
    elements = grp.elements[sel]
    groups = grp.space_groups[sel]
    assign = _assignments(target)  # [n_a, m]
    n_a = assign.shape[0]
    matrix = substitution_matrix()
    sub = matrix[assign[None, :, :], elements[:, None, :]].mean(axis=2)  # [n_t, n_a]
    p_pair = np.asarray([pair_probability.get(int(g), 0.0) for g in groups])
    prevalence = grp.prevalence[sel]
    score = scoring.template_score(p_pair[:, None], sub, prevalence[:, None])
    # best option per (prototype, mapping) first: options of one prototype and mapping are the same structure
    order = np.argsort(-score, axis=None, kind="stable")
    codes = (grp.prototype[sel][:, None] * n_a + np.arange(n_a)[None, :]).ravel()[order]
    _, first = np.unique(codes, return_index=True)
    order = order[np.sort(first)]
    out: list[TemplateOption] = []
    seen: set[tuple[Any, ...]] = set()
    for flat in order:
        t, a = divmod(int(flat), n_a)
        mapping = tuple(int(z) for z in assign[a])
        wyck = grp.wyckoff[sel[t]]
        key = (int(groups[t]), tuple(sorted(zip(mapping, wyck, strict=True))))
        if key in seen:
            continue
        seen.add(key)
        out.append(
            TemplateOption(
                row=int(grp.rows[sel[t]]),
                mapping=mapping,
                score=float(score[t, a]),
                p_pair=float(p_pair[t]),
                substitution=float(sub[t, a]),
                prevalence=int(prevalence[t]),
                key=key,
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


def build_option(
    store: TemplateStore, option: TemplateOption, volume_per_atom: float | None
) -> tuple[Structure, int | None]:
    """The substituted, scaled template of an option (conventional standard cell) and its space group."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    row = store.frame.iloc[option.row]
    mapping = dict(zip((int(z) for z in row["elements"]), option.mapping, strict=True))
    numbers: list[Any] = [mapping[int(z)] for z in row["numbers"]]
    lattice = np.asarray(row["lattice"], dtype=float).reshape(3, 3)
    frac = np.asarray(row["frac"], dtype=float).reshape(-1, 3)
    if volume_per_atom is not None and volume_per_atom > 0:
        volume = abs(float(np.linalg.det(lattice)))
        lattice = lattice * (volume_per_atom * len(numbers) / volume) ** (1.0 / 3.0)
    structure = Structure(Lattice(lattice), numbers, frac)
    try:
        sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        conventional = sga.get_conventional_standard_structure()
        return conventional, int(sga.get_space_group_number())
    except ValueError:
        return structure, None


def _pair_probabilities(pred: Prediction | None) -> tuple[dict[int, float], dict[int, Any], dict[int, int]]:
    """Space group -> joint probability, ranked group and rank in the prediction."""
    if pred is None or pred.error is not None:
        return {}, {}, {}
    probs: dict[int, float] = {}
    ranked: dict[int, Any] = {}
    ranks: dict[int, int] = {}
    for i, g in enumerate(pred.ranked_groups(), start=1):
        sg = int(g.space_group)
        if sg not in probs:
            probs[sg], ranked[sg], ranks[sg] = float(g.probability), g, i
    return probs, ranked, ranks


def template_candidates(
    formula: str,
    k: int = 3,
    *,
    templates: TemplateStore | str | os.PathLike[str] | None = None,
    prediction: Prediction | None = None,
    predictor: Predictor | None = None,
    model: str = "master",
    max_atoms: int = 200,
    scoring: TemplateScoring | None = None,
    exclude_formulas: Iterable[str] = (),
    space_groups: Sequence[int] | None = None,
    bravais: Sequence[str] | None = None,
    max_built: int | None = None,
) -> CandidateList:
    """Up to ``k`` candidates of ``formula`` from the template store, best score first.

    Parameters
    ----------
    formula
        The formula (its smallest integer multiple is used for fractional amounts).
    templates
        A store, its folder, or ``None`` for ``$CRYSPNET_GEN_TEMPLATES``.
    prediction, predictor, model
        CRYSPNet's prediction for the formula (with every lattice and group), or the predictor that makes it
        (``None``: the shipped default).
    max_atoms
        Largest conventional cell returned.
    scoring
        Score weights (default :class:`TemplateScoring`).
    exclude_formulas
        Reduced formulas whose templates are not used (e.g. the formula itself, to evaluate leave-one-out).
    space_groups, bravais
        Use only templates in these groups / lattices.
    max_built
        Most template options built and checked (default ``10 * k + 20``).

    Returns
    -------
    CandidateList
        Candidates with ``source="template"`` and ``template_id`` set; an empty list (with ``stop_reason``) when
        the store has no template of this anonymous formula.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from cryspnet_gen.generate import Candidate, CandidateList, _formula_unit
    from cryspnet_gen.symmetry import bravais_of, space_group_symbol

    store = resolve_store(templates)
    if store is None:
        raise TemplateStoreError(
            f"no template store: pass templates=STORE or set {ENV_VAR} "
            "(build one with 'cryspnet-gen templates build --from ../shared/data --out STORE')"
        )
    scoring = scoring or TemplateScoring()
    fu = _formula_unit(formula, max_atoms)
    target = _fu_amounts(fu)
    if prediction is None:
        from cryspnet_gen.generate import _predict

        (prediction,) = _predict(predictor, [formula], model)
    probs, ranked, ranks = _pair_probabilities(prediction)
    allowed: set[int] | None = None
    if space_groups is not None or bravais is not None:
        allowed = set(range(1, 231)) if space_groups is None else {int(g) for g in space_groups}
        if bravais is not None:
            allowed = {g for g in allowed if bravais_of(g) in set(bravais)}
    options = rank_options(
        store, target, probs, scoring, exclude_formulas=exclude_formulas, space_groups=allowed
    )
    anon = _anonymous(target.values())
    if not options:
        return CandidateList(
            [], formula=formula, stop_reason=f"no template with the anonymous formula {anon} in the store"
        )
    vpa = None if prediction is None else prediction.volume_per_atom
    matcher = StructureMatcher()
    found: list[Candidate] = []
    n_atoms_fu = fu.n_atoms
    limit = max_built if max_built is not None else 10 * k + 20
    tried = 0
    for opt in options:
        if len(found) >= k or tried >= limit:
            break
        tried += 1
        structure, sg = build_option(store, opt, vpa)
        row = store.frame.iloc[opt.row]
        template_sg = int(row["space_group"])
        if sg != template_sg:
            logger.info(
                "%s from %s: space group %s after substitution, not %d",
                formula,
                row["template_id"],
                sg,
                template_sg,
            )
            continue
        if len(structure) > max_atoms:
            continue
        if any(
            c.space_group == sg and len(c.structure) == len(structure) and matcher.fit(c.structure, structure)
            for c in found
        ):
            continue
        bravais = bravais_of(sg)
        g = ranked.get(sg)
        lat = None
        if prediction is not None and prediction.error is None:
            lat = next((la for la in prediction.lattices if la.bravais == bravais), None)
        swaps = [
            f"{_symbol(s)}->{_symbol(t)}"
            for s, t in zip((int(z) for z in row["elements"]), opt.mapping, strict=True)
            if s != t
        ]
        found.append(
            Candidate(
                formula=formula,
                rank=len(found) + 1,
                bravais=bravais,
                space_group=sg,
                space_group_symbol=space_group_symbol(sg),
                probability=opt.p_pair,
                bravais_probability=float(g.bravais_probability) if g is not None else 0.0,
                space_group_probability=float(g.space_group_probability) if g is not None else 0.0,
                structure=structure,
                z=round(len(structure) / n_atoms_fu),
                formula_unit=fu.text,
                lattice_parameters=dict(lat.parameters) if lat is not None else {},
                lattice_parameters_std=dict(lat.parameters_std) if lat is not None else {},
                predicted_cell=list(lat.cell) if lat is not None and lat.cell is not None else None,
                predicted_cell_std=list(lat.cell_std)
                if lat is not None and lat.cell_std is not None
                else None,
                cell=[float(x) for x in structure.lattice.parameters],
                volume_per_atom=vpa,
                volume_per_atom_std=None if prediction is None else prediction.volume_per_atom_std,
                model=getattr(prediction, "model", model),
                bundle=getattr(prediction, "bundle", ""),
                bundle_version=getattr(prediction, "bundle_version", ""),
                pair_rank=ranks.get(sg, 0),
                source="template",
                template_id=str(row["template_id"]),
                score=opt.score,
                notes=[
                    f"template {row['template_id']} ({row['formula']}, {space_group_symbol(template_sg)}), "
                    + (f"substituted {', '.join(swaps)}" if swaps else "same elements")
                    + ("" if vpa else "; template volume kept (no volume prediction)")
                ],
            )
        )
    stop = None if len(found) >= k else f"{len(found)} distinct template structures for {anon}"
    return CandidateList(found, formula=formula, stop_reason=stop)


def _fu_amounts(fu: Any) -> dict[int, int]:
    from pymatgen.core import Element

    return {Element(s).Z: int(c) for s, c in zip(fu.species, fu.counts, strict=True)}


@functools.cache
def _symbol(z: int) -> str:
    from pymatgen.core import Element

    return Element.from_Z(int(z)).symbol


def cryspnet_needed(
    from_templates: Sequence[Candidate], k: int, scoring: TemplateScoring | None = None
) -> bool:
    """Whether CRYSPNet candidates could enter the top ``k`` of a merged list with these template candidates.

    A CRYSPNet candidate scores at most ``cryspnet_score(1.0)``; when ``k`` template candidates all score higher,
    generating CRYSPNet structures cannot change the merged list, and "both" skips it.
    """
    scoring = scoring or TemplateScoring()
    if len(from_templates) < k:
        return True
    best_possible = scoring.cryspnet_score(1.0)
    return min(c.score if c.score is not None else -math.inf for c in from_templates[:k]) <= best_possible


def merge_candidates(
    lists: Sequence[Sequence[Candidate]],
    k: int,
    *,
    scoring: TemplateScoring | None = None,
    formula: str = "",
) -> CandidateList:
    """One ranked list of at most ``k`` from several sources, highest score first, without duplicates.

    A candidate without ``score`` (CRYSPNet's) is scored ``log P(pair) + cryspnet_offset``. Duplicates (same
    group and size, ``StructureMatcher().fit``) keep the better-scored one. Ranks are renumbered from 1; each
    candidate's rank within its source stays in ``notes``.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from cryspnet_gen.generate import CandidateList

    scoring = scoring or TemplateScoring()
    pool = []
    for cands in lists:
        for c in cands:
            score = c.score if c.score is not None else scoring.cryspnet_score(c.probability)
            pool.append((score, c))
    pool.sort(key=lambda sc: -sc[0])
    matcher = StructureMatcher()
    out: list[Candidate] = []
    for score, c in pool:
        if len(out) >= k:
            break
        if any(
            o.space_group == c.space_group
            and len(o.structure) == len(c.structure)
            and matcher.fit(o.structure, c.structure)
            for o in out
        ):
            continue
        out.append(
            dataclasses.replace(
                c,
                rank=len(out) + 1,
                score=float(score),
                notes=[*c.notes, f"rank {c.rank} among the {c.source} candidates"],
            )
        )
    skipped = [s for cands in lists for s in getattr(cands, "skipped", [])]
    stops = [getattr(cands, "stop_reason", None) for cands in lists]
    stop = None if len(out) >= k else "; ".join(s for s in stops if s) or None
    return CandidateList(out, formula=formula, skipped=skipped, stop_reason=stop)
