"""Building prototype libraries from a data folder: one symmetry analysis of every Materials Project structure
(cached), then the variants chosen from it.

Variants (``--variant``):

- ``full``: every MP structure; the shipped default (``prototypes-mp-v1``).
- ``bench``: no formula of the MPTS-52 or MP-20 validation and test sets, any polymorph (``prototypes-bench``):
  what the benchmarks evaluate.
- ``no-test``: no formula of the MPTS-52 or MP-20 test sets (validation formulas stay): the pool of the earlier
  benchmark store (``templates build --exclude-test-sets``); with ``--per-type 0`` it is that store.
- ``mp20-equal``: the closest rebuild of the MP-20 training split from this data: MP entries with at most 20
  sites and at most 0.08 eV/atom above the hull, added to MP (``chemeleon_mp40/mp-created-at.csv.gz``) no later
  than the newest MP-20 entry, without the MP-20 validation and test formulas. Benchmark only.
- ``mpts52-proxy``: the MPTS-52 training split (publication year <= 1997) cannot be rebuilt here (no publication
  years); the proxy keeps what defines the set otherwise: experimentally known MP entries (``in_cod_formula_spg``)
  with at most 52 sites, without the MPTS-52 validation and test formulas. It still holds compounds published
  after 1997, so it is an upper bound for equal data. Benchmark only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cryspnet_gen.sources.templates.build import TemplateRecord, records_from_data_dir
from cryspnet_gen.sources.templates.prototypes import analyse_many, select_prototypes, write_library

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["VARIANTS", "Variant", "analysis_table", "benchmark_formulas", "build_library", "variant_rows"]

logger = logging.getLogger(__name__)

Variant = Literal["full", "bench", "no-test", "mp20-equal", "mpts52-proxy"]
VARIANTS: tuple[str, ...] = ("full", "bench", "no-test", "mp20-equal", "mpts52-proxy")
# Bump when the analysis (analyse_wyckoff) changes what it writes: cached tables of older versions are rebuilt.
_ANALYSIS_VERSION = 1
_CHUNK = 500


def _chunks(records: Iterator[TemplateRecord]) -> Iterator[list[TemplateRecord]]:
    chunk: list[TemplateRecord] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _analyse_chunk(records: list[TemplateRecord]) -> list[dict[str, Any] | str]:
    return list(analyse_many(records))


def analysis_table(
    data_dir: str | os.PathLike[str] | None = None, *, workers: int = 1, progress: bool = True
) -> pd.DataFrame:
    """The Wyckoff-form analysis of every MP structure of a data folder (cached in the cache folder).

    The cache key is the sha256 of the MP input files and the analysis version; a rebuild takes 10-20 minutes
    on 2 cores, a cached read about a second.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from cryspnet_gen.config import cache_dir, resolve_data_dir
    from cryspnet_gen.data import MP_LATTICE, MP_STRUCTURES, file_digest, require_file

    root = resolve_data_dir(data_dir)
    digest = hashlib.sha256(f"v{_ANALYSIS_VERSION}".encode())
    for rel in (MP_LATTICE, *MP_STRUCTURES):
        digest.update(file_digest(require_file(root, rel)).encode())
    cached = cache_dir() / f"prototype-analysis-{digest.hexdigest()[:16]}.parquet"
    if cached.is_file():
        return pd.read_parquet(cached)
    rows: list[dict[str, Any]] = []
    rejected: Counter = Counter()
    bar = tqdm(desc="analyse", unit="structure", disable=not progress)
    chunks = _chunks(records_from_data_dir(root))
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            results: Iterator[list[dict[str, Any] | str]] = pool.map(_analyse_chunk, chunks)
            for part in results:
                _take(part, rows, rejected, bar)
    else:
        for chunk in chunks:
            _take(_analyse_chunk(chunk), rows, rejected, bar)
    bar.close()
    if rejected:
        logger.info("prototype analysis rejected %s", dict(rejected))
    frame = pd.DataFrame(rows)
    tmp = cached.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(cached)
    return frame


def _take(part: list[dict[str, Any] | str], rows: list[dict[str, Any]], rejected: Counter, bar: Any) -> None:
    for res in part:
        if isinstance(res, str):
            rejected[res.split(":")[0]] += 1
        else:
            rows.append(res)
    bar.update(len(part))


def benchmark_formulas(
    data_dir: str | os.PathLike[str] | None = None, parts: tuple[str, ...] | None = None
) -> set[str]:
    """Reduced formulas of the benchmark files (MPTS-52 and MP-20 validation and test by default)."""
    import warnings

    from cryspnet_gen.config import resolve_data_dir
    from cryspnet_gen.data import BENCHMARK_FILES, read_cif_cell, read_csv_checked, require_file
    from cryspnet_gen.formula import reduced_formula_of_numbers

    root = resolve_data_dir(data_dir)
    out: set[str] = set()
    with warnings.catch_warnings():  # pymatgen: "No Pauling electronegativity for Ar" (noble-gas formulas)
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")
        for part in parts or tuple(BENCHMARK_FILES):
            frame = read_csv_checked(require_file(root, BENCHMARK_FILES[part]), ["cif"])
            for cif in frame["cif"]:
                try:
                    out.add(reduced_formula_of_numbers(read_cif_cell(cif)[2])[0])
                except ValueError as exc:
                    logger.warning("%s: unreadable CIF (%s)", part, exc)
    return out


def _mp20_cutoff(root: Path) -> tuple[set[str], str]:
    """Ids added to MP no later than the newest MP-20 entry (``created_at``), and that date."""
    import pandas as pd

    created = pd.read_csv(root / "chemeleon_mp40" / "mp-created-at.csv.gz")
    ids: set[str] = set()
    for name in ("train", "val", "test"):
        ids |= set(
            pd.read_csv(root / "mp_20_pilot" / f"{name}.csv.gz", usecols=["material_id"])["material_id"]
        )
    for name in ("val", "test"):
        path = root / "mp_20_biternary_valtest" / f"{name}.csv.gz"
        ids |= set(pd.read_csv(path, usecols=["material_id"])["material_id"])
    dates = pd.to_datetime(created["created_at"], errors="coerce", format="mixed")
    newest = dates[created["material_id"].isin(ids)].max()
    keep = set(created["material_id"][dates <= newest])
    return keep, str(newest.date())


#: Held-out splits of each variant (none for "full") and how the manifest describes them.
_HELD_OUT: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "full": ((), ""),
    "bench": (None, "MPTS-52 and MP-20 validation and test formulas"),
    "no-test": (("mpts52_test", "mp20_test"), "MPTS-52 and MP-20 test formulas"),
    "mp20-equal": (("mp20_val", "mp20_test"), "MP-20 validation and test formulas"),
    "mpts52-proxy": (("mpts52_val", "mpts52_test"), "MPTS-52 validation and test formulas"),
}


def variant_rows(
    table: pd.DataFrame, variant: str, data_dir: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The analysed rows a variant may use, and a description of its filters for the manifest."""
    from cryspnet_gen.config import resolve_data_dir

    if variant not in VARIANTS:
        raise ValueError(f"Unknown {variant=}; choose from {VARIANTS}")
    splits, excluded = _HELD_OUT[variant]
    if variant == "full":
        return table, {"variant": variant, "excluded_formulas": 0}
    root = resolve_data_dir(data_dir)
    banned = benchmark_formulas(root) if splits is None else benchmark_formulas(root, splits)
    keep = ~table["formula"].isin(banned).to_numpy()
    filters: dict[str, Any] = {"variant": variant, "excluded_formulas": len(banned), "excluded": excluded}
    if variant == "mp20-equal":
        ids, newest = _mp20_cutoff(root)
        ehull = np.nan_to_num(table["e_above_hull"].to_numpy(dtype=float), nan=np.inf)
        keep &= (
            (table["input_sites"].to_numpy() <= 20)
            & (ehull <= 0.08)
            & table["template_id"].isin(ids).to_numpy()
        )
        filters.update(max_sites=20, max_e_above_hull=0.08, created_at_max=newest)
    elif variant == "mpts52-proxy":
        keep &= table["experimental"].to_numpy(dtype=bool) & (table["input_sites"].to_numpy() <= 52)
        filters.update(max_sites=52, experimental_only=True)
    return table[keep], filters


def build_library(
    out: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    variant: str = "full",
    per_type: int = 0,
    known_e_above_hull: float | None = 0.0,
    name: str | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Build a prototype library folder from a data folder (see the module docstring for the variants)."""
    table = analysis_table(data_dir, workers=workers, progress=progress)
    rows, filters = variant_rows(table, variant, data_dir)
    frame = select_prototypes(rows, per_type=per_type, known_e_above_hull=known_e_above_hull)
    filters.update(per_type=per_type, known_e_above_hull=known_e_above_hull)
    name = name or Path(out).name
    description = (
        f"Materials Project (database v2025.02.12, mp2025_topology) structures in Wyckoff form, variant {variant!r}: "
        f"{int(frame['representative'].sum())} templates ({'all' if not per_type else f'at most {per_type}'} per "
        f"structure type), {len(frame)} rows with the known compounds"
    )
    return write_library(
        frame,
        out,
        name=name,
        description=description,
        filters=filters,
        readme=_readme(name, variant, filters, frame),
        overwrite=overwrite,
    )


def _readme(name: str, variant: str, filters: dict[str, Any], frame: pd.DataFrame) -> str:
    from cryspnet_gen.sources.templates.prototypes import type_key

    n_rep = int(frame["representative"].sum())
    per_type = filters.get("per_type")
    n_types = len(
        {
            type_key(a, g, w)
            for a, g, w in zip(frame["anonymous"], frame["space_group"], frame["wyckoff"], strict=True)
        }
    )
    if per_type == 0:
        kept = f"every structure ({n_rep}) of the {n_types} structure types is a template"
    else:
        kept = (
            f"{n_rep} representatives of {n_types} structure types, at most {per_type} each: experimentally known "
            "(`in_cod_formula_spg`) first, then lowest energy above hull, then chemically different from those kept"
        )
    return f"""# {name}: prototype library (variant `{variant}`)

Template structures for cryspnet-gen's template candidates and its known-compound look-up, in Wyckoff form
(space group, Hall number, conventional cell, one site per orbit, coordinates in 1/65536), built by

    cryspnet-gen templates build --prototypes --variant {variant} --per-type {per_type} --from DATA --out {name}

from the open data folder (`mp2025_topology`: every Materials Project material, database v2025.02.12).

- Structure type = anonymous formula + space group + Wyckoff letters per element (spglib, symprec 0.1); {kept}.
- {len(frame)} rows in all (the templates, and for the known-compound look-up every compound that is
  experimentally known or on the hull).
- Filters: `{filters}`.
- {"Uses all the data: this is the shipped default." if variant == "full" else "Benchmark variant (see the filters above); never the default."}

Licence and attribution: the structures and energies above hull are Materials Project data, CC BY 4.0. Cite
A. Jain et al., APL Mater. 1, 011002 (2013) and the Materials Project (https://materialsproject.org).
`manifest.json` holds the sha256 of `prototypes.parquet`; cryspnet-gen refuses a changed file.
"""
