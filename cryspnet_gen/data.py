"""Open crystal-structure data -> labelled tables and named splits.

Reads a data folder laid out like ``../shared/data`` (see :mod:`cryspnet_gen.config` for how it is found) and
builds three things:

Structure table (:func:`build_structure_table`)
    One row per structure of Materials Project (``mp2025_topology``) and of the benchmark files (MPTS-52 val/test,
    MP-20 val/test). Every row's symmetry is recomputed from its CIF with spglib (``symprec=0.1``) and its cell put
    in the conventions of :mod:`cryspnet_gen.symmetry`; the shipped ``a..gamma`` columns are not used because they
    are pymatgen's conventional cells, not reduced ones. Work is spread over processes and cached on disk, keyed by
    the sha256 of the input files, so an unchanged rebuild takes seconds.

Label table (:func:`build_label_table`)
    One row per reduced formula, with the Materials Project ground state (lowest energy above hull, the paper's
    Appendix B preference) and the experimental COD label (most frequent space group among the formula's COD
    entries). How they become training labels is a *policy* (:data:`LabelPolicy`):

    ``"mp"``
        MP formulas only, labelled by the MP ground state.
    ``"mp+cod"``
        as ``"mp"``, plus formulas known only from COD, labelled by their COD space group (no cell).
    ``"experimental"``
        COD's space group wherever COD knows the formula (with the cell of the lowest-energy MP polymorph of that
        group when MP has one), else the MP ground state.

Splits (:func:`training_frame`)
    ``bench``: the test parts are every reduced formula of the MPTS-52 test file (``test_mpts52``) and of the MP-20
    test file (``test_mp20``), labelled from those files' own structures; no row whose formula is in either test
    set, whatever its polymorph or source, enters train or validation. ``full``: everything trains (for the
    shipped model). In both, a seeded 10% of the remaining formulas is validation.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from cryspnet_gen.config import DataDirError, cache_dir, resolve_data_dir
from cryspnet_gen.formula import reduced_formula, reduced_formula_of_numbers
from cryspnet_gen.symmetry import CELL_PARAMETERS, SYMPREC

logger = logging.getLogger(__name__)

LabelPolicy = Literal["mp", "mp+cod", "experimental"]
SplitName = Literal["bench", "full"]

#: Bumped whenever the computed columns change, so old caches are not reused.
TABLE_VERSION = 1

MP_LATTICE = "mp2025_topology/lattice.csv.gz"
MP_STRUCTURES = tuple(f"mp2025_topology/structures_part{i}.csv.gz" for i in range(1, 5))
COD_LABELS = "dara_symmetry_labels/cod_filtered_info_2024_flat.csv.gz"
BENCHMARK_FILES = {
    "mpts52_test": "mpts_52_valtest/test.csv.gz",
    "mpts52_val": "mpts_52_valtest/val.csv.gz",
    "mp20_test": "mp_20_biternary_valtest/test.csv.gz",
    "mp20_val": "mp_20_biternary_valtest/val.csv.gz",
}
#: benchmark source -> test split name in the ``bench`` split
TEST_SPLITS = {"mpts52_test": "test_mpts52", "mp20_test": "test_mp20"}
CELL_COLUMNS = CELL_PARAMETERS
STRUCTURE_COLUMNS = (
    "material_id",
    "formula",
    "source",
    "space_group",
    "bravais",
    *CELL_COLUMNS,
    "volume_per_atom",
    "z",
    "nsites",
    "conv_nsites",
    "e_above_hull",
    "experimental",
)


class DataFormatError(ValueError):
    """A data file is malformed (missing columns, unreadable)."""


# ----------------------------------------------------------------------------------------------------------
# files


def require_file(data_dir: Path, rel: str) -> Path:
    path = data_dir / rel
    if not path.is_file():
        raise DataDirError(
            f"{rel} is missing from the data folder {str(data_dir)!r}: point --data-dir (or "
            "CRYSPNET_GEN_DATA_DIR) at a folder laid out like ../shared/data"
        )
    return path


def read_csv_checked(path: Path, required: Sequence[str], **kwargs: object) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, **kwargs)
    except Exception as exc:  # pandas raises many types for a bad file; report them as one
        raise DataFormatError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path} lacks the column(s) {missing}; found {list(frame.columns)}")
    return frame


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (the cache key of everything built from it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# CIF -> cell


@lru_cache(maxsize=1)
def _atomic_numbers() -> dict[str, int]:
    from pymatgen.core.periodic_table import Element

    return {el.symbol: el.Z for el in Element}


_SITE_LINE = re.compile(r"^\s+([A-Z][a-z]?)\S*\s+\S+\s+\d+\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


def lattice_matrix(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Row-vector lattice matrix of a cell given in Å and degrees (pymatgen's orientation)."""
    al, be, ga = np.radians([alpha, beta, gamma])
    cos_g_star = (np.cos(al) * np.cos(be) - np.cos(ga)) / (np.sin(al) * np.sin(be))
    cos_g_star = float(np.clip(cos_g_star, -1.0, 1.0))
    sin_g_star = math.sqrt(1.0 - cos_g_star**2)
    return np.array(
        [
            [a * np.sin(be), 0.0, a * np.cos(be)],
            [-b * np.sin(al) * cos_g_star, b * np.sin(al) * sin_g_star, b * np.cos(al)],
            [0.0, 0.0, c],
        ]
    )


def read_cif_cell(cif: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse an ordered CIF into ``(lattice, frac_coords, atomic_numbers)``.

    The files here are pymatgen-written P1 CIFs, which a line scan reads ~100x faster than a general parser; any
    CIF that does not look like one (symmetry operations other than x,y,z, partial occupancy, a site count that
    disagrees with the formula) goes through pymatgen's ``CifParser`` instead.

    Raises
    ------
    ValueError
        When neither reader can make an ordered structure of it.
    """
    try:
        return _read_p1_cif(cif)
    except (ValueError, KeyError, IndexError):
        pass
    import warnings

    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            structures = CifParser.from_str(cif).parse_structures(primitive=False)
        except Exception as exc:  # pymatgen raises many types for a bad CIF
            raise ValueError(f"unreadable CIF: {exc}") from exc
    if not structures:
        raise ValueError("unreadable CIF: no structure in it")
    structure = structures[0]
    if not structure.is_ordered:
        raise ValueError("CIF has partial occupancies (disordered structure)")
    return (
        structure.lattice.matrix.copy(),
        structure.frac_coords.copy(),
        np.array([site.specie.Z for site in structure]),
    )


def _read_p1_cif(cif: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    znum = _atomic_numbers()
    params: dict[str, float] = {}
    numbers: list[int] = []
    coords: list[tuple[float, float, float]] = []
    n_ops = 0
    for line in cif.splitlines():
        if line.startswith("_cell_"):
            key, value = line.split()[:2]
            params[key[6:]] = float(value)
        elif line.startswith("  ") and "'" in line and "x" in line:
            n_ops += 1
            if "'x, y, z'" not in line:
                raise ValueError("not a P1 CIF")
        else:
            match = _SITE_LINE.match(line)
            if match and match.group(1) in znum:
                if float(match.group(5)) != 1.0:
                    raise ValueError("partial occupancy")
                numbers.append(znum[match.group(1)])
                coords.append((float(match.group(2)), float(match.group(3)), float(match.group(4))))
    if n_ops != 1 or not numbers:
        raise ValueError("not a P1 CIF")
    lattice = lattice_matrix(
        params["length_a"],
        params["length_b"],
        params["length_c"],
        params["angle_alpha"],
        params["angle_beta"],
        params["angle_gamma"],
    )
    return lattice, np.array(coords, dtype=float), np.array(numbers, dtype=int)


# ----------------------------------------------------------------------------------------------------------
# structure table


@dataclass
class _Row:
    material_id: str
    cif: str


def _analyze(rows: list[_Row]) -> list[tuple[str, tuple | None, str | None]]:
    """Worker: CIF -> (id, computed columns or None, error or None) for a chunk of rows."""
    from cryspnet_gen.symmetry import standardize_cell

    out: list[tuple[str, tuple | None, str | None]] = []
    for row in rows:
        try:
            lattice, frac, numbers = read_cif_cell(row.cif)
            formula, atoms_per_fu = reduced_formula_of_numbers(numbers)
            sym = standardize_cell(lattice, frac, numbers, symprec=SYMPREC)
            volume = abs(float(np.linalg.det(lattice)))
            z = sym.conventional_nsites / atoms_per_fu
            out.append(
                (
                    row.material_id,
                    (
                        formula,
                        sym.space_group,
                        sym.bravais,
                        *map(float, sym.cell),
                        volume / len(numbers),
                        z,
                        len(numbers),
                        sym.conventional_nsites,
                    ),
                    None,
                )
            )
        except Exception as exc:  # a bad row is reported and skipped, never fatal
            out.append((row.material_id, None, f"{type(exc).__name__}: {exc}"))
    return out


# The columns _analyze computes from a CIF, in its order; the others come from the source files.
_COMPUTED = tuple(
    c for c in STRUCTURE_COLUMNS if c not in ("material_id", "source", "e_above_hull", "experimental")
)


@dataclass
class StructureTable:
    """The structure table and the rows that could not be used."""

    frame: pd.DataFrame
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    """(source, material_id, reason) per skipped row."""
    from_cache: bool = False


def _inputs(data_dir: Path) -> dict[str, Path]:
    files = {"mp_lattice": require_file(data_dir, MP_LATTICE)}
    for i, rel in enumerate(MP_STRUCTURES, 1):
        files[f"mp_structures_{i}"] = require_file(data_dir, rel)
    for name, rel in BENCHMARK_FILES.items():
        files[name] = require_file(data_dir, rel)
    return files


def _cache_key(files: dict[str, Path], extra: str = "") -> str:
    import cryspnet_gen.symmetry as symmetry

    # the conventions live in symmetry.py: a change there must not be served a stale table
    code = hashlib.sha256(Path(symmetry.__file__).read_bytes()).hexdigest()[:12]
    h = hashlib.sha256(f"v{TABLE_VERSION};symprec={SYMPREC};symmetry={code};{extra}".encode())
    for name in sorted(files):
        h.update(f"{name}={file_digest(files[name])};".encode())
    return h.hexdigest()[:20]


def _source_rows(data_dir: Path, files: dict[str, Path]) -> list[tuple[str, pd.DataFrame]]:
    """(source, frame with material_id, cif, e_above_hull, experimental) for every input source."""
    lattice = read_csv_checked(
        files["mp_lattice"], ["material_id", "ehull_formula_spg", "in_cod_formula_spg"]
    ).set_index("material_id")
    parts = [read_csv_checked(files[f"mp_structures_{i}"], ["material_id", "cif"]) for i in range(1, 5)]
    mp = pd.concat(parts, ignore_index=True)
    mp["e_above_hull"] = mp["material_id"].map(lattice["ehull_formula_spg"])
    mp["experimental"] = mp["material_id"].map(lattice["in_cod_formula_spg"]).astype("boolean")
    out = [("mp2025", mp)]
    for name in BENCHMARK_FILES:
        if name.startswith("mpts52"):
            frame = read_csv_checked(files[name], ["material_id", "cif", "energy_above_hull", "theoretical"])
            frame["e_above_hull"] = frame["energy_above_hull"]
            frame["experimental"] = (~frame["theoretical"].astype(bool)).astype("boolean")
        else:
            frame = read_csv_checked(files[name], ["material_id", "cif", "e_above_hull"])
            frame["experimental"] = pd.array([pd.NA] * len(frame), dtype="boolean")
        out.append((name, frame))
    return out


def build_structure_table(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
    max_rows: int | None = None,
) -> StructureTable:
    """Build (or load from cache) the structure table.

    Parameters
    ----------
    data_dir
        Data folder; see :func:`cryspnet_gen.config.resolve_data_dir`.
    workers
        Processes for the symmetry analysis (default: all cores, at most 8).
    use_cache
        Read and write the on-disk cache (``<cache dir>/tables``).
    progress
        Show a progress bar.
    max_rows
        Use only the first ``max_rows`` rows of each source (for quick looks and tests).

    Returns
    -------
    StructureTable
        ``frame`` has the columns of :data:`STRUCTURE_COLUMNS`; ``errors`` lists skipped rows.
    """
    root = resolve_data_dir(data_dir)
    files = _inputs(root)
    key = _cache_key(files, extra=f"max_rows={max_rows}")
    cache_path = cache_dir() / "tables" / f"structures-{key}.parquet"
    errors_path = cache_path.with_suffix(".errors.csv")
    if use_cache and cache_path.is_file():
        logger.info("structure table from cache %s", cache_path)
        frame = pd.read_parquet(cache_path)
        errors: list[tuple[str, str, str]] = (
            [
                (str(s), str(m), str(r))
                for s, m, r in pd.read_csv(errors_path, dtype=str).itertuples(index=False)
            ]
            if errors_path.is_file()
            else []
        )
        return StructureTable(frame, errors, from_cache=True)

    sources = _source_rows(root, files)
    meta_frames: list[pd.DataFrame] = []
    jobs: list[tuple[str, _Row]] = []
    for source, frame in sources:
        if max_rows is not None:
            frame = frame.head(max_rows)
        frame = frame.drop_duplicates("material_id")
        meta = frame[["material_id", "e_above_hull", "experimental"]].copy()
        meta["source"] = source
        meta_frames.append(meta)
        jobs.extend(
            (source, _Row(str(m), str(c))) for m, c in zip(frame["material_id"], frame["cif"], strict=True)
        )

    results = _run_analysis(jobs, workers=workers, progress=progress)
    computed, errors = [], []
    for (source, row), (mid, values, err) in zip(jobs, results, strict=True):
        assert mid == row.material_id
        if values is None:
            errors.append((source, mid, str(err)))
        else:
            computed.append((source, mid, *values))
    for source, mid, reason in errors[:20]:
        logger.warning("skipped %s row %s: %s", source, mid, reason)
    if len(errors) > 20:
        logger.warning("... and %d more skipped rows", len(errors) - 20)

    comp = pd.DataFrame(computed, columns=["source", "material_id", *_COMPUTED])
    meta = pd.concat(meta_frames, ignore_index=True)
    frame = comp.merge(meta, on=["source", "material_id"], how="left")
    frame = frame[list(STRUCTURE_COLUMNS)].reset_index(drop=True)
    frame["space_group"] = frame["space_group"].astype("int16")
    frame["nsites"] = frame["nsites"].astype("int32")
    frame["conv_nsites"] = frame["conv_nsites"].astype("int32")
    if use_cache:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        pd.DataFrame(errors, columns=["source", "material_id", "reason"]).to_csv(errors_path, index=False)
        tmp.replace(cache_path)
    return StructureTable(frame, errors)


def _run_analysis(
    jobs: list[tuple[str, _Row]], *, workers: int | None, progress: bool
) -> list[tuple[str, tuple | None, str | None]]:
    from tqdm.auto import tqdm

    rows = [row for _, row in jobs]
    chunk = 200
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
    n_workers = workers or min(os.cpu_count() or 1, 8)
    results: list[tuple[str, tuple | None, str | None]] = []
    bar = tqdm(total=len(rows), desc="symmetry", unit="structure", disable=not progress)
    if n_workers <= 1 or len(chunks) <= 1:
        for part in chunks:
            results.extend(_analyze(part))
            bar.update(len(part))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("fork")) as pool:
            for done in pool.map(_analyze, chunks):
                results.extend(done)
                bar.update(len(done))
    bar.close()
    return results


# ----------------------------------------------------------------------------------------------------------
# labels


def normalize_formula(formula: str) -> str | None:
    """pymatgen's reduced formula of ``formula``, or None when it does not parse (:func:`formula.reduced_formula`)."""
    return reduced_formula(formula)


def read_cod_labels(data_dir: str | os.PathLike[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Experimental COD labels: one row per reduced formula with its most frequent space group.

    Ties between equally frequent groups go to the highest space-group number (the more symmetric
    description, as a crystallographer would report first). Returns the table and the formulas that did not
    parse.
    """
    root = resolve_data_dir(data_dir)
    # keep_default_na=False: the formula "NaN" (sodium nitride) is not a missing value
    cod = read_csv_checked(
        require_file(root, COD_LABELS),
        ["formula", "cod_id", "spg_number"],
        dtype={"cod_id": str, "formula": str},
        keep_default_na=False,
    )
    uniq = pd.Series(cod["formula"].unique())
    norm = dict(zip(uniq, uniq.map(normalize_formula), strict=True))
    cod["reduced"] = cod["formula"].map(norm)
    bad = sorted(str(f) for f, r in norm.items() if r is None)
    cod = cod.dropna(subset=["reduced"])
    cod = cod[(cod["spg_number"] >= 1) & (cod["spg_number"] <= 230)]
    counts = cod.groupby(["reduced", "spg_number"]).size().rename("n").reset_index()
    counts = counts.sort_values(["reduced", "n", "spg_number"], ascending=[True, False, False])
    total = counts.groupby("reduced")["n"].sum()
    top = counts.drop_duplicates("reduced").set_index("reduced")
    out = pd.DataFrame(
        {
            "formula": top.index,
            "cod_space_group": top["spg_number"].astype("int16").to_numpy(),
            "cod_count": total.loc[top.index].to_numpy(),
            "cod_modal_fraction": (top["n"] / total.loc[top.index]).to_numpy(),
        }
    )
    return out.reset_index(drop=True), bad


def _ground_states(structures: pd.DataFrame) -> pd.DataFrame:
    """Lowest-energy structure per formula (NaN energies last, then experimental first, then id)."""
    frame = structures.assign(
        _eh=structures["e_above_hull"].fillna(np.inf),
        _exp=~structures["experimental"].fillna(False).astype(bool),
        _num=structures["material_id"].str.extract(r"(\d+)$")[0].astype(float),
    )
    frame = frame.sort_values(["formula", "_eh", "_exp", "_num"], kind="mergesort")
    return frame.drop_duplicates("formula").drop(columns=["_eh", "_exp", "_num"])


def build_label_table(structures: pd.DataFrame, cod: pd.DataFrame) -> pd.DataFrame:
    """One row per reduced formula of MP or COD: the MP ground state and the COD label side by side.

    Columns: ``formula``, ``mp_material_id``, ``mp_space_group`` (ground state), ``cod_space_group``,
    ``cod_count``, ``cod_modal_fraction``, ``mp_id_for_cod_group`` (the lowest-energy MP polymorph whose group is
    COD's, if MP has one).
    """
    mp = structures[structures["source"] == "mp2025"]
    ground = _ground_states(mp)[["formula", "material_id", "space_group"]]
    ground = ground.rename(columns={"material_id": "mp_material_id", "space_group": "mp_space_group"})
    table = ground.merge(cod, on="formula", how="outer")
    # the MP polymorph matching the experimental group, where there is one
    matched = mp.merge(cod[["formula", "cod_space_group"]], on="formula")
    matched = matched[matched["space_group"] == matched["cod_space_group"]]
    matched = _ground_states(matched)[["formula", "material_id"]]
    matched = matched.rename(columns={"material_id": "mp_id_for_cod_group"})
    table = table.merge(matched, on="formula", how="left")
    table["mp_space_group"] = table["mp_space_group"].astype("Int16")
    table["cod_space_group"] = table["cod_space_group"].astype("Int16")
    table["cod_count"] = table["cod_count"].fillna(0).astype("int32")
    return table.sort_values("formula").reset_index(drop=True)


def policy_labels(labels: pd.DataFrame, structures: pd.DataFrame, policy: LabelPolicy) -> pd.DataFrame:
    """Training rows (one per formula) under a labelling policy; see the module docstring.

    Returns the columns of :func:`training_frame` except ``split``.
    """
    if policy not in get_args(LabelPolicy):
        raise ValueError(f"Unknown label {policy=}; choose from {get_args(LabelPolicy)}")
    from cryspnet_gen.symmetry import bravais_of

    by_id = structures[structures["source"] == "mp2025"].set_index("material_id")
    has_mp = labels["mp_material_id"].notna()
    has_cod = labels["cod_space_group"].notna()
    if policy == "experimental":
        use_cod = has_cod
        mp_id = labels["mp_id_for_cod_group"].where(use_cod, labels["mp_material_id"])
        keep = has_mp | has_cod
        source = np.where(use_cod, "cod", "mp")
    else:
        use_cod = ~has_mp & has_cod if policy == "mp+cod" else pd.Series(False, index=labels.index)
        mp_id = labels["mp_material_id"]
        keep = has_mp | use_cod
        source = np.where(use_cod, "cod", "mp")
    rows = pd.DataFrame(
        {"formula": labels["formula"], "material_id": mp_id, "label_source": source, "_cod": use_cod}
    )[keep.to_numpy()]
    cols = ["space_group", *CELL_COLUMNS, "volume_per_atom", "z", "e_above_hull"]
    known = rows["material_id"].notna().to_numpy()
    for col in cols:
        values = np.full(len(rows), np.nan)
        values[known] = by_id.loc[rows.loc[known, "material_id"], col].to_numpy(dtype=float)
        rows[col] = values
    cod_sg = labels.loc[rows.index, "cod_space_group"].astype(float).to_numpy()
    rows["space_group"] = np.where(rows["_cod"].to_numpy(), cod_sg, rows["space_group"].to_numpy())
    rows = rows.drop(columns="_cod")
    rows["space_group"] = rows["space_group"].astype(int)
    rows["bravais"] = [bravais_of(int(sg)) for sg in rows["space_group"]]
    return rows.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# splits


def test_formulas_from_table(structures: pd.DataFrame) -> dict[str, set[str]]:
    """Reduced formulas of each test set (``test_mpts52``, ``test_mp20``) in a structure table."""
    return {
        split: set(structures.loc[structures["source"] == source, "formula"])
        for source, split in TEST_SPLITS.items()
    }


def read_test_formulas(data_dir: str | os.PathLike[str] | None = None) -> dict[str, set[str]]:
    """Reduced formulas of each full test file, read straight from the CIFs' atoms (no symmetry analysis).

    This is the set that must never reach training; it reads every row of the test files, so it holds even
    when a structure table was built from a sample.
    """
    root = resolve_data_dir(data_dir)
    out: dict[str, set[str]] = {}
    for source, split in TEST_SPLITS.items():
        frame = read_csv_checked(require_file(root, BENCHMARK_FILES[source]), ["material_id", "cif"])
        formulas = set()
        for cif in frame["cif"]:
            try:
                formulas.add(reduced_formula_of_numbers(read_cif_cell(cif)[2])[0])
            except ValueError as exc:
                logger.warning("test file %s: unreadable CIF (%s)", source, exc)
        out[split] = formulas
    return out


def assign_splits(
    formulas: Iterable[str],
    name: SplitName,
    *,
    test_formulas: dict[str, set[str]] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, str]:
    """Formula -> ``"train"`` | ``"val"`` | ``"test"`` (the last only for ``bench`` and test formulas).

    The validation draw is a seeded hash of the formula, so it does not depend on which other formulas are
    present or in which order they come.
    """
    if name not in get_args(SplitName):
        raise ValueError(f"Unknown split {name=}; choose from {get_args(SplitName)}")
    banned: set[str] = set()
    if name == "bench":
        if test_formulas is None:
            raise ValueError("the bench split needs test_formulas")
        banned = set().union(*test_formulas.values())
    out = {}
    for formula in formulas:
        if formula in banned:
            out[formula] = "test"
        else:
            digest = hashlib.blake2b(f"{seed}:{formula}".encode(), digest_size=8).digest()
            out[formula] = "val" if int.from_bytes(digest, "little") / 2**64 < val_fraction else "train"
    return out


def formula_splits(
    formulas: Iterable[str],
    name: SplitName,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, str]:
    """:func:`assign_splits` of a named split, reading the test formulas from the data folder for ``bench``."""
    tests = read_test_formulas(data_dir) if name == "bench" else None
    return assign_splits(formulas, name, test_formulas=tests, val_fraction=val_fraction, seed=seed)


def training_frame(
    name: SplitName,
    structures: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    policy: LabelPolicy = "mp",
    test_formulas: dict[str, set[str]] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """The frame the models train and are evaluated on.

    Columns: ``formula, split, bravais, space_group, a, b, c, alpha, beta, gamma, volume_per_atom, z,
    e_above_hull, material_id, label_source``; ``split`` is ``train``, ``val``, ``test_mpts52`` or
    ``test_mp20``. Cells are NaN for labels without a structure (COD-only). Test rows come from the benchmark
    files themselves (lowest energy above hull per formula), so a formula in both test files has a row in each.
    """
    rows = policy_labels(labels, structures, policy)
    if name == "bench" and test_formulas is None:
        test_formulas = test_formulas_from_table(structures)
    assignment = assign_splits(
        rows["formula"], name, test_formulas=test_formulas, val_fraction=val_fraction, seed=seed
    )
    rows["split"] = rows["formula"].map(assignment)
    parts = [rows[rows["split"] != "test"]]
    if name == "bench":
        for source, split in TEST_SPLITS.items():
            test = _ground_states(structures[structures["source"] == source]).copy()
            test["split"] = split
            test["label_source"] = source
            parts.append(test)
    frame = pd.concat(parts, ignore_index=True)
    columns = [
        "formula",
        "split",
        "bravais",
        "space_group",
        *CELL_COLUMNS,
        "volume_per_atom",
        "z",
        "e_above_hull",
        "material_id",
        "label_source",
    ]
    frame = frame[columns].reset_index(drop=True)
    frame["space_group"] = frame["space_group"].astype(int)
    return frame


# ----------------------------------------------------------------------------------------------------------
# one call for the CLI and the trainer


@dataclass
class DataBuild:
    """Everything :func:`build` makes, with the problems it met."""

    structures: StructureTable
    labels: pd.DataFrame
    cod_unparsed: list[str]
    test_formulas: dict[str, set[str]]

    def frame(
        self, name: SplitName, *, policy: LabelPolicy = "mp", val_fraction: float = 0.1, seed: int = 0
    ) -> pd.DataFrame:
        """:func:`training_frame` for a split and labelling policy."""
        return training_frame(
            name,
            self.structures.frame,
            self.labels,
            policy=policy,
            test_formulas=self.test_formulas,
            val_fraction=val_fraction,
            seed=seed,
        )

    def summary(self, *, policy: LabelPolicy = "mp", seed: int = 0) -> str:
        """Rows per source, per Bravais lattice and per split (``bench`` and ``full``)."""
        from cryspnet_gen.symmetry import BRAVAIS_LATTICES

        s = self.structures.frame
        lines = [f"structure table: {len(s)} rows, {s['formula'].nunique()} formulas"]
        lines.append("  per source: " + ", ".join(f"{k}={v}" for k, v in s["source"].value_counts().items()))
        per_lattice = s["bravais"].value_counts()
        lines.append(
            "  per Bravais lattice: " + ", ".join(f"{b}={per_lattice.get(b, 0)}" for b in BRAVAIS_LATTICES)
        )
        lines.append(f"  skipped rows: {len(self.structures.errors)}")
        lab = self.labels
        lines.append(
            f"label table: {len(lab)} formulas ({int(lab['mp_material_id'].notna().sum())} with an MP ground "
            f"state, {int(lab['cod_space_group'].notna().sum())} with a COD label, "
            f"{len(self.cod_unparsed)} COD formulas unparsed)"
        )
        both = lab.dropna(subset=["mp_space_group", "cod_space_group"])
        if len(both):
            agree = float((both["mp_space_group"] == both["cod_space_group"]).mean())
            lines.append(
                f"  MP ground state and COD agree on the space group for {agree:.1%} of {len(both)} formulas"
            )
        for name in get_args(SplitName):
            frame = self.frame(name, policy=policy, seed=seed)
            counts = frame["split"].value_counts()
            lines.append(
                f"split {name!r} (labels {policy!r}): " + ", ".join(f"{k}={v}" for k, v in counts.items())
            )
        return "\n".join(lines)


def build(data_dir: str | os.PathLike[str] | None = None, **table_options: Any) -> DataBuild:
    """Build the structure table, the label table and the test formula sets from a data folder.

    ``table_options`` (``workers``, ``use_cache``, ``progress``, ``max_rows``) go to
    :func:`build_structure_table`.
    """
    structures = build_structure_table(data_dir, **table_options)
    cod, bad = read_cod_labels(data_dir)
    labels = build_label_table(structures.frame, cod)
    tests = read_test_formulas(data_dir)  # always the full test files, also when the table is a sample
    return DataBuild(structures, labels, bad, tests)
