"""Tests for cryspnet_gen.templates: template stores, substitution, scoring, merging with CRYSPNet candidates.

The stores here are built from a small synthetic folder of hand-made structures (rock salt, CsCl, zinc blende,
perovskite, rutile) written as CIF, POSCAR and pymatgen JSON; predictions come from the randomly initialised
in-memory bundle of test_generate.py, so nothing depends on a trained model. One test builds a store from the
first rows of the real data folder.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from _structures import rocksalt
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Element, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from test_generate import random_predictor

from cryspnet_gen.generate import CandidateWarning, generate_candidates
from cryspnet_gen.templates import (
    ENV_VAR,
    TemplateScoring,
    TemplateStoreError,
    anonymous_formula,
    build_store,
    load_store,
    merge_candidates,
    records_from_data_dir,
    records_from_folder,
    records_from_materials_project,
    resolve_store,
    substitution_matrix,
    template_candidates,
)


def cscl(a: float = 4.1) -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def zincblende(a: float = 5.41) -> Structure:
    return Structure.from_spacegroup("F-43m", Lattice.cubic(a), ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def perovskite(a: float = 3.905) -> Structure:
    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(a), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]
    )


def rutile() -> Structure:
    return Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )


@pytest.fixture(scope="module")
def structure_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("structures")
    rocksalt().to(filename=str(root / "NaCl.cif"))
    cscl().to(filename=str(root / "POSCAR_CsCl"), fmt="poscar")
    (root / "sub").mkdir()
    zincblende().to(filename=str(root / "sub" / "ZnS.vasp"), fmt="poscar")
    entries = [
        {"material_id": "mp-5229", "structure": perovskite().as_dict(), "e_above_hull": 0.0},
        {"material_id": "mp-2657", "structure": rutile().as_dict(), "e_above_hull": 0.0},
        {"material_id": "mp-999999", "structure": rocksalt(6.0).as_dict(), "e_above_hull": 0.5},
    ]
    (root / "entries.json").write_text(json.dumps(entries))
    (root / "broken.cif").write_text("data_broken\n_cell_length_a 1\n")
    disordered = rocksalt()
    disordered.replace_species({Element("Na"): {"Na": 0.5, "K": 0.5}})
    (root / "disordered.json").write_text(json.dumps(disordered.as_dict()))
    (root / "notes.txt").write_text("not a structure")
    return root


@pytest.fixture(scope="module")
def store_dir(structure_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "store"
    report = build_store(records_from_folder(structure_folder), out, progress=False, description="synthetic")
    assert (
        report.n_stored == 6 and report.n_read == 6
    )  # broken.cif and the disordered file never became records
    return out


@pytest.fixture(scope="module")
def predictor():
    return random_predictor()


def _prediction(predictor, formula: str):
    (pred,) = predictor.predict([formula], top_bravais=14, top_space_groups=230)
    return pred


def test_anonymous_formula():
    assert anonymous_formula("SrTiO3") == "ABC3"
    assert anonymous_formula("Fe2O3") == "A2B3"
    assert anonymous_formula("Na2Cl2") == "AB"
    for f in ("SrTiO3", "Li7La3Zr2O12", "Fe2O3", "KBr"):
        assert anonymous_formula(f) == Composition(f).anonymized_formula
    with pytest.raises(ValueError, match="non-integer"):
        anonymous_formula("La1.8Sr0.2CuO4")


def test_store_build_and_lookup(store_dir: Path):
    store = load_store(store_dir)
    assert len(store) == 6
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert manifest["n_templates"] == 6 and manifest["description"] == "synthetic"
    groups = dict(zip(store.frame["formula"], store.frame["space_group"], strict=False))
    assert (
        groups["CsCl"] == 221 and groups["ZnS"] == 216 and groups["SrTiO3"] == 221 and groups["TiO2"] == 136
    )
    ab = store.lookup("KBr")
    assert sorted(ab["formula"]) == ["CsCl", "NaCl", "NaCl", "ZnS"]
    assert list(store.lookup("KBr", space_group=216)["formula"]) == ["ZnS"]
    assert list(store.lookup("BaZrO3")["template_id"]) == ["mp-5229"]
    assert store.lookup("Li7La3Zr2O12").empty
    # JSON entries keep their ids and energies; files are named by their path.
    ids = set(store.frame["template_id"])
    assert {"mp-5229", "mp-2657", "NaCl.cif", "POSCAR_CsCl", "sub/ZnS.vasp"} <= ids
    ehull = dict(zip(store.frame["template_id"], store.frame["e_above_hull"], strict=True))
    assert ehull["mp-999999"] == 0.5 and np.isnan(ehull["NaCl.cif"])
    # Wyckoff letters per element, in the canonical order (amount, then atomic number).
    row = store.frame.set_index("template_id").loc["mp-5229"]
    wyckoff = list(row["wyckoff"])
    assert list(row["elements"]) == [22, 38, 8]  # Ti, Sr (amount 1, by Z), then O
    assert sorted(wyckoff[:2]) == ["a", "b"] and wyckoff[2] in ("c", "d")  # 1a/1b and 3c/3d (origin choice)
    # The stored cell is the one given.
    assert StructureMatcher().fit(
        store.structure(int(np.flatnonzero(store.frame["formula"] == "TiO2")[0])), rutile()
    )


def test_store_filters_and_overwrite(structure_folder: Path, tmp_path: Path):
    out = tmp_path / "filtered"
    report = build_store(
        records_from_folder(structure_folder),
        out,
        max_sites=5,
        max_e_above_hull=0.1,
        exclude_formulas=["ClCs"],  # any spelling pymatgen parses
        progress=False,
    )
    store = load_store(out)
    # rutile (6 atoms) and rock salt (8 atoms, conventional) are too large; mp-999999 is above the hull too;
    # CsCl is excluded by formula: the perovskite (5 atoms) and zinc blende... (8 atoms) -> only SrTiO3.
    assert sorted(store.frame["formula"]) == ["SrTiO3"]
    assert report.rejected["excluded formula"] == 1
    assert sum(report.rejected.values()) + report.n_stored == report.n_read
    with pytest.raises(TemplateStoreError, match="already holds"):
        build_store(records_from_folder(structure_folder), out, progress=False)
    build_store(records_from_folder(structure_folder), out, progress=False, overwrite=True)
    assert len(load_store(out)) == 6  # the cached copy was replaced


def test_store_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(TemplateStoreError, match="no template store at"):
        load_store(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "templates.parquet").write_bytes(b"not parquet")
    (bad / "manifest.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(TemplateStoreError, match="unreadable"):
        load_store(bad)
    (bad / "manifest.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(TemplateStoreError, match="version"):
        load_store(bad)
    with pytest.raises(TemplateStoreError, match="not a folder"):
        list(records_from_folder(tmp_path / "nowhere"))
    monkeypatch.setenv(ENV_VAR, "none")  # templates off (no env: the shipped library)
    assert resolve_store(None) is None
    with pytest.raises(ValueError, match=ENV_VAR):
        generate_candidates("KBr", 1, source="templates", predictor=random_predictor())


def test_materials_project_records_from_a_client():
    class Doc:
        def __init__(self, mid: str, structure: Structure, ehull: float) -> None:
            self.material_id, self.structure, self.energy_above_hull = mid, structure, ehull

    class Summary:
        def __init__(self) -> None:
            self.query: dict = {}

        def search(self, **query):
            self.query = query
            return [Doc("mp-22862", rocksalt(), 0.0), Doc("mp-1", cscl(), 0.02)]

    class Client:
        def __init__(self) -> None:
            self.materials = type("M", (), {})()
            self.materials.summary = Summary()

    client = Client()
    records = list(records_from_materials_project(client=client, max_sites=20, max_e_above_hull=0.05))
    assert [r.template_id for r in records] == ["mp-22862", "mp-1"]
    assert records[1].e_above_hull == 0.02 and records[0].source == "materials-project"
    assert client.materials.summary.query["num_sites"] == (1, 20)
    assert client.materials.summary.query["energy_above_hull"] == (0, 0.05)


def test_materials_project_needs_client_and_key(monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    monkeypatch.delenv("MP_API_KEY", raising=False)
    expected = "needs an API key" if importlib.util.find_spec("mp_api") else "pip install mp-api"
    with pytest.raises(TemplateStoreError, match=expected):
        next(records_from_materials_project())


def test_substitution_matrix_prefers_chemically_similar_elements():
    m = substitution_matrix()
    z = {s: Element(s).Z for s in ("Na", "K", "Cl", "Br", "Sr", "Ba", "Ti", "Zr", "O", "Ne", "Ar")}
    assert m[z["K"], z["Na"]] > m[z["Br"], z["Na"]]
    assert m[z["Br"], z["Cl"]] > m[z["K"], z["Cl"]]
    assert m[z["Ba"], z["Sr"]] > m[z["Zr"], z["Sr"]]
    assert m[z["Zr"], z["Ti"]] > m[z["Ba"], z["Ti"]]
    for a in z.values():  # an element is always its own best replacement
        assert m[a, a] == m[:, a].max()
    assert np.isfinite(m[z["Ne"], z["Ar"]])  # fallback for elements the ionic table lacks


def test_candidates_are_substituted_scaled_and_keep_the_group(store_dir: Path, predictor):
    store = load_store(store_dir)
    pred = _prediction(predictor, "BaZrO3")
    cands = template_candidates("BaZrO3", 5, templates=store, prediction=pred)
    # One perovskite template, two mappings: Ba on the A site (likely) and, ranked below, Ba on the B site.
    assert len(cands) == 2 and cands[0].score > cands[1].score
    c = cands[0]
    assert "Sr->Zr" in cands[1].notes[0] and "Ti->Ba" in cands[1].notes[0]
    assert c.source == "template" and c.template_id == "mp-5229"
    assert c.structure.composition.reduced_formula == "BaZrO3"
    assert SpacegroupAnalyzer(c.structure, symprec=0.1).get_space_group_number() == c.space_group == 221
    assert c.structure.volume / len(c.structure) == pytest.approx(pred.volume_per_atom, rel=1e-6)
    assert "Sr->Ba" in c.notes[0] and "Ti->Zr" in c.notes[0]  # the likely mapping, not Sr->Zr / Ti->Ba
    # Ba sits where Sr was: 12 O neighbours at a/sqrt(2); Zr has 6 at a/2.
    ba = next(i for i, s in enumerate(c.structure) if s.specie.symbol == "Ba")
    a = c.structure.lattice.a
    assert len(c.structure.get_neighbors(c.structure[ba], 0.75 * a)) == 12
    assert (
        c.z == 1
        and c.bravais == "cP"
        and c.probability
        == pytest.approx(next(g.probability for g in pred.ranked_groups() if g.space_group == 221))
    )


def test_candidates_are_distinct_ranked_and_deterministic(store_dir: Path, predictor):
    store = load_store(store_dir)
    pred = _prediction(predictor, "KBr")
    first = template_candidates("KBr", 10, templates=store, prediction=pred)
    again = template_candidates("KBr", 10, templates=store, prediction=pred)
    # Two rock-salt templates give one candidate; CsCl and zinc blende one each.
    assert sorted(c.space_group for c in first) == [216, 221, 225]
    assert [c.rank for c in first] == [1, 2, 3]
    assert [c.score for c in first] == sorted((c.score for c in first), reverse=True)
    matcher = StructureMatcher()
    for x, y in itertools.combinations(first, 2):
        assert not matcher.fit(x.structure, y.structure)
    assert [c.template_id for c in first] == [c.template_id for c in again]
    for x, y in zip(first, again, strict=True):
        assert np.allclose(x.structure.frac_coords, y.structure.frac_coords)
        assert np.allclose(x.structure.lattice.matrix, y.structure.lattice.matrix)
    for c in first:
        assert c.structure.composition.reduced_formula == "KBr"
    # Filters and exclusions.
    only = template_candidates("KBr", 10, templates=store, prediction=pred, space_groups=[216])
    assert [c.space_group for c in only] == [216]
    no_rocksalt = template_candidates("KBr", 10, templates=store, prediction=pred, exclude_formulas={"NaCl"})
    assert 225 not in {c.space_group for c in no_rocksalt}


def test_scores_follow_the_model_probability(store_dir: Path, predictor):
    """With equal substitution and prevalence, the group CRYSPNet finds likelier ranks first."""
    store = load_store(store_dir)
    pred = _prediction(predictor, "NaCl")
    p = {g.space_group: g.probability for g in pred.ranked_groups()}
    scoring = TemplateScoring(w_substitution=0.0, w_prevalence=0.0)
    cands = template_candidates("NaCl", 10, templates=store, prediction=pred, scoring=scoring, known=False)
    probs = [max(p.get(c.space_group, 0.0), scoring.p_floor) for c in cands]
    assert probs == sorted(probs, reverse=True)


def test_merge_removes_duplicates_and_ranks_by_score(store_dir: Path, predictor):
    store = load_store(store_dir)
    pred = _prediction(predictor, "KBr")
    tmpl = template_candidates("KBr", 10, templates=store, prediction=pred)
    merged = merge_candidates([tmpl, tmpl], 10, formula="KBr")
    assert len(merged) == len(tmpl)
    assert [c.rank for c in merged] == list(range(1, len(tmpl) + 1))
    assert merged[0].notes[-1] == "rank 1 among the template candidates"
    assert len(merge_candidates([tmpl], 2)) == 2


def test_generate_both_sources(store_dir: Path, predictor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CandidateWarning)
        both = generate_candidates("KBr", 6, templates=store_dir, predictor=predictor, timeout=20)
    sources = {c.source for c in both}
    assert sources == {"template", "cryspnet"}
    assert [c.rank for c in both] == list(range(1, len(both) + 1))
    assert all(c.score is not None for c in both)
    assert [c.score for c in both] == sorted((c.score for c in both), reverse=True)
    matcher = StructureMatcher()
    for x, y in itertools.combinations(both, 2):
        if x.space_group == y.space_group and len(x.structure) == len(y.structure):
            assert not matcher.fit(x.structure, y.structure)
    only_cryspnet = generate_candidates("KBr", 2, templates=store_dir, source="cryspnet", predictor=predictor)
    assert {c.source for c in only_cryspnet} == {"cryspnet"}


def test_no_template_falls_back_to_cryspnet(store_dir: Path, predictor):
    assert (
        template_candidates("Li3N", 3, templates=store_dir, prediction=_prediction(predictor, "Li3N")) == []
    )
    with pytest.warns(CandidateWarning, match="falling back to CRYSPNet"):
        cands = generate_candidates(
            "Li3N", 1, source="templates", templates=store_dir, predictor=predictor, timeout=20
        )
    assert len(cands) == 1 and cands[0].source == "cryspnet"
    assert "no template with the anonymous formula AB3" in cands[0].notes[-1]


def test_env_var_turns_templates_on(store_dir: Path, predictor, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_VAR, str(store_dir))
    assert len(resolve_store(None)) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CandidateWarning)
        cands = generate_candidates("BaZrO3", 2, predictor=predictor, timeout=20)
    # "both" is the default with a store: the list went through the merge (scores, source ranks noted).
    assert all(c.score is not None and c.notes[-1].startswith("rank ") for c in cands)
    monkeypatch.setenv(ENV_VAR, "none")
    plain = generate_candidates("BaZrO3", 1, predictor=predictor, timeout=20)
    assert plain[0].score is None and plain[0].source == "cryspnet"


def test_cli_build_lookup_generate(structure_folder: Path, tmp_path: Path, capsys, monkeypatch):
    from cryspnet_gen.cli import main

    store = tmp_path / "store"
    assert main(["templates", "build", "--from", str(structure_folder), "--out", str(store), "-q"]) == 0
    assert "6 of 6 structures stored" in capsys.readouterr().out
    assert main(["templates", "build", "--from", str(structure_folder), "--out", str(store), "-q"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["templates", "info", str(store)]) == 0
    assert '"n_templates": 6' in capsys.readouterr().out
    assert main(["templates", "lookup", "KBr", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "anonymous formula AB, 4 templates" in out and "Fm-3m (225)" in out
    assert main(["templates", "build", "--from", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "neither a folder" in capsys.readouterr().err
    monkeypatch.setenv(ENV_VAR, "none")
    assert main(["generate", "BaZrO3", "--source", "templates", "-o", str(tmp_path / "o")]) == 2
    assert ENV_VAR in capsys.readouterr().err


@pytest.mark.shared_data
def test_store_from_the_data_folder(shared_data: Path, tmp_path: Path):
    records = list(itertools.islice(records_from_data_dir(shared_data), 300))
    assert len(records) == 300 and all(r.template_id.startswith("mp-") for r in records)
    report = build_store(records, tmp_path / "mp", progress=False, exclude_formulas=["Cs"])
    store = load_store(tmp_path / "mp")
    assert report.n_stored == len(store) and "Cs" not in set(store.frame["formula"])
    assert store.frame["e_above_hull"].notna().mean() > 0.9
    # Every stored structure reproduces its recorded formula and group.
    for i in range(0, len(store), 30):
        s = store.structure(i)
        assert s.composition.reduced_formula == store.frame.at[i, "formula"]
        assert SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number() == store.frame.at[i, "space_group"]


def test_chgnet_reranking_applies_to_template_candidates(store_dir: Path, predictor):
    pytest.importorskip("chgnet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cands = generate_candidates(
            "KBr",
            2,
            source="templates",
            templates=store_dir,
            predictor=predictor,
            relax="chgnet",
            relax_steps=3,
        )
    assert len(cands) == 2
    assert all(c.source == "template" and (c.relaxed_by or "").lower() == "chgnet" for c in cands)
    energies = [c.energy_per_atom for c in cands]
    assert energies == sorted(energies) and all(e is not None for e in energies)
    assert sorted(c.predicted_rank for c in cands) == [1, 2]


def test_both_skips_cryspnet_when_it_cannot_enter_the_list(store_dir: Path, predictor):
    from cryspnet_gen.templates import cryspnet_needed

    store = load_store(store_dir)
    tmpl = template_candidates("KBr", 3, templates=store, prediction=_prediction(predictor, "KBr"))
    best_cryspnet = TemplateScoring().cryspnet_score(1.0)
    assert cryspnet_needed([], 1) and cryspnet_needed(tmpl, len(tmpl) + 1)
    high = [c for c in tmpl if c.score > best_cryspnet]
    assert high, "the synthetic templates should outscore any CRYSPNet structure"
    assert not cryspnet_needed(high, len(high))
    lowered = [dataclasses.replace(c, score=best_cryspnet - 1) for c in high]
    assert cryspnet_needed(lowered, len(lowered))
    both = generate_candidates("KBr", len(high), templates=store, predictor=predictor, timeout=20)
    assert [c.source for c in both] == ["template"] * len(high)
