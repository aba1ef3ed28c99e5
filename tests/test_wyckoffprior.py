"""Wyckoff assignments learned from known crystals: the table, its bundle part, its use by CRYSPNet candidates."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


ELEMENTS = ("Na", "Mg", "Al", "Si", "Cl", "K", "Ca", "O")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    group=st.integers(1, 230),
    n_species=st.integers(1, 3),
    picks=st.lists(st.lists(st.integers(0, 10_000), min_size=1, max_size=3), min_size=3, max_size=3),
    noise=st.lists(
        st.lists(st.lists(st.integers(0, 10_000), min_size=1, max_size=2), min_size=1, max_size=3), max_size=6
    ),
    elements=st.permutations(ELEMENTS),
)
def test_assignments_respect_multiplicities_and_stoichiometry_for_random_groups_and_formulas(
    group, n_species, picks, noise, elements
) -> None:
    """Property: for any group and formula, every assignment the prior gives puts exactly z x amount atoms of each
    element on orbits of that group, and a known row's own assignment comes back at its own Z."""
    from math import gcd

    from cryspnet_gen.formula import canonical_elements

    labels = _labels(group)
    letters = sorted(labels)
    # a random crystal: 1-3 orbits per element, chosen among the group's letters
    rows_letters = [[letters[i % len(letters)] for i in pick] for pick in picks[:n_species]]
    mults = [sum(_multiplicity(labels[c]) for c in site) for site in rows_letters]
    z = 0
    for m in mults:
        z = gcd(z, m)
    species = list(elements[:n_species])
    amounts = [m // z for m in mults]
    fu = formula_unit("".join(f"{e}{a}" for e, a in zip(species, amounts, strict=True)), 10_000)
    # the row's letters in the anonymous formula's canonical element order
    by_number = {fu.species.index(e): site for e, site in zip(species, rows_letters, strict=True)}
    order = canonical_elements(fu.amounts)
    numbers = list(fu.amounts)
    canonical = ["".join(by_number[numbers.index(n)]) for n in order]
    extra = [["".join(letters[i % len(letters)] for i in part) for part in row] for row in noise]
    rows = [canonical] + [row for row in extra if len(row) == n_species]
    prior = WyckoffPrior.from_rows([fu.anonymous] * len(rows), [group] * len(rows), rows)
    own = [[labels[c] for c in site] for site in (by_number[i] for i in range(n_species))]
    for zz in range(1, 9):
        found = prior.assignments(group, fu, zz, limit=100)
        for sites in found:
            assert len(sites) == len(fu.species)
            for site, number in zip(sites, numbers, strict=True):
                assert sum(_multiplicity(label) for label in site) == zz * fu.amounts[number]
                assert all(label in labels.values() for label in site)
        if zz == z:
            assert [sorted(site) for site in own] in [[sorted(site) for site in s] for s in found]


FAMILIES = [  # (group, cell a b c alpha beta gamma, sites of Na and Cl): one group per crystal family
    (2, (5.1, 5.3, 5.6, 80.0, 85.0, 95.0), ("2i",), ("2i",)),  # triclinic
    (14, (5.5, 5.8, 7.2, 90.0, 104.0, 90.0), ("4e",), ("4e",)),  # monoclinic
    (62, (7.0, 4.0, 6.0, 90.0, 90.0, 90.0), ("4c",), ("4c",)),  # orthorhombic
    (139, (4.0, 4.0, 8.0, 90.0, 90.0, 90.0), ("2a",), ("2b",)),  # tetragonal
    (166, (4.0, 4.0, 10.0, 90.0, 90.0, 120.0), ("3a",), ("3b",)),  # trigonal (hexagonal axes)
    (194, (4.0, 4.0, 6.6, 90.0, 90.0, 120.0), ("2a",), ("2c",)),  # hexagonal
    (225, (5.6, 5.6, 5.6, 90.0, 90.0, 90.0), ("4a",), ("4b",)),  # cubic
]


@pytest.mark.parametrize(("group", "cell", "na", "cl"), FAMILIES, ids=[str(f[0]) for f in FAMILIES])
def test_pyxtal_builds_explicit_sites_in_every_crystal_family(group, cell, na, cl) -> None:
    """A pyxtal attempt with explicit Wyckoff sites (as the prior gives them) builds that group with the atoms on
    those orbits, in every crystal family."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from cryspnet_gen.sources.cryspnet.build import PyxtalJob, run_job

    n = _multiplicity(na[0])
    job = PyxtalJob(
        space_group=group, species=("Na", "Cl"), num_ions=(n, n), cell=cell, entropy=(7,), t_factor=0.5,
        sites=(na, cl),
    )  # fmt: skip
    structure = run_job(job, 30.0, "auto")
    assert structure.composition.reduced_formula == "NaCl"
    assert len(structure) == 2 * n
    sga = SpacegroupAnalyzer(structure, symprec=0.01)
    assert sga.get_space_group_number() == group
    sym = sga.get_symmetrized_structure()
    found = sorted(
        (str(s[0].specie), w) for s, w in zip(sym.equivalent_sites, sym.wyckoff_symbols, strict=True)
    )
    assert found == sorted([("Na", na[0]), ("Cl", cl[0])])
    again = run_job(job, 30.0, "auto")
    assert again == structure  # determinism for the same entropy
