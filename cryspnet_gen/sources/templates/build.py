"""Building template stores: records from a data folder, a folder of structure files or the Materials Project
API, analysed (spglib, Wyckoff letters per element) and written as a store folder.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.formula import (
    MAX_Z,
    anonymous_of,
    canonical_elements,
    reduced_formula,
    reduced_formula_of_numbers,
)
from cryspnet_gen.sources.templates.store import (
    COLUMNS,
    STORE_MANIFEST,
    STORE_TABLE,
    STORE_VERSION,
    TemplateStoreError,
    clear_store_cache,
)
from cryspnet_gen.symmetry import SYMPREC

if TYPE_CHECKING:
    import pandas as pd
    from pymatgen.core import Structure

__all__ = [
    "BuildReport",
    "TemplateRecord",
    "build_store",
    "records_from_data_dir",
    "records_from_folder",
    "records_from_materials_project",
    "symmetry_of_record",
]

logger = logging.getLogger(__name__)

_STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".json")
_STRUCTURE_NAMES = ("POSCAR", "CONTCAR")


@dataclass
class TemplateRecord:
    """One structure offered to a store: ``lattice`` (3x3, rows), ``frac`` (n x 3), ``numbers`` (n)."""

    template_id: str
    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray
    e_above_hull: float | None = None
    source: str = ""
    experimental: bool = False  # the formula and group occur among experimental (COD) entries


def symmetry_of_record(rec: TemplateRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any] | str:
    """``(lattice, frac, numbers, spglib dataset)`` of a record (symprec :data:`SYMPREC`), or why it is rejected."""
    import spglib

    numbers = np.asarray(rec.numbers, dtype=int)
    if len(numbers) == 0:
        return "no atoms"
    if numbers.min() < 1 or numbers.max() > MAX_Z:
        return f"element with Z > {MAX_Z} or < 1"
    lattice = np.asarray(rec.lattice, dtype=float).reshape(3, 3)
    frac = np.asarray(rec.frac, dtype=float).reshape(-1, 3)
    if not abs(float(np.linalg.det(lattice))) > 1e-3:
        return "degenerate cell"
    try:
        ds = spglib.get_symmetry_dataset((lattice, frac, numbers), symprec=SYMPREC)  # type: ignore[arg-type]
    except Exception as exc:  # spglib raises SpglibError on odd cells
        return f"spglib: {exc}"
    if ds is None:
        return "spglib found no symmetry"
    return lattice, frac, numbers, ds


def _analyse_record(rec: TemplateRecord) -> dict[str, Any] | str:
    """Store row of a record (space group, Wyckoff letters per element...) or why it was rejected."""
    analysed = symmetry_of_record(rec)
    if isinstance(analysed, str):
        return analysed
    lattice, frac, numbers, ds = analysed
    volume = abs(float(np.linalg.det(lattice)))
    uniq, counts = np.unique(numbers, return_counts=True)
    amounts = {int(z): int(n) for z, n in zip(uniq, counts, strict=True)}
    g = math.gcd(*amounts.values())
    amounts = {z: n // g for z, n in amounts.items()}
    order = canonical_elements(amounts)
    equivalent = np.asarray(ds.equivalent_atoms)
    wyckoffs = list(ds.wyckoffs)
    signature = []
    for z in order:
        orbits = sorted({int(e) for e, n in zip(equivalent, numbers, strict=True) if n == z})
        signature.append("".join(sorted(wyckoffs[o] for o in orbits)))
    return {
        "template_id": str(rec.template_id),
        "formula": reduced_formula_of_numbers(numbers)[0],
        "anonymous": anonymous_of(amounts.values()),
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
    from cryspnet_gen.data import MP_LATTICE, MP_STRUCTURES, read_cif_cell, read_csv_checked, require_file

    root = resolve_data_dir(data_dir)
    lattice = read_csv_checked(require_file(root, MP_LATTICE), ["material_id", "ehull_formula_spg"])
    ehull = dict(zip(lattice["material_id"], lattice["ehull_formula_spg"], strict=True))
    known = lattice.get("in_cod_formula_spg")
    experimental = (
        set(lattice["material_id"][known.fillna(False).astype(bool)]) if known is not None else set()
    )
    for rel in MP_STRUCTURES:
        frame: pd.DataFrame = read_csv_checked(require_file(root, rel), ["material_id", "cif"])
        for mid, cif in zip(frame["material_id"], frame["cif"], strict=True):
            try:
                lat, frac, numbers = read_cif_cell(cif)
            except ValueError as exc:
                logger.warning("%s: unreadable CIF (%s)", mid, exc)
                continue
            e = ehull.get(mid)
            yield TemplateRecord(
                str(mid),
                lat,
                frac,
                numbers,
                None if e is None or e != e else float(e),
                "mp2025",
                experimental=mid in experimental,
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
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out = Path(out)
    if (out / STORE_TABLE).exists() and not overwrite:
        raise TemplateStoreError(
            f"{out} already holds a template store; pass overwrite=True (--force) to replace it"
        )
    excluded = set()
    for f in exclude_formulas:
        norm = reduced_formula(f)
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

    filters = {
        "max_sites": max_sites,
        "max_e_above_hull": max_e_above_hull,
        "excluded_formulas": len(excluded),
    }
    n_templates = _write_store(
        out, rows, description=description, n_read=n_read, rejected=rejected, filters=filters
    )
    return BuildReport(out, n_read, n_templates, rejected, time.perf_counter() - start)


def _write_store(
    out: Path,
    rows: list[dict[str, Any]],
    *,
    description: str,
    n_read: int,
    rejected: Counter,
    filters: dict[str, Any],
) -> int:
    """Write the table (template ids made unique) and the manifest of a store; return the number of templates."""
    import pandas as pd
    import pymatgen.core

    ids = Counter(r["template_id"] for r in rows)
    dupes = {i for i, n in ids.items() if n > 1}
    if dupes:
        seen: Counter = Counter()
        for r in rows:
            if r["template_id"] in dupes:
                seen[r["template_id"]] += 1
                r["template_id"] = f"{r['template_id']}#{seen[r['template_id']]}"
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STORE_TABLE + ".tmp")
    frame.to_parquet(tmp, index=False)
    manifest = {
        "format": "cryspnet-gen template store",
        "version": STORE_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "description": description,
        "n_templates": len(frame),
        "n_read": n_read,
        "rejected": dict(rejected),
        "filters": filters,
        "symprec": SYMPREC,
        "pymatgen": pymatgen.core.__version__,
    }
    tmp.replace(out / STORE_TABLE)
    (out / STORE_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    clear_store_cache()
    return len(frame)
