"""Tests for cryspnet_gen.generate: formula -> candidate structures.

The predictor is a randomly initialised bundle built in memory (no training: ``build_tiny_bundle`` trains for
about a minute on a busy machine). Its lattice parameters and volumes are garbage within wide ranges, which
is what the generation has to be robust to; most tests force the space group.
"""

from __future__ import annotations

import csv
import json
import random
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from cryspnet_gen.generate import (
    DEFAULT_MIN_DISTANCE_FACTOR,
    Candidate,
    CandidateList,
    CandidateWarning,
    GenerateOptions,
    GenerationError,
    generate_candidates,
    generate_many,
    read_candidates,
    write_candidates,
)
from cryspnet_gen.predict import Predictor
from cryspnet_gen.sources.cryspnet.cells import compatible

# One formula per Bravais lattice, forced into a group of that lattice.
LATTICE_CASES = [
    ("NaCl", 225, "cF"),
    ("CsCl", 221, "cP"),
    ("W", 229, "cI"),
    ("TiO2", 136, "tP"),
    ("ThCr2Si2", 139, "tI"),
    ("ZnO", 186, "hP"),
    ("Al2O3", 167, "hR"),
    ("CaTiO3", 62, "oP"),
    ("CaIrO3", 63, "oC"),
    ("MoPt2", 71, "oI"),
    ("TiSi2", 70, "oF"),
    ("ZrO2", 14, "mP"),
    ("AlCl3", 12, "mC"),
    ("AlF3", 2, "aP"),
]

FAST = {"timeout_per_group": 30.0, "timeout": 60.0}


def _random_ensemble(model_class: str, args: dict, n: int, rng: np.random.Generator, lo=None, hi=None):
    import torch

    from cryspnet_gen.nn import Ensemble, build_module

    members = []
    for _ in range(n):
        module = build_module(model_class, args)
        state = module.state_dict()
        for key, t in state.items():
            if t.is_floating_point() and key.endswith(("weight", "bias")) and "standardizer" not in key:
                scale = 1.0 / np.sqrt(t.shape[-1]) if t.ndim == 2 else 0.1
                state[key] = torch.tensor(rng.normal(0.0, scale, size=tuple(t.shape)), dtype=t.dtype)
        module.load_state_dict(state)
        if lo is not None:
            module.set_range(lo, hi)
        members.append(module)
    return Ensemble(members)


def random_predictor(seed: int = 0) -> Predictor:
    """A randomly initialised bundle held in memory: every lattice has networks; outputs in wide ranges."""
    from cryspnet_gen.featurize import feature_labels
    from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES, space_groups_of

    rng = np.random.default_rng(seed)
    labels = list(feature_labels())
    nf = len(labels)
    hidden = [8]
    files = ("bravais_master", "space_group", "lattice", "volume")
    tensors: dict[str, dict] = {f"{f}.safetensors": {} for f in files}

    def add(file: str, prefix: str, ens) -> None:
        for key, value in ens.state_dict().items():
            tensors[f"{file}.safetensors"][prefix + key] = value

    bravais_args = {"n_features": nf, "n_classes": 14, "hidden": hidden, "dropout": 0.0}
    add("bravais_master", "", _random_ensemble("Classifier", bravais_args, 2, rng))
    sg_entries, lat_entries = {}, {}
    for lat in BRAVAIS_LATTICES:
        groups = list(space_groups_of(lat))
        args = {"n_features": nf, "n_classes": len(groups), "hidden": hidden, "dropout": 0.0}
        add("space_group", f"{lat}.", _random_ensemble("Classifier", args, 2, rng))
        sg_entries[lat] = {
            "kind": "network",
            "classes": groups,
            "model_class": "Classifier",
            "model_args": args,
            "n_members": 2,
        }
        names = list(PARAMETER_NAMES[lat])
        lo = [3.0 if n in "abc" else (50.0 if lat == "hR" else 80.0) for n in names]
        hi = [7.0 if n in "abc" else (100.0 if lat == "hR" else 110.0) for n in names]
        args = {"n_features": nf, "n_outputs": len(names), "hidden": hidden, "dropout": 0.0}
        add("lattice", f"{lat}.", _random_ensemble("Regressor", args, 2, rng, lo, hi))
        lat_entries[lat] = {
            "kind": "network",
            "parameter_names": names,
            "model_class": "Regressor",
            "model_args": args,
            "n_members": 2,
        }
    vol_args = {"n_features": nf, "n_outputs": 1, "hidden": hidden, "dropout": 0.0}
    add("volume", "", _random_ensemble("Regressor", vol_args, 2, rng, [15.0], [30.0]))
    manifest = {
        "name": "random-test",
        "version": "0.0.test",
        "features": {"labels": labels},
        "tasks": {
            "bravais": {
                "master": {
                    "file": "bravais_master.safetensors",
                    "model_class": "Classifier",
                    "model_args": bravais_args,
                    "n_members": 2,
                    "classes": list(BRAVAIS_LATTICES),
                }
            },
            "space_group": {"file": "space_group.safetensors", "shared": None, "lattices": sg_entries},
            "lattice": {"file": "lattice.safetensors", "lattices": lat_entries},
            "volume": {
                "file": "volume.safetensors",
                "model_class": "Regressor",
                "model_args": vol_args,
                "n_members": 2,
            },
        },
    }
    return Predictor(manifest, tensors)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return random_predictor()


def _radius(symbol: str) -> float:
    from pyxtal.database.element import Element

    return float(Element(symbol).covalent_radius)


def _assert_valid(
    c: Candidate,
    formula: str,
    space_group: int,
    factor: float = DEFAULT_MIN_DISTANCE_FACTOR,
    bundle: str = "random-test",
) -> None:
    from pymatgen.core import Composition
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    s = c.structure
    assert c.space_group == space_group
    assert SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number() == space_group
    assert s.composition.reduced_formula == Composition(formula).reduced_formula
    assert len(s) == c.z * Composition(c.formula_unit).num_atoms
    radii = np.array([_radius(site.specie.symbol) for site in s])
    centres, neighbours, _, dist = s.get_neighbor_list(2 * factor * radii.max())
    if len(dist):
        assert (dist >= factor * (radii[centres] + radii[neighbours]) - 1e-9).all()
    assert c.source == "cryspnet"
    assert c.bundle == bundle


@pytest.mark.parametrize(("formula", "space_group", "bravais"), LATTICE_CASES)
def test_each_bravais_lattice(predictor, formula, space_group, bravais):
    cands = generate_candidates(formula, k=1, seed=7, predictor=predictor, space_groups=[space_group], **FAST)
    assert isinstance(cands, CandidateList)
    (c,) = cands
    assert c.bravais == bravais and c.rank == 1 and c.seed == 7
    _assert_valid(c, formula, space_group)
    # Deterministic for a seed.
    again = generate_candidates(formula, k=1, seed=7, predictor=predictor, space_groups=[space_group], **FAST)
    assert again[0].structure == c.structure and again[0].attempt == c.attempt
    # JSON round trip, structure included.
    back = Candidate.from_dict(json.loads(json.dumps(c.as_dict())))
    assert back == c
    assert back.structure == c.structure


def test_no_global_random_state_and_seed_matters(predictor):
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 - the legacy global state must stay untouched
    py_state = random.getstate()
    a = generate_candidates("TiO2", k=1, seed=1, predictor=predictor, space_groups=[136], **FAST)
    assert (np.random.get_state()[1] == np_state).all()  # noqa: NPY002
    assert random.getstate() == py_state
    b = generate_candidates("TiO2", k=1, seed=2, predictor=predictor, space_groups=[136], **FAST)
    assert a[0].structure != b[0].structure


def test_walks_the_model_ranking(predictor):
    cands = generate_candidates("NaCl", k=3, predictor=predictor, bravais=["cF", "cP", "tP", "hP"], **FAST)
    assert [c.rank for c in cands] == [1, 2, 3]
    probs = [c.probability for c in cands]
    assert probs == sorted(probs, reverse=True)
    assert len({c.space_group for c in cands}) == 3
    pred = predictor.predict("NaCl", top_bravais=14, top_space_groups=230)[0]
    ranking = [g.space_group for g in pred.ranked_groups() if g.bravais in {"cF", "cP", "tP", "hP"}]
    for c in cands:
        _assert_valid(c, "NaCl", c.space_group)
        assert c.bravais in {"cF", "cP", "tP", "hP"}
        assert ranking.index(c.space_group) + 1 <= len(ranking)
    # Every pair ranked above the last candidate was either used or skipped with a reason.
    tried = {c.space_group for c in cands} | {s.space_group for s in cands.skipped}
    last = ranking.index(cands[-1].space_group)
    assert set(ranking[: last + 1]) <= tried
    assert all(s.reason for s in cands.skipped)


def test_trained_tiny_bundle_end_to_end():
    """The shared trained bundle of the model tests, loaded from disk, unforced."""
    from _model_fixtures import shared_bundle

    from cryspnet_gen.predict import load_predictor

    trained = load_predictor(path=shared_bundle())
    for formula in ("SrTiO3", "LiFePO4", "Li7La3Zr2O12"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CandidateWarning)
            cands = generate_candidates(formula, k=2, predictor=trained, **FAST)
        assert 1 <= len(cands) <= 2
        assert [c.rank for c in cands] == list(range(1, len(cands) + 1))
        assert [c.probability for c in cands] == sorted((c.probability for c in cands), reverse=True)
        for c in cands:
            _assert_valid(c, formula, c.space_group, bundle=trained.name)
            assert c.bundle_version == trained.version


def test_per_group_gives_distinct_structures(predictor):
    cands = generate_candidates("ZnO", k=2, per_group=2, predictor=predictor, space_groups=[186], **FAST)
    assert len(cands) == 2
    assert {c.space_group for c in cands} == {186}
    assert cands[0].structure != cands[1].structure
    assert cands[0].attempt != cands[1].attempt


@pytest.mark.parametrize("formula", ["Xx2O", "", "NaCl(", "He"])
def test_bad_formula(predictor, formula):
    with pytest.raises(ValueError, match="formula") as info:
        generate_candidates(formula, predictor=predictor)
    assert repr(formula) in str(info.value) or formula == ""


def test_bad_options(predictor):
    with pytest.raises(ValueError, match="k must be"):
        generate_candidates("NaCl", k=0, predictor=predictor)
    with pytest.raises(ValueError, match="Unknown model"):
        generate_candidates("NaCl", model="alloys", predictor=predictor)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bravais"):
        generate_candidates("NaCl", bravais=["xX"], predictor=predictor)
    with pytest.raises(ValueError, match="space group"):
        generate_candidates("NaCl", space_groups=[231], predictor=predictor)
    with pytest.raises(ValueError, match="isolation"):
        generate_candidates("NaCl", isolation="thread", predictor=predictor)  # type: ignore[arg-type]


def test_no_compatible_group_raises_with_reasons(predictor):
    # Ia-3d's smallest multiplicity is 16: NaCl needs 32 atoms.
    with pytest.raises(GenerationError, match="NaCl") as info:
        generate_candidates("NaCl", predictor=predictor, space_groups=[230, 229], max_atoms=8)
    err = info.value
    assert err.formula == "NaCl"
    assert {s.space_group for s in err.skipped} == {230, 229}
    assert all("Wyckoff" in s.reason for s in err.skipped)
    assert "Wyckoff" in str(err)


def test_fewer_than_k_warns_and_keeps_reasons(predictor):
    with pytest.warns(CandidateWarning, match="only 1 of 2"):
        cands = generate_candidates(
            "NaCl", k=2, predictor=predictor, space_groups=[225, 230], max_atoms=16, **FAST
        )
    assert [c.space_group for c in cands] == [225]
    assert [s.space_group for s in cands.skipped] == [230]
    assert "Wyckoff" in cands.skipped[0].reason
    assert cands.stop_reason is not None


def test_fractional_formula(predictor):
    (c,) = generate_candidates("La1.8Sr0.2CuO4", k=1, predictor=predictor, space_groups=[47], **FAST)
    assert c.formula == "La1.8Sr0.2CuO4"
    assert c.formula_unit == "La9SrCu5O20"
    assert len(c.structure) == 35 * c.z
    _assert_valid(c, "La9SrCu5O20", 47)


def test_fractional_formula_too_large_for_max_atoms(predictor):
    with pytest.raises(ValueError, match=r"La9SrCu5O20.*35 atoms.*max_atoms=20"):
        generate_candidates("La1.8Sr0.2CuO4", predictor=predictor, max_atoms=20)


@pytest.mark.parametrize("isolation", ["auto", "process"])
def test_time_limit_skips_instead_of_hanging(predictor, isolation, monkeypatch):
    from cryspnet_gen.sources.cryspnet import build

    real = build._build

    def slow(job):  # a real pyxtal build that first waits: on a fast machine the garnet builds in 0.05 s
        time.sleep(30)
        return real(job)

    monkeypatch.setattr(build, "_build", slow)
    start = time.monotonic()
    with pytest.raises(GenerationError, match="time limit") as info:
        generate_candidates(
            "Li7La3Zr2O12",
            predictor=predictor,
            space_groups=[230],
            timeout_per_group=0.05,
            isolation=isolation,
        )
    assert time.monotonic() - start < 10
    (skip,) = info.value.skipped
    assert skip.space_group == 230 and "time limit" in skip.reason


def test_off_the_main_thread_uses_a_child_process(predictor):
    import threading

    here = generate_candidates("ZnO", k=1, predictor=predictor, space_groups=[186], **FAST)
    out: dict[str, object] = {}

    def work() -> None:
        try:
            out["cands"] = generate_candidates("ZnO", k=1, predictor=predictor, space_groups=[186], **FAST)
        except BaseException as exc:  # surfaced by the assertion below
            out["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert "error" not in out, out.get("error")
    there = out["cands"]
    assert isinstance(there, CandidateList)
    assert there[0].structure == here[0].structure


def test_call_time_limit(predictor):
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CandidateWarning)
        try:
            cands = generate_candidates("Li7La3Zr2O12", k=3, predictor=predictor, timeout=0.05)
        except GenerationError as exc:
            assert "time limit" in str(exc)
        else:
            assert "time limit" in (cands.stop_reason or "")
    assert time.monotonic() - start < 10


def test_compatibility_matches_pyxtal():
    from pyxtal.symmetry import Group

    rng = np.random.default_rng(0)
    for sg in (1, 2, 14, 47, 62, 139, 167, 191, 221, 225, 227, 230):
        group = Group(sg)
        for _ in range(6):
            counts = tuple(int(x) for x in rng.integers(1, 17, size=int(rng.integers(1, 4))))
            assert compatible(sg, counts) == group.check_compatible(list(counts))[0], (sg, counts)
    assert compatible(230, (56, 24, 16, 96))  # garnet, Z = 8


def test_generate_many(predictor):
    results = generate_many(
        ["NaCl", "Xx2", "CsCl"], k=1, predictor=predictor, space_groups=[225, 221], progress=False, **FAST
    )
    assert [r.formula for r in results] == ["NaCl", "Xx2", "CsCl"]
    assert results[0].ok and results[2].ok
    assert not results[1].ok and results[1].error_type == "ValueError" and "Xx2" in (results[1].error or "")
    assert results[0].candidates[0].structure.composition.reduced_formula == "NaCl"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_write_and_read_candidates(predictor, tmp_path):
    nacl = generate_candidates("NaCl", k=2, predictor=predictor, space_groups=[225, 221], **FAST)
    cscl = generate_candidates("CsCl", k=1, predictor=predictor, space_groups=[221], **FAST)
    out = tmp_path / "out"
    written = write_candidates(nacl, out)
    names = {p.name for p in written}
    for c in nacl:
        assert f"NaCl_{c.rank}_{c.space_group}.cif" in names
        assert f"NaCl_{c.rank}_{c.space_group}.vasp" in names
    assert {"NaCl_candidates.json", "NaCl_summary.csv"} <= names
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # A second formula in the same folder keeps the first one's rows.
    write_candidates(cscl, out, formats=("cif",))
    back = read_candidates(out)
    assert [(c.formula, c.rank) for c in back] == [("CsCl", 1), ("NaCl", 1), ("NaCl", 2)]
    assert back[1].structure == nacl[0].structure and back[1] == nacl[0]
    assert read_candidates(out / "NaCl_candidates.json") == list(nacl)
    with (out / "NaCl_summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["rank"]) for r in rows] == [1, 2]
    assert int(rows[0]["nsites"]) == len(nacl[0].structure)

    from pymatgen.core import Structure

    cif = Structure.from_file(out / f"NaCl_1_{nacl[0].space_group}.cif")
    assert cif.composition.reduced_formula == "NaCl"
    poscar = Structure.from_file(out / f"NaCl_1_{nacl[0].space_group}.vasp")
    assert len(poscar) == len(nacl[0].structure)

    # No overwrite without asking; nothing changes.
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_candidates(nacl, out)
    assert _snapshot(out) == before
    write_candidates(nacl, out, overwrite=True)
    assert set(_snapshot(out)) == set(before)


def test_write_checks_every_name_first(predictor, tmp_path):
    nacl = generate_candidates("NaCl", k=1, predictor=predictor, space_groups=[225], **FAST)
    (tmp_path / "NaCl_summary.csv").write_text("mine\n")
    with pytest.raises(FileExistsError, match=r"NaCl_summary\.csv"):
        write_candidates(nacl, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["NaCl_summary.csv"]
    assert (tmp_path / "NaCl_summary.csv").read_text() == "mine\n"
    with pytest.raises(ValueError, match="formats"):
        write_candidates(nacl, tmp_path / "x", formats=("xyz",))  # type: ignore[arg-type]


def test_relax_reranks_by_energy(predictor) -> None:
    """relax="chgnet" relaxes in process and orders candidates by energy per atom, keeping the model rank."""
    cands = generate_candidates(
        "NaCl",
        k=2,
        seed=0,
        predictor=predictor,
        space_groups=[225, 221],
        relax="chgnet",
        relax_steps=3,
        **FAST,
    )
    assert len(cands) == 2
    energies = [c.energy_per_atom for c in cands]
    assert all(e is not None and np.isfinite(e) for e in energies)
    assert energies == sorted(energies)
    assert [c.rank for c in cands] == [1, 2]
    assert sorted(c.predicted_rank for c in cands) == [1, 2]
    assert all(c.relaxed_by == "CHGNet" and c.relaxed_space_group is not None for c in cands)
    assert Candidate.from_dict(cands[0].as_dict()).energy_per_atom == energies[0]


def test_time_limits_at_any_moment_leave_no_trace():
    """Attempts cut by their time limit at random moments (pyxtal's stdout redirection included): each ends in
    ``TimeLimit`` or a structure, never another exception; stdout, the SIGALRM handler and the timer are as
    before."""
    import signal
    import sys

    from cryspnet_gen.sources.cryspnet.build import PyxtalJob, TimeLimit, run_job

    stdout, handler = sys.stdout, signal.getsignal(signal.SIGALRM)
    outcomes = set()
    for i in range(40):
        job = PyxtalJob(
            space_group=62,
            species=("Li", "Fe", "P", "O"),
            num_ions=(4, 4, 4, 16),
            cell=(10.3, 6.0, 4.7, 90.0, 90.0, 90.0),
            entropy=(i,),
            t_factor=0.5,
        )
        try:
            run_job(job, 0.001 + 0.004 * (i % 10), "signal")
            outcomes.add("built")
        except TimeLimit:
            outcomes.add("time limit")
        except RuntimeError:  # pyxtal gave up within the time
            outcomes.add("pyxtal failed")
        assert sys.stdout is stdout and signal.getsignal(signal.SIGALRM) is handler
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    assert "time limit" in outcomes


def test_prerelax_keeps_symmetry_and_keeps_the_lowest_energy(predictor) -> None:
    """prerelax="chgnet" builds a larger pool, relaxes each with its space group kept and keeps the k of lowest
    energy per atom, with the model's rank kept in predicted_rank."""
    cands = generate_candidates(
        "NaCl",
        k=2,
        seed=0,
        predictor=predictor,
        space_groups=[225, 221, 216],
        prerelax="chgnet",
        prerelax_pool=3,
        prerelax_steps=5,
        source="cryspnet",
        **FAST,
    )
    assert len(cands) == 2
    energies = [c.energy_per_atom for c in cands]
    assert all(e is not None and np.isfinite(e) for e in energies)
    assert energies == sorted(energies)
    assert [c.rank for c in cands] == [1, 2]
    assert all(c.predicted_rank in (1, 2, 3) for c in cands)
    for c in cands:
        assert c.relaxed_by == "CHGNet (symmetry kept)"
        assert c.structure.get_space_group_info(symprec=0.01)[1] == c.space_group
        assert any("pre-relaxed" in n for n in c.notes)
        assert Candidate.from_dict(json.loads(json.dumps(c.as_dict()))).energy_per_atom == c.energy_per_atom


def test_relax_symmetric_lowers_the_energy_and_keeps_the_group() -> None:
    pytest.importorskip("chgnet")
    from pymatgen.core import Lattice, Structure

    from cryspnet_gen.relax import relax_symmetric

    # rock salt squeezed 10 %: the relaxation must expand it and keep Fm-3m
    nacl = Structure.from_spacegroup(225, Lattice.cubic(5.1), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    first = relax_symmetric(nacl, steps=1)
    res = relax_symmetric(nacl, steps=15)
    assert res.energy_per_atom < first.energy_per_atom
    assert res.structure.volume > nacl.volume
    assert res.structure.get_space_group_info(symprec=0.01)[1] == 225
    assert 1 <= res.n_steps <= 15
    # a deadline already passed stops after the first force evaluation
    late = relax_symmetric(nacl, steps=15, deadline=time.monotonic() - 1)
    assert late.n_steps == 0 and not late.converged


def test_prerelax_pool_honours_its_time_limit() -> None:
    """The pool's time limit: structures not reached in time keep their unrelaxed structure, come after the relaxed
    ones in the model's order and say why; the whole pool stops within a bounded time."""
    pytest.importorskip("chgnet")
    from pymatgen.core import Lattice, Structure

    from cryspnet_gen.records import CandidateList
    from cryspnet_gen.relax import prerelax_pool, relax_symmetric

    relax_symmetric(  # load CHGNet before timing
        Structure(Lattice.cubic(3.0), ["Na"], [[0, 0, 0]]), steps=1
    )

    def cand(rank: int, a: float) -> Candidate:
        s = Structure.from_spacegroup(225, Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        return Candidate(
            formula="NaCl", rank=rank, bravais="cF", space_group=225, space_group_symbol="Fm-3m",
            probability=0.5 / rank, bravais_probability=0.5, space_group_probability=1.0, structure=s, z=4,
            formula_unit="NaCl",
        )  # fmt: skip

    pool = CandidateList([cand(i, 5.0 + 0.1 * i) for i in range(1, 7)], formula="NaCl")
    start = time.monotonic()
    kept = prerelax_pool(pool, 6, steps=200, fmax=1e-6, timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 8.0  # one step after the limit at most, plus the de-duplication
    relaxed = [c for c in kept if c.energy_per_atom is not None]
    late = [c for c in kept if c.energy_per_atom is None]
    assert late, "a 1 s limit on six 200-step relaxations must leave some unrelaxed"
    assert all("time limit" in c.notes[-1] for c in late)
    assert kept[: len(relaxed)] == relaxed  # relaxed first, by energy, then the rest in the model's order
    assert [c.energy_per_atom for c in relaxed] == sorted(c.energy_per_atom for c in relaxed)
    late_a = [c.structure.lattice.a for c in late]  # unrelaxed: a = 5.0 + 0.1 x model rank
    assert late_a == sorted(late_a)
    assert [c.rank for c in kept] == list(range(1, len(kept) + 1))


def test_prerelax_options_are_checked() -> None:
    with pytest.raises(ValueError, match="prerelax='x'"):
        GenerateOptions(prerelax="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prerelax_pool"):
        GenerateOptions(prerelax="chgnet", prerelax_pool=0)
    with pytest.raises(ValueError, match="prerelax_timeout"):
        GenerateOptions(prerelax_timeout=-1)
    assert GenerateOptions(k=3).pool_size == 3
    assert GenerateOptions(k=3, prerelax="chgnet").pool_size == 12
    assert GenerateOptions(k=3, prerelax="chgnet", prerelax_pool=2).pool_size == 3


def test_prerelax_pool_keeps_one_of_structures_that_relax_to_the_same() -> None:
    """Rock salt built in R-3m (stretched along [111]) relaxes to the cubic rock salt built in Fm-3m: one is kept,
    the one of lower energy, and the k slots go to different structures."""
    pytest.importorskip("chgnet")
    from pymatgen.core import Lattice, Structure

    from cryspnet_gen.records import CandidateList
    from cryspnet_gen.relax import prerelax_pool

    a = 5.64
    cubic = Structure.from_spacegroup(225, Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rhombo = Structure.from_spacegroup(
        166, Lattice.hexagonal(a / 2**0.5, a * 3**0.5 * 1.08), ["Na", "Cl"], [[0, 0, 0], [0, 0, 0.5]]
    )
    cesium = Structure.from_spacegroup(221, Lattice.cubic(3.4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    common = {
        "formula": "NaCl",
        "bravais_probability": 0.5,
        "space_group_probability": 0.5,
        "formula_unit": "NaCl",
    }
    pool = CandidateList(
        [
            Candidate(rank=1, bravais="hR", space_group=166, space_group_symbol="R-3m", probability=0.4,
                      structure=rhombo, z=3, **common),
            Candidate(rank=2, bravais="cP", space_group=221, space_group_symbol="Pm-3m", probability=0.3,
                      structure=cesium, z=1, **common),
            Candidate(rank=3, bravais="cF", space_group=225, space_group_symbol="Fm-3m", probability=0.2,
                      structure=cubic, z=4, **common),
        ],
        formula="NaCl",
    )  # fmt: skip
    kept = prerelax_pool(pool, 3, steps=60, timeout=None)
    assert len(kept) == 2
    assert {c.predicted_rank for c in kept} & {1, 3} and 2 in {c.predicted_rank for c in kept}
    energies = [c.energy_per_atom for c in kept]
    assert energies == sorted(energies)
