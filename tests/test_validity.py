"""Tests for cryspnet_gen.validity (contacts, stretching, the gate, charge balance) and the Z rule of the
CRYSPNet source."""

from __future__ import annotations

import pytest
from _structures import rocksalt as rock_salt
from pymatgen.core import Lattice, Structure

from cryspnet_gen.formula import formula_unit
from cryspnet_gen.records import Candidate, CandidateList
from cryspnet_gen.sources.cryspnet.cells import plan_cells, z_options
from cryspnet_gen.validity import (
    MAX_STRETCH,
    MIN_ANION_FACTOR,
    MIN_CONTACT_FACTOR,
    charge_balanced,
    check_candidates,
    contact_problem,
    contacts,
    covalent_radius,
    repair_contacts,
    shortest_contact,
)


def squeezed(ratio: float) -> Structure:
    """Two Na atoms at ``ratio`` x their covalent-radius sum apart (one Cl far away keeps it ionic)."""
    d = ratio * 2 * covalent_radius("Na")
    return Structure(Lattice.cubic(12.0), ["Na", "Na", "Cl"], [[0, 0, 0], [d / 12.0, 0, 0], [0.5, 0.5, 0.5]])


def candidate(structure: Structure, rank: int = 1, source: str = "cryspnet") -> Candidate:
    return Candidate(
        formula=structure.composition.reduced_formula,
        rank=rank,
        bravais="cF",
        space_group=225,
        space_group_symbol="Fm-3m",
        probability=0.5,
        bravais_probability=0.5,
        space_group_probability=1.0,
        structure=structure,
        z=4,
        formula_unit=structure.composition.reduced_formula,
        source=source,
    )


def test_real_rock_salt_passes_both_rules():
    covalent, anion = contacts(rock_salt())
    assert covalent is not None and (covalent.a, covalent.b) in {("Na", "Cl"), ("Cl", "Na")}
    assert covalent.distance == pytest.approx(5.64 / 2, abs=1e-6)
    assert anion is None  # Cl-Cl at 3.99 Å: beyond the sum of two chloride radii, so out of reach
    assert contact_problem(rock_salt()) is None
    _, anion = contacts(rock_salt(4.5))
    assert anion is not None and anion.a == anion.b == "Cl" and anion.rule == "ionic"
    assert anion.distance == pytest.approx(4.5 / 2**0.5)


def test_anion_rule_catches_what_the_covalent_rule_allows():
    # O-O at 1.06 Å (seen in a CRYSPNet SrTiO3 candidate) is 0.76 x the covalent sum, but 0.42 x two oxide radii.
    s = Structure(
        Lattice.cubic(8.0),
        ["Mg", "Mg", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.5 + 1.06 / 8, 0, 0.5]],
    )
    covalent, anion = contacts(s)
    assert covalent is not None and covalent.ratio > MIN_CONTACT_FACTOR
    assert anion is not None and anion.distance == pytest.approx(1.06) and anion.ratio < MIN_ANION_FACTOR
    assert shortest_contact(s) == anion
    problem = contact_problem(s)
    assert problem is not None and "O-O 1.06 Å" in problem and "ionic" in problem
    # Different elements are not held to the anion rule (S-O in a sulfate would be, if S were guessed -2).
    mixed = Structure(
        Lattice.cubic(8.0), ["Ca", "Cl", "Br"], [[0, 0, 0], [0.5, 0, 0.5], [0.5 + 2.2 / 8, 0, 0.5]]
    )
    assert charge_balanced("CaClBr") is True and contacts(mixed)[1] is None


def self_contact(ratio: float) -> Structure:
    """Na (with Li: no anions) in a cell so small that each Na is ``ratio`` x the Na-Na covalent sum from its own
    periodic image, the shortest contact of the cell."""
    a = ratio * 2 * covalent_radius("Na")
    return Structure(Lattice.tetragonal(a, 12.0), ["Na", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_push_apart_keeps_cell_and_symmetry():
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    s = squeezed(0.5)
    group = SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number()
    repaired, note = repair_contacts(s, space_group=group)
    assert repaired is not None and note is not None and "pushed apart" in note
    assert repaired.lattice == s.lattice
    assert shortest_contact(repaired).ratio >= MIN_CONTACT_FACTOR  # type: ignore[union-attr]
    assert SpacegroupAnalyzer(repaired, symprec=0.1).get_space_group_number() == group


@pytest.mark.parametrize("ratio", [0.5, 0.62, 0.69])
def test_stretch_when_pushing_cannot_help(ratio):
    s = self_contact(ratio)
    repaired, note = repair_contacts(s)
    need = MIN_CONTACT_FACTOR / ratio
    if need > MAX_STRETCH:
        assert repaired is None and note is not None and "stretch" in note
        return
    assert repaired is not None and note is not None and "stretched" in note
    assert shortest_contact(repaired).ratio >= MIN_CONTACT_FACTOR  # type: ignore[union-attr]
    assert repaired.lattice.a / s.lattice.a == pytest.approx(need, rel=1e-4)
    assert repaired.frac_coords == pytest.approx(s.frac_coords)


def test_gate_keeps_repairs_and_drops_with_reasons():
    good, fixable, hopeless = rock_salt(), self_contact(0.65), self_contact(0.4)
    cands = CandidateList(
        [candidate(good, 1), candidate(fixable, 2), candidate(hopeless, 3, "template")], formula="NaCl"
    )
    out = check_candidates(cands)
    assert [c.rank for c in out] == [1, 2]
    assert all(c.min_contact is not None and c.min_contact >= MIN_CONTACT_FACTOR for c in out)
    assert out[0].structure is good and out[0].charge_balanced is True and out[1].charge_balanced is None
    assert any("stretched" in n for n in out[1].notes)
    assert out[1].cell == pytest.approx(list(out[1].structure.lattice.parameters))
    assert len(out.skipped) == 1
    assert out.skipped[0].reason.startswith("template candidate dropped: atoms too close")
    assert out.stop_reason is not None and "1 candidate(s) dropped" in out.stop_reason


def test_charge_balance():
    assert charge_balanced("NaCl") is True
    assert charge_balanced("LiFePO4") is True
    assert charge_balanced("NaCl2") is False  # Na is +1 only
    assert charge_balanced("Fe3Al") is None  # an intermetallic: not applicable
    assert charge_balanced("Si") is None


@pytest.mark.parametrize(
    ("formula", "space_group", "z"),
    [("SrTiO3", 221, 1), ("LiFePO4", 62, 4), ("NaCl", 225, 4), ("Li7La3Zr2O12", 230, 8), ("GaN", 186, 2)],
)
def test_z_is_the_smallest_the_wyckoff_positions_allow(formula, space_group, z):
    fu = formula_unit(formula, 200)
    assert z_options(space_group, fu, 200)[0] == z
    plan = plan_cells(fu, space_group, "cP", None, 12.0, 200)
    assert plan.zs[0] == z and not plan.predicted
    volume = plan.cell(z, fu)
    assert volume[0] ** 3 == pytest.approx(
        z * fu.n_atoms * 12.0
    )  # the generic cubic shape, at 12 Å^3 per atom


def test_shared_tolerance_matrix_gives_pyxtal_the_same_answers():
    """The shared Tol_matrix handed to pyxtal's image check changes no answer, with or without ``tol``."""
    import numpy as np
    import pyxtal.operations as operations
    import pyxtal.symmetry as pyxtal_symmetry

    from cryspnet_gen.sources.cryspnet.build import _share_tolerance_matrix

    _share_tolerance_matrix()
    assert pyxtal_symmetry.check_images is not operations.check_images  # the wrapper is in place
    rng = np.random.default_rng(0)
    lattice = np.diag([3.0, 3.5, 4.0])
    for _ in range(50):
        coords = rng.random((3, 3))
        species = ["O", "Na", "Cl"]
        for tol in (None, 0.8, 2.5):
            assert pyxtal_symmetry.check_images(coords, species, lattice, tol=tol) == operations.check_images(
                coords, species, lattice, tol=tol
            )


def test_atoms_on_one_spot_are_rejected_not_a_crash():
    """Two atoms at the same position: no stretch can help; the candidate is dropped with its reason."""
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    assert contact_problem(s) is not None
    fixed, note = repair_contacts(s, MIN_CONTACT_FACTOR, MAX_STRETCH)
    assert fixed is None and note


def test_cached_pyxtal_tables_equal_pyxtal(tmp_path, monkeypatch):
    """The Wyckoff classes and covalent radii read from the cache folder are pyxtal's, built and then re-read."""
    from pyxtal.database.element import Element

    import cryspnet_gen.sources.cryspnet.cells as cells
    import cryspnet_gen.validity as validity

    monkeypatch.setenv("CRYSPNET_GEN_CACHE_DIR", str(tmp_path))
    live = cells._pyxtal_wyckoff_classes()
    for _ in range(2):  # built into the cache, then read from it
        cells._all_wyckoff_classes.cache_clear()
        validity._covalent_radii.cache_clear()
        assert cells._all_wyckoff_classes() == live
        assert all(
            validity._covalent_radii()[s] == pytest.approx(Element(s).covalent_radius)
            for s in ["H", "O", "Fe", "La", "U"]
        )
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert cells.wyckoff_classes(225)[0][-1] == 192 and cells.wyckoff_classes(1) == ((1,), (), 1)
