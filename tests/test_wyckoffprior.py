"""Wyckoff assignments learned from known crystals: the table, its bundle part, its use by CRYSPNet candidates."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cryspnet_gen.bundle import BundleError, read_manifest, write_part
from cryspnet_gen.formula import formula_unit
from cryspnet_gen.wyckoffprior import WyckoffPrior, _labels, _multiplicity
from tests._model_fixtures import shared_bundle

# rock salt (Na 4a, Cl 4b) three times, zinc blende (4a, 4c) once, both AB in their groups
ROWS = [("AB", 225, ["a", "b"])] * 3 + [("AB", 225, ["b", "a"]), ("AB", 216, ["a", "c"])]


def _prior() -> WyckoffPrior:
    anonymous, groups, letters = zip(*ROWS, strict=True)
    return WyckoffPrior.from_rows(anonymous, groups, letters)


def test_assignments_most_frequent_first_in_the_formulas_element_order() -> None:
    prior = _prior()
    assert prior.rows == len(ROWS)
    # canonical order is (amount, atomic number): K before Br, so slot A is K
    assert prior.assignments(225, formula_unit("KBr", 200), 4) == [[["4a"], ["4b"]], [["4b"], ["4a"]]]
    assert prior.assignments(225, formula_unit("BrK", 200), 4) == [[["4b"], ["4a"]], [["4a"], ["4b"]]]
    assert prior.assignments(225, formula_unit("KBr", 200), 8) == []  # 4 + 4 sites do not hold Z = 8
    assert prior.assignments(221, formula_unit("KBr", 200), 1) == []  # no known AB crystal in Pm-3m
    assert prior.assignments(225, formula_unit("KBr", 200), 4, limit=1) == [[["4a"], ["4b"]]]


def test_json_round_trip_and_bad_text() -> None:
    prior = _prior()
    again = WyckoffPrior.from_json(prior.to_json())
    assert again.to_json() == prior.to_json()
    for bad in ("[]", '{"format": "cryspnet-gen z prior"}', "{"):
        with pytest.raises(ValueError):
            WyckoffPrior.from_json(bad)


def test_assignments_respect_multiplicities_and_stoichiometry_on_real_crystals() -> None:
    from cryspnet_gen.explain.similar import resolve_library

    rows = resolve_library().all_rows
    sample = rows.iloc[np.random.default_rng(0).permutation(len(rows))[:300]]
    prior = WyckoffPrior.from_rows(sample["anonymous"], sample["space_group"].astype(int), sample["wyckoff"])
    checked = 0
    for formula, group in zip(sample["formula"], sample["space_group"], strict=True):
        try:
            fu = formula_unit(formula, 10_000)
        except ValueError:  # noble-gas crystals are in MP but not a formula cryspnet-gen predicts
            continue
        for z in range(1, 9):
            for sites in prior.assignments(int(group), fu, z):
                checked += 1
                assert len(sites) == len(fu.species)
                for site, count in zip(sites, fu.counts, strict=True):
                    assert sum(_multiplicity(label) for label in site) == z * count
                    assert all(label in _labels(int(group)).values() for label in site)
    assert checked >= 200  # most sampled crystals find at least their own assignment (Z <= 8)


def test_bundle_part_generation_and_missing_prior(tmp_path) -> None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from cryspnet_gen.generate import generate_candidates
    from cryspnet_gen.predict import load_predictor

    plain = load_predictor(path=shared_bundle())
    with pytest.raises(ValueError, match="Wyckoff prior"):
        generate_candidates("KBr", k=1, source="cryspnet", predictor=plain, wyckoff="prior")
    [auto] = generate_candidates("KBr", k=1, source="cryspnet", predictor=plain)  # "auto": random orbits
    assert not any("known crystals" in note for note in auto.notes)

    bundle = tmp_path / "with-prior"
    shutil.copytree(shared_bundle(), bundle)
    write_part(bundle, "wyckoff_prior", _prior().to_json(), source="test rows")
    assert read_manifest(bundle)["wyckoff_prior"]["source"] == "test rows"
    predictor = load_predictor(path=bundle)
    assert predictor.wyckoff_prior is not None
    common = {"k": 1, "space_groups": [225], "source": "cryspnet", "predictor": predictor, "timeout": None}
    [cand] = generate_candidates("KBr", **common)  # "auto": the bundle's prior
    assert any("Wyckoff sites of known crystals: [['4a'], ['4b']]" in note for note in cand.notes)
    assert SpacegroupAnalyzer(cand.structure, 0.1).get_space_group_number() == 225
    [again] = generate_candidates("KBr", wyckoff="prior", **common)
    assert again.structure == cand.structure
    [random] = generate_candidates("KBr", wyckoff="random", **common)
    assert not any("known crystals" in note for note in random.notes)

    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    (tampered / "wyckoff_prior.json.gz").write_bytes(b"not gzip")
    with pytest.raises(BundleError, match="Wyckoff prior"):
        load_predictor(path=tampered)
