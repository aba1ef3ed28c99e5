"""Tests for cryspnet_gen.csp (the CSP match-rate benchmark) and its front end bench/csp.py.

The matching tests build structures by hand; the end-to-end test runs the benchmark on 3 formulas of the real
MP-20 test file with the shipped ``cryspnet-bench`` bundle and short time limits.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from _structures import rocksalt
from pymatgen.core import Lattice, Structure

from cryspnet_gen.csp import (
    FAILURE_REASONS,
    CandidateMatch,
    CspEvaluator,
    CspSettings,
    FormulaResult,
    Reference,
    classify,
    compare_structure,
    describe_reference,
    is_valid_structure,
    load_test_set,
    make_matcher,
    markdown_table,
    match_rms,
    sample_references,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def cesium_chloride_type(a: float = 3.4) -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def perturbed(structure: Structure, seed: int = 0, shift: float = 0.1, strain: float = 0.03) -> Structure:
    rng = np.random.default_rng(seed)
    out = structure.copy()
    out.apply_strain(strain)
    for i in range(len(out)):
        out.translate_sites([i], rng.normal(scale=shift, size=3), frac_coords=False)
    return out


def test_structure_matches_itself_and_a_perturbed_copy():
    ref = rocksalt()
    assert match_rms(ref, ref) == pytest.approx(0.0, abs=1e-6)
    # A supercell at another volume (scale=True) is the same structure.
    big = ref.copy()
    big.make_supercell([1, 1, 2])
    big.scale_lattice(1.1 * big.volume)
    assert match_rms(big, ref) == pytest.approx(0.0, abs=1e-6)
    # Perturbed sites and a strained cell: a match with a small, non-zero RMS distance.
    rms = match_rms(perturbed(ref.get_primitive_structure()), ref)
    assert rms is not None
    assert 0.0 < rms < 0.5


def test_different_structures_do_not_match():
    ref = rocksalt()
    assert match_rms(cesium_chloride_type(), ref) is None
    other = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert match_rms(other, ref) is None
    # Same Z, the cell stretched to c/a = 2: no lattice mapping within ltol=0.3.
    stretched = ref.copy()
    stretched.lattice = Lattice.tetragonal(5.64, 11.28)
    assert match_rms(stretched, ref) is None
    # Other Z: wurtzite-type NaCl has 4 atoms in its primitive cell, rock salt 2.
    wurtzite = Structure.from_spacegroup(
        "P6_3mc", Lattice.hexagonal(4.0, 6.5), ["Na", "Cl"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]]
    )
    assert match_rms(wurtzite, ref) is None


def test_tolerances_are_loose():
    """stol=0.5 is loose: zinc blende (Cl at 1/4 1/4 1/4) matches rock salt (Cl at 1/2 1/2 1/2), RMS 0.43."""
    zincblende = Structure.from_spacegroup(
        "F-43m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.25, 0.25, 0.25]]
    )
    rms = match_rms(zincblende, rocksalt())
    assert rms is not None and 0.4 < rms < 0.5


def test_matcher_settings_are_diffcsp_s():
    m = make_matcher()
    assert (m.stol, m.ltol, m.angle_tol) == (0.5, 0.3, 10.0)
    assert m._primitive_cell and m._scale and not m._supercell


def test_validity_is_diffcsp_s():
    assert is_valid_structure(rocksalt())
    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])  # 0.25 Å apart
    assert not is_valid_structure(close)


def _reference(structure: Structure) -> Reference:
    return Reference(
        material_id="test-1",
        formula=structure.composition.reduced_formula,
        structure=structure,
        e_above_hull=0.0,
    )


def test_compare_structure_diagnostics():
    info = describe_reference(_reference(rocksalt()))
    assert (info.space_group, info.bravais, info.prim_nsites, info.fu_atoms) == (225, "cF", 2, 2)
    assert info.wyckoff == [["Cl", 4], ["Na", 4]]
    m = make_matcher()
    same = compare_structure(rocksalt(6.0), info, m, rank=1, space_group=225, generated_space_group=225)
    assert same.matched and same.lattice_ok and same.wyckoff_same
    assert same.rms == pytest.approx(0.0, abs=1e-6)
    # Another group: no lattice or Wyckoff diagnostics.
    cscl = compare_structure(
        cesium_chloride_type(), info, m, rank=2, space_group=221, generated_space_group=221
    )
    assert not cscl.matched and cscl.lattice_ok is None and cscl.prim_nsites == 2


def _result(cands: list[CandidateMatch], **kw) -> FormulaResult:
    base = dict(
        formula="NaCl",
        material_id="test-1",
        space_group=225,
        bravais="cF",
        nsites=8,
        prim_nsites=2,
        fu_atoms=2,
        wyckoff=[["Cl", 4], ["Na", 4]],
        true_pair_rank=1,
        true_pair_probability=0.5,
        true_group_skip=None,
        n_skipped=0,
        stop_reason=None,
        error=None,
        candidates=cands,
        relaxed=None,
        seconds={"total": 1.0},
    )
    base.update(kw)
    return FormulaResult(**base)


def _cand(rank: int, sg: int, bravais: str, prim: int = 2, rms: float | None = None, **kw) -> CandidateMatch:
    return CandidateMatch(
        rank=rank,
        space_group=sg,
        bravais=bravais,
        generated_space_group=sg,
        pair_rank=rank,
        nsites=prim,
        prim_nsites=prim,
        valid=True,
        rms=rms,
        **kw,
    )


def test_classify_and_summarize():
    cases = {
        "no candidate built": _result([], error="GenerationError: none"),
        "wrong Bravais lattice": _result([_cand(1, 221, "cP")]),
        "wrong space group": _result([_cand(1, 216, "cF")]),
        "true group tried, not built": _result([_cand(1, 221, "cP")], true_group_skip="time limit"),
        "wrong Z": _result([_cand(1, 225, "cF", prim=4)]),
        "lattice off": _result([_cand(1, 225, "cF", lattice_ok=False, wyckoff_same=True)]),
        "Wyckoff arrangement differs": _result([_cand(1, 225, "cF", lattice_ok=True, wyckoff_same=False)]),
        "positions off": _result([_cand(1, 225, "cF", lattice_ok=True, wyckoff_same=True)]),
    }
    invalid = _cand(1, 225, "cF", rms=0.1)
    invalid.valid = False
    cases["matched but invalid"] = _result([invalid])
    for expected, result in cases.items():
        assert expected in FAILURE_REASONS
        assert classify(result, 20) == expected, expected
    # k=1 looks at the first candidate only; the match at rank 2 counts at k=20.
    late = _result([_cand(1, 221, "cP"), _cand(2, 225, "cF", rms=0.2)])
    assert classify(late, 1) == "wrong Bravais lattice"
    assert classify(late, 20) == "matched"
    # The true group was tried after the first candidate's pair: not "tried" at k=1.
    tried_late = _result([_cand(1, 221, "cP"), _cand(3, 216, "cF")], true_group_skip="x", true_pair_rank=2)
    assert classify(tried_late, 1) == "wrong Bravais lattice"
    assert classify(tried_late, 2) == "true group tried, not built"

    results = [*cases.values(), late]
    s1, s20 = summarize(results, 1), summarize(results, 20)
    assert s1["n"] == s20["n"] == len(results)
    assert s1["matched"] == 0 and s20["matched"] == 1
    assert s20["match_rate"] == pytest.approx(1 / len(results))
    assert s20["rmse"] == pytest.approx(0.2)
    assert sum(s20["failures"].values()) == len(results) - 1
    assert s20["space_group_hit_rate"] >= s1["space_group_hit_rate"]
    table = markdown_table([("generated k=1", s1), ("generated k=20", s20)])
    assert table.count("\n") == 3 and "generated k=20" in table
    json.dumps(s20)  # JSON-serialisable
    again = FormulaResult.from_dict(json.loads(json.dumps(late.to_dict())))
    assert again == late


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_csp", REPO_ROOT / "bench" / "csp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared_data
def test_benchmark_runs_on_three_real_formulas(shared_data: Path, tmp_path: Path, capsys):
    refs = load_test_set("mp20", shared_data)
    assert len({r.formula for r in refs}) == len(refs)
    sample = sample_references(refs, 3, seed=0)
    assert [r.formula for r in sample] == [r.formula for r in sample_references(refs, 10, seed=0)[:3]]

    bench = _bench_module()
    argv = ["--set", "mp20", "--n", "3", "--k", "3", "--timeout", "6", "--timeout-per-group", "2"]
    argv += ["--out", str(tmp_path), "--data-dir", str(shared_data)]
    bench.main(argv)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3
    rows = [FormulaResult.from_dict(json.loads(x)) for x in lines]
    assert sorted(r.formula for r in rows) == sorted(r.formula for r in sample)
    for r in rows:
        assert len(r.candidates) <= 3
        assert [c.rank for c in r.candidates] == list(range(1, len(r.candidates) + 1))
        assert all(c.rms is None or 0 <= c.rms < 0.5 for c in r.candidates)
        assert classify(r, 3) in (*FAILURE_REASONS, "matched")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_done"] == 3
    s3 = summary["summaries"]["generated k=3"]
    assert 0 <= summary["summaries"]["generated k=1"]["match_rate"] <= s3["match_rate"] <= 1
    assert "| generated k=3 | 3 | 3 |" in capsys.readouterr().out

    # Resuming does nothing new; other options in the same folder are refused.
    bench.main(argv)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
    with pytest.raises(SystemExit):
        bench.main([*argv[:-4], "--seed", "1", "--out", str(tmp_path), "--data-dir", str(shared_data)])


@pytest.mark.shared_data
def test_relaxed_candidates_are_compared(shared_data: Path):
    pytest.importorskip("chgnet")
    from cryspnet_gen.predict import load_predictor

    (ref,) = [r for r in load_test_set("mp20", shared_data) if r.formula == "MgNiF6"]
    settings = CspSettings(k=1, timeout=6, timeout_per_group=3, max_atoms=80, relax_top=1, relax_steps=3)
    result = CspEvaluator(load_predictor("cryspnet-bench"), settings).evaluate(ref)
    assert result.relaxed is not None and len(result.relaxed) == len(result.candidates) == 1
    relaxed = result.relaxed[0]
    assert relaxed.error is None and relaxed.n_steps is not None and relaxed.n_steps <= 3
    assert relaxed.generated_space_group == result.candidates[0].space_group
    assert classify(result, 1, relaxed=True) in (*FAILURE_REASONS, "matched")
    assert "relaxation" in summarize([result], 1, relaxed=True)


@pytest.mark.shared_data
def test_benchmark_with_templates_and_both(shared_data: Path, tmp_path: Path):
    """--source templates and --source both run, and 'both' reuses the saved CRYSPNet candidates."""
    import itertools

    from cryspnet_gen.data import read_test_formulas
    from cryspnet_gen.sources.templates import build_store, records_from_data_dir

    tests = set().union(*read_test_formulas(shared_data).values())
    store = tmp_path / "store"
    records = itertools.islice(records_from_data_dir(shared_data), 1500)
    build_store(records, store, exclude_formulas=tests, progress=False)
    bench = _bench_module()
    common = ["--set", "mp20", "--n", "2", "--k", "3", "--timeout", "6", "--timeout-per-group", "2"]
    common += ["--data-dir", str(shared_data)]
    cry = tmp_path / "cryspnet"
    bench.main([*common, "--out", str(cry)])
    saved = [json.loads(x) for x in (cry / "candidates.jsonl").read_text().splitlines()]
    assert len(saved) == 2 and all(len(r["candidates"]) <= 3 for r in saved)

    tmpl = tmp_path / "templates"
    bench.main([*common, "--source", "templates", "--templates", str(store), "--out", str(tmpl)])
    rows = [FormulaResult.from_dict(json.loads(x)) for x in (tmpl / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(c.source == "template" and c.template_id for r in rows for c in r.candidates)
    summary = json.loads((tmpl / "summary.json").read_text())
    assert set(summary["summaries"]) == {"templates k=1", "templates k=3"}

    both = tmp_path / "both"
    bench.main(
        [*common, "--source", "both", "--templates", str(store), "--out", str(both), "--reuse", str(cry)]
    )
    rows = [FormulaResult.from_dict(json.loads(x)) for x in (both / "results.jsonl").read_text().splitlines()]
    by_formula = {r["formula"]: r for r in saved}
    for r in rows:
        assert 1 <= len(r.candidates) <= 3
        cry_ids = {(c["space_group"], c["rank"]) for c in by_formula[r.formula]["candidates"]}
        for c in r.candidates:
            assert c.source in ("template", "cryspnet")
        # every CRYSPNet candidate in the merged list is one of the saved ones (nothing was regenerated)
        assert all(
            c.generated_space_group in {sg for sg, _ in cry_ids}
            for c in r.candidates
            if c.source == "cryspnet"
        )
