"""Candidate files: POSCAR/CIF per candidate, a JSON list and a CSV summary per formula, and reading them back.

:func:`write_candidates` writes per formula ``<formula>_<rank>_<space group>.cif`` / ``.vasp``,
``<formula>_candidates.json`` and ``<formula>_summary.csv``: several formulas can share one folder without
losing each other's rows, and :func:`read_candidates` reads one JSON file or every ``*_candidates.json`` of a
folder.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

from cryspnet_gen.records import Candidate
from cryspnet_gen.symmetry import SYMPREC

__all__ = ["FileFormat", "existing_candidate_files", "read_candidates", "write_candidates"]

logger = logging.getLogger(__name__)

FileFormat = Literal["poscar", "cif"]
_EXTENSIONS: dict[str, str] = {"poscar": "vasp", "cif": "cif"}


_SUMMARY_COLUMNS = (
    "formula",
    "rank",
    "space_group",
    "space_group_symbol",
    "bravais",
    "probability",
    "z",
    "nsites",
    "seed",
    "source",
    "template_id",
)


def _file_stem(formula: str) -> str:
    """A file-name-safe version of a formula: characters other than letters, digits, '.', '+', '-' -> '_'."""
    stem = re.sub(r"[^A-Za-z0-9.+-]+", "_", formula.strip()).strip("_.")
    return stem or "formula"


def _render(candidate: Candidate, fmt: str) -> str:
    if fmt == "cif":
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(candidate.structure, symprec=SYMPREC))
    from pymatgen.io.vasp import Poscar

    comment = (
        f"{candidate.formula} rank {candidate.rank} {candidate.space_group_symbol} ({candidate.space_group}) "
        f"p={candidate.probability:.4g} seed={candidate.seed} {candidate.source}"
        + (f" {candidate.template_id}" if candidate.template_id else "")
    )
    return Poscar(candidate.structure, comment=comment).get_str()


def _summary_csv(cands: Sequence[Candidate]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_SUMMARY_COLUMNS)
    for c in cands:
        writer.writerow(
            [
                c.formula,
                c.rank,
                c.space_group,
                c.space_group_symbol,
                c.bravais,
                f"{c.probability:.6g}",
                c.z,
                c.nsites,
                c.seed,
                c.source,
                c.template_id or "",
            ]
        )
    return buffer.getvalue()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the mode any other new file gets (0644 under umask 022).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def existing_candidate_files(out_dir: str | os.PathLike[str], formulas: Iterable[str]) -> list[Path]:
    """The per-formula files (``<formula>_candidates.json``, ``<formula>_summary.csv``) that
    :func:`write_candidates` would write for ``formulas`` into ``out_dir`` and that exist already."""
    folder = Path(out_dir)
    out = []
    for formula in dict.fromkeys(formulas):
        stem = _file_stem(formula)
        out += [p for p in (folder / f"{stem}_candidates.json", folder / f"{stem}_summary.csv") if p.exists()]
    return out


def write_candidates(
    cands: Iterable[Candidate],
    out_dir: str | os.PathLike[str],
    formats: Sequence[FileFormat] = ("poscar", "cif"),
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write candidates to a folder, one set of files per formula.

    For each formula (``<formula>`` made file-name safe): ``<formula>_<rank>_<space group>.vasp`` (POSCAR) and
    ``.cif`` (symmetrised with ``CifWriter(symprec=0.1)``) per candidate, ``<formula>_candidates.json`` (the
    candidates' ``as_dict()`` list, read back with :func:`read_candidates`) and ``<formula>_summary.csv``
    (formula, rank, space group and symbol, lattice, probability, Z, sites, seed, source). Candidates of several
    formulas can share a folder: each formula has its own JSON and CSV.

    Parameters
    ----------
    cands
        Candidates, e.g. ``generate_candidates(...)`` or several such lists joined.
    out_dir
        The folder (created if missing).
    formats
        Structure files to write: ``"poscar"`` and/or ``"cif"``.
    overwrite
        Replace existing files. Without it, nothing is written when any target exists.

    Returns
    -------
    list[Path]
        The files written.

    Raises
    ------
    FileExistsError
        Naming an existing target when ``overwrite`` is False (all names are checked before anything is
        written).
    ValueError
        For an unknown format or two candidates that would share a file name.
    """
    cands = list(cands)
    formats = list(formats)
    bad = [f for f in formats if f not in _EXTENSIONS]
    if bad:
        raise ValueError(f"Unknown formats {bad}; choose from {tuple(_EXTENSIONS)}")
    folder = Path(out_dir)
    by_formula: dict[str, list[Candidate]] = {}
    for c in cands:
        by_formula.setdefault(c.formula, []).append(c)
    stems: dict[str, str] = {}
    for formula in by_formula:
        stem = _file_stem(formula)
        if stem in stems:
            raise ValueError(
                f"formulas {stems[stem]!r} and {formula!r} map to the same file names ({stem}_*)"
            )
        stems[stem] = formula

    targets: list[tuple[Path, Callable[[], str]]] = []
    for formula, group in by_formula.items():
        stem = _file_stem(formula)
        for c in group:
            for fmt in formats:
                name = f"{stem}_{c.rank}_{c.space_group}.{_EXTENSIONS[fmt]}"
                targets.append((folder / name, functools.partial(_render, c, fmt)))
        targets.append(
            (
                folder / f"{stem}_candidates.json",
                functools.partial(_candidates_json, group),
            )
        )
        targets.append((folder / f"{stem}_summary.csv", functools.partial(_summary_csv, group)))
    names = [p.name for p, _ in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"several candidates would be written to {dupes[0]} (repeated formula and rank?)")
    if not overwrite:
        existing = [p for p, _ in targets if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise FileExistsError(
                f"{existing[0]} already exists{more}; nothing was written. Pass overwrite=True (--force on the "
                f"command line) to replace, or choose another folder"
            )
    # Render everything first, so that a failure leaves the folder untouched.
    contents = [(path, render()) for path, render in targets]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in contents:
        _atomic_write(path, text)
        written.append(path)
    logger.info("wrote %d files for %d formula(s) to %s", len(written), len(by_formula), folder)
    return written


def _candidates_json(cands: Sequence[Candidate]) -> str:
    from monty.json import MontyEncoder

    return json.dumps([c.as_dict() for c in cands], cls=MontyEncoder, indent=1) + "\n"


def read_candidates(path: str | os.PathLike[str]) -> list[Candidate]:
    """Read candidates written by :func:`write_candidates`.

    Parameters
    ----------
    path
        A ``*_candidates.json`` file, or a folder: then every ``*_candidates.json`` in it, by file name.
    """
    target = Path(path)
    files = sorted(target.glob("*_candidates.json")) if target.is_dir() else [target]
    if target.is_dir() and not files:
        raise FileNotFoundError(f"no *_candidates.json file in {target}")
    out: list[Candidate] = []
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{file} is not a candidates file (expected a JSON list of candidates)")
        for entry in data:
            candidate = Candidate.from_dict(entry)
            if not isinstance(candidate, Candidate):  # pragma: no cover - from_dict returns cls
                raise TypeError(f"{file}: entry is not a Candidate")
            out.append(candidate)
    return out
