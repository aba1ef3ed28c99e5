"""The prototype library: Wyckoff form round trip, de-duplication to structure types, integrity checks, the
known-compound lookup and the default template source."""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from test_generate import random_predictor

from cryspnet_gen.records import CandidateWarning
from cryspnet_gen.sources.templates import (
    TemplateStoreError,
    load_library,
    load_store,
    resolve_store,
    template_candidates,
)
from cryspnet_gen.sources.templates.build import TemplateRecord, build_store, records_from_data_dir
from cryspnet_gen.sources.templates.prototypes import (
    LIBRARY_TABLE,
    analyse_wyckoff,
    expand_orbits,
    select_prototypes,
    write_library,
)


def _record(structure: Structure, mid: str, ehull: float = 0.0, experimental: bool = False) -> TemplateRecord:
    return TemplateRecord(
        mid,
        structure.lattice.matrix,
        structure.frac_coords,
        np.array([s.Z for s in structure.species]),
        ehull,
        "test",
        experimental=experimental,
    )


def _rocksalt(a: str, b: str, length: float = 5.6) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(length), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _cscl(a: str, b: str) -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.1), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _zincblende(a: str, b: str) -> Structure:
    return Structure.from_spacegroup("F-43m", Lattice.cubic(5.4), [a, b], [[0, 0, 0], [0.25, 0.25, 0.25]])


@pytest.fixture(scope="module")
def real_rows(shared_data: Path) -> list[tuple[TemplateRecord, dict]]:
    """300 real Materials Project structures and their Wyckoff-form rows."""
    records = list(itertools.islice(records_from_data_dir(shared_data), 300))
    rows = [(rec, analyse_wyckoff(rec)) for rec in records]
    return [(rec, row) for rec, row in rows if not isinstance(row, str)]


def test_wyckoff_form_rebuilds_real_structures(real_rows):
    assert len(real_rows) >= 290  # almost nothing rejected
    matcher = StructureMatcher()
    for rec, row in real_rows[:60]:
        numbers, frac = expand_orbits(
            row["hall_number"], np.array(row["orbit_numbers"]), np.array(row["orbit_frac"])
        )
        rebuilt = Structure(Lattice.from_parameters(*row["cell"]), numbers.tolist(), frac)
        original = Structure(Lattice(rec.lattice), rec.numbers.tolist(), rec.frac)
        assert len(rebuilt) == row["nsites"]
        assert rebuilt.composition.reduced_formula == original.composition.reduced_formula
        assert matcher.fit(rebuilt, original), rec.template_id
        assert len(row["orbit_numbers"]) <= len(rebuilt)  # one site per orbit is never more than the cell


def _library(tmp_path: Path, structures: list[tuple[Structure, str, float, bool]], **kw) -> Path:
    rows = [analyse_wyckoff(_record(s, mid, e, x)) for s, mid, e, x in structures]
    assert not any(isinstance(r, str) for r in rows), rows
    frame = select_prototypes(pd.DataFrame(rows), **kw)
    return write_library(frame, tmp_path / "lib", name="lib", description="test", filters={})


def test_dedup_keeps_distinct_wyckoff_sequences_apart(tmp_path: Path):
    folder = _library(
        tmp_path,
        [
            (_rocksalt("Na", "Cl"), "mp-1", 0.0, True),
            (_rocksalt("K", "Br", 6.6), "mp-2", 0.0, False),  # same type as NaCl
            (_rocksalt("Mg", "O", 4.2), "mp-3", 0.3, False),  # same type, high above the hull
            (_cscl("Cs", "Cl"), "mp-4", 0.0, True),  # AB, another group
            (_zincblende("Zn", "S"), "mp-5", 0.0, True),  # AB, F-43m: a / c sites
        ],
        per_type=1,
        known_e_above_hull=None,
    )
    library = load_library(folder)
    types = {
        (int(g), tuple(w))
        for g, w in zip(library.frame["space_group"], library.frame["wyckoff"], strict=True)
    }
    assert len(library) == 3 and len(types) == 3  # rock salt, CsCl, zinc blende: one representative each
    rocksalt = library.frame[library.frame["space_group"] == 225]
    assert list(rocksalt["template_id"]) == ["mp-1"]  # experimentally known first
    assert int(rocksalt["type_size"].iloc[0]) == 3


def test_more_representatives_are_chemically_different(tmp_path: Path):
    folder = _library(
        tmp_path,
        [
            (_rocksalt("Na", "Cl"), "mp-1", 0.0, True),
            (_rocksalt("Na", "Br", 6.0), "mp-2", 0.0, True),
            (_rocksalt("Mg", "O", 4.2), "mp-3", 0.0, True),
        ],
        per_type=2,
        known_e_above_hull=None,
    )
    ids = set(load_library(folder).frame["template_id"])
    assert ids == {"mp-1", "mp-3"}  # MgO shares no element with NaCl; NaBr shares Na


def test_round_trip_and_tamper_refusal(tmp_path: Path):
    folder = _library(
        tmp_path, [(_rocksalt("Na", "Cl"), "mp-1", 0.0, True), (_cscl("Cs", "Cl"), "mp-4", 0.0, True)]
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["n_rows"] == 2 and "CC BY 4.0" in manifest["licence"]
    library = load_library(folder)
    assert StructureMatcher().fit(library.structure(0), _cscl("Cs", "Cl")) or StructureMatcher().fit(
        library.structure(0), _rocksalt("Na", "Cl")
    )
    data = bytearray((folder / LIBRARY_TABLE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / LIBRARY_TABLE).write_bytes(bytes(data))
    with pytest.raises(TemplateStoreError, match="sha256"):
        load_library(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(TemplateStoreError, match=r"manifest\.json"):
        load_library(folder)


def test_known_lookup_on_and_off(tmp_path: Path):
    folder = _library(
        tmp_path,
        [
            (_rocksalt("Na", "Cl"), "mp-22862", 0.0, True),
            (_cscl("Na", "Cl"), "mp-1", 0.2, False),  # a high-energy polymorph of NaCl
            (_rocksalt("K", "Br", 6.6), "mp-2", 0.0, True),
        ],
        per_type=1,
    )
    library = load_store(folder)
    pred = random_predictor().predict(["NaCl"], top_bravais=14, top_space_groups=230)[0]
    on = template_candidates("NaCl", 3, templates=library, prediction=pred)
    assert on[0].source == "known" and on[0].template_id == "mp-22862" and on[0].space_group == 225
    assert on[1].source == "known" and on[1].template_id == "mp-1"  # then the next polymorph, by energy
    assert "known compound mp-22862" in on[0].notes[0]
    off = template_candidates("NaCl", 3, templates=library, prediction=pred, known=False)
    assert all(c.source == "template" for c in off)
    kbr = template_candidates("KBr", 1, templates=library, prediction=pred)
    assert kbr[0].source == "known"  # KBr is in the library too
    lif = template_candidates("LiF", 2, templates=library, prediction=pred)
    assert all(c.source == "template" for c in lif)  # not a known compound: substituted templates


def test_old_full_store_still_loads(tmp_path: Path):
    records = [_record(_rocksalt("Na", "Cl"), "mp-1"), _record(_cscl("Cs", "Cl"), "mp-2")]
    out = tmp_path / "store"
    build_store(records, out, progress=False)
    store = load_store(out)
    assert len(store) == 2 and type(store).__name__ == "TemplateStore"
    assert store.known("NaCl")["template_id"].tolist() == ["mp-1"]


def test_default_source_with_and_without_a_configured_store(tmp_path: Path, monkeypatch):
    from cryspnet_gen.generate import generate_candidates, resolve_source
    from cryspnet_gen.options import GenerateOptions
    from cryspnet_gen.sources.templates import ENV_VAR, PrototypeLibrary, available_libraries

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert "prototypes-mp-v1" in available_libraries()
    source, store = resolve_source(GenerateOptions())
    assert source == "both" and isinstance(store, PrototypeLibrary)  # the shipped library, with no setting
    assert resolve_source(GenerateOptions(source="cryspnet")) == ("cryspnet", None)
    folder = _library(tmp_path, [(_rocksalt("K", "Br", 6.6), "mp-2", 0.0, True)])
    monkeypatch.setenv(ENV_VAR, str(folder))
    source, store = resolve_source(GenerateOptions())
    assert source == "both" and store is not None and store.path == folder.resolve()
    assert resolve_store(None, default=False) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CandidateWarning)
        cands = generate_candidates("NaBr", k=1, predictor=random_predictor(), timeout=20)
    assert cands[0].source == "template" and cands[0].template_id == "mp-2"


def test_templates_build_prototypes_command(shared_data: Path, tmp_path: Path, monkeypatch):
    """``cryspnet-gen templates build --prototypes`` on a small data folder of real MP rows, then lookups."""
    from cryspnet_gen.cli import main
    from cryspnet_gen.config import CACHE_DIR_ENV

    data = tmp_path / "data" / "mp2025_topology"
    data.mkdir(parents=True)
    lattice = pd.read_csv(shared_data / "mp2025_topology" / "lattice.csv.gz", nrows=2000)
    parts = pd.read_csv(shared_data / "mp2025_topology" / "structures_part1.csv.gz", nrows=120)
    lattice[lattice["material_id"].isin(parts["material_id"])].to_csv(data / "lattice.csv.gz", index=False)
    parts.to_csv(data / "structures_part1.csv.gz", index=False)
    for i in (2, 3, 4):
        parts.iloc[:0].to_csv(data / f"structures_part{i}.csv.gz", index=False)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    out = tmp_path / "lib"
    args = ["templates", "build", "--prototypes", "--from", str(tmp_path / "data"), "--out", str(out), "-q"]
    assert main(args) == 0
    library = load_library(out)
    assert 0 < len(library) <= len(library.all_rows) <= 120
    assert main(args) == 2  # refuses to overwrite without --force
    assert main([*args, "--force", "--per-type", "2"]) == 0
    assert json.loads((out / "manifest.json").read_text())["filters"]["per_type"] == 2
    assert main(["templates", "info", str(out)]) == 0


def test_library_variants_hold_out_their_splits(monkeypatch, tmp_path: Path):
    """Each variant drops the formulas of its held-out splits (and only those) and applies its own filters."""
    import cryspnet_gen.sources.templates.prototype_build as pb

    held = {"mpts52_val": {"A"}, "mpts52_test": {"B"}, "mp20_val": {"C"}, "mp20_test": {"D"}}
    monkeypatch.setattr(
        pb, "benchmark_formulas", lambda root, parts=None: set().union(*(held[p] for p in parts or held))
    )
    monkeypatch.setattr(pb, "_mp20_cutoff", lambda root: ({"m1", "m2", "m3", "m4", "m5"}, "2019-01-01"))
    table = pd.DataFrame(
        {
            "formula": ["A", "B", "C", "D", "E", "E"],
            "template_id": ["m1", "m2", "m3", "m4", "m5", "m6"],
            "input_sites": [4, 4, 4, 4, 30, 4],
            "e_above_hull": [0.0, 0.0, 0.0, 0.0, 0.0, np.nan],
            "experimental": [True, True, True, True, True, False],
        }
    )
    kept = {v: set(pb.variant_rows(table, v, tmp_path)[0]["template_id"]) for v in pb.VARIANTS}
    assert kept["full"] == {"m1", "m2", "m3", "m4", "m5", "m6"}
    assert kept["bench"] == {"m5", "m6"}
    assert kept["no-test"] == {"m1", "m3", "m5", "m6"}
    assert kept["mp20-equal"] == {"m1", "m2"}  # m5: 30 sites; m6: no hull energy, not in MP-20's time window
    assert kept["mpts52-proxy"] == {"m3", "m4", "m5"}  # m6 is not experimental
    with pytest.raises(ValueError, match="variant"):
        pb.variant_rows(table, "nonsense", tmp_path)


def test_library_with_float_coordinates_is_refused(tmp_path: Path):
    """A table whose coordinates are floats (an older build) is refused in one line, not read as all zeros."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cryspnet_gen.data import file_digest

    folder = _library(tmp_path, [(_rocksalt("Na", "Cl"), "mp-1", 0.0, True)])
    table = pq.read_table(folder / LIBRARY_TABLE)
    frac = [[v / 65536 for v in row] for row in table["orbit_frac"].to_pylist()]
    index = table.schema.get_field_index("orbit_frac")
    table = table.set_column(index, "orbit_frac", pa.array(frac, type=pa.list_(pa.float32())))
    pq.write_table(table, folder / LIBRARY_TABLE)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][LIBRARY_TABLE]["sha256"] = file_digest(folder / LIBRARY_TABLE)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TemplateStoreError, match="coordinates stored as"):
        load_library(folder)


def test_cli_offers_every_library_variant():
    from cryspnet_gen.cli import build_parser
    from cryspnet_gen.sources.templates.prototype_build import VARIANTS

    build = build_parser()._subparsers._group_actions[0].choices["templates"]
    action = next(
        a for a in build._subparsers._group_actions[0].choices["build"]._actions if a.dest == "variant"
    )
    assert tuple(action.choices) == VARIANTS
