"""Tests of cryspnet_gen.data on sampled copies of the real data and on synthetic files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryspnet_gen import data as D
from cryspnet_gen.config import DataDirError, resolve_data_dir
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, bravais_of

PER_LATTICE = 6
N_BENCH = 30


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        frame.to_csv(fh, index=False)


@pytest.fixture(scope="session")
def real_lattice(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(
        shared_data / D.MP_LATTICE, keep_default_na=False, na_values={"ehull_formula_spg": [""]}
    )


@pytest.fixture(scope="session")
def mini_data(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, real_lattice: pd.DataFrame
) -> Path:
    """A data folder with a few real rows of every Bravais lattice and of every benchmark file.

    The MP part also holds the structures of the first test rows under their own ids, so that test formulas
    appear among the MP polymorphs and the split has something to exclude.
    """
    root = tmp_path_factory.mktemp("mini_data")
    part1 = pd.read_csv(shared_data / D.MP_STRUCTURES[0])
    lat = real_lattice[real_lattice["material_id"].isin(part1["material_id"])].copy()
    lat["bravais"] = [bravais_of(int(n)) for n in lat["spg_number"]]
    picked = pd.concat(g.sample(min(len(g), PER_LATTICE), random_state=1) for _, g in lat.groupby("bravais"))
    ids = set(picked["material_id"])
    mp = part1[part1["material_id"].isin(ids)]
    bench = {}
    for source, rel in D.BENCHMARK_FILES.items():
        frame = pd.read_csv(shared_data / rel).head(N_BENCH)
        bench[source] = frame
        _write_csv(frame, root / rel)
    test_rows = bench["mpts52_test"].head(8)[["material_id", "cif"]]
    mp = pd.concat([mp, test_rows[~test_rows["material_id"].isin(mp["material_id"])]], ignore_index=True)
    # one malformed row: reported and skipped, not fatal
    mp = pd.concat(
        [mp, pd.DataFrame({"material_id": ["mp-bad"], "cif": ["data_broken\n_cell_length_a 1\n"]})]
    )
    _write_csv(mp.iloc[: len(mp) // 2], root / D.MP_STRUCTURES[0])
    _write_csv(mp.iloc[len(mp) // 2 :], root / D.MP_STRUCTURES[1])
    for rel in D.MP_STRUCTURES[2:]:
        _write_csv(mp.iloc[:0], root / rel)
    _write_csv(real_lattice[real_lattice["material_id"].isin(set(mp["material_id"]))], root / D.MP_LATTICE)
    cod = pd.read_csv(shared_data / D.COD_LABELS, dtype={"cod_id": str})
    _write_csv(cod.head(3000), root / D.COD_LABELS)
    return root


@pytest.fixture(scope="session")
def mini_cache(tmp_path_factory: pytest.TempPathFactory):
    """A private cache folder for the sampled builds, set only while a test of this module runs."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _private_cache(mini_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYSPNET_GEN_CACHE_DIR", str(mini_cache))


@pytest.fixture(scope="session")
def mini_build(mini_data: Path, mini_cache: Path) -> D.DataBuild:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRYSPNET_GEN_CACHE_DIR", str(mini_cache))
        return D.build(mini_data, workers=2, progress=False)


# ----------------------------------------------------------------------------------------------------------


def test_resolve_data_dir_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataDirError, match="nope"):
        resolve_data_dir(missing)
    monkeypatch.setenv("CRYSPNET_GEN_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    with pytest.raises(DataDirError, match=r"mp2025_topology/lattice\.csv\.gz"):
        D.build_structure_table(progress=False)


def test_malformed_file_is_a_clear_error(tmp_path: Path, mini_data: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(mini_data, copy)
    _write_csv(pd.DataFrame({"id": [1], "text": ["x"]}), copy / D.MP_STRUCTURES[0])
    with pytest.raises(D.DataFormatError, match=r"structures_part1.*cif"):
        D.build_structure_table(copy, use_cache=False, progress=False)


def test_fast_cif_reader_agrees_with_pymatgen(shared_data: Path) -> None:
    from pymatgen.io.cif import CifParser

    frame = pd.read_csv(shared_data / D.BENCHMARK_FILES["mp20_test"]).head(40)
    for cif in frame["cif"]:
        lattice, frac, numbers = D._read_p1_cif(cif)
        ref = CifParser.from_str(cif).parse_structures(primitive=False)[0]
        assert np.allclose(lattice, ref.lattice.matrix, atol=1e-6)
        assert np.allclose(frac, ref.frac_coords, atol=1e-4)  # pymatgen snaps near-ideal values
        assert list(numbers) == [s.specie.Z for s in ref]


def test_cif_reader_falls_back_for_symmetrised_cif() -> None:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cif = str(CifWriter(nacl, symprec=0.01))
    with pytest.raises(ValueError):
        D._read_p1_cif(cif)  # has symmetry operations: not for the fast path
    lattice, _frac, numbers = D.read_cif_cell(cif)
    assert len(numbers) == 8
    assert abs(np.linalg.det(lattice)) == pytest.approx(5.64**3, rel=1e-6)
    with pytest.raises(ValueError, match="unreadable CIF"):
        D.read_cif_cell("data_x\n_cell_length_a 3\nnot a cif at all")


def test_structure_table(mini_build: D.DataBuild, real_lattice: pd.DataFrame) -> None:
    frame = mini_build.structures.frame
    assert list(frame.columns) == list(D.STRUCTURE_COLUMNS)
    assert set(frame["source"]) == {"mp2025", *D.BENCHMARK_FILES}
    # the malformed row is reported, the others kept
    assert [e[1] for e in mini_build.structures.errors] == ["mp-bad"]
    assert set(frame["bravais"]) == set(BRAVAIS_LATTICES)
    # symmetry agrees with the table's own spglib (symprec 0.1) labels
    mp = frame[frame["source"] == "mp2025"].merge(real_lattice, on="material_id", suffixes=("", "_ref"))
    assert (mp["space_group"] == mp["spg_number"]).mean() >= 0.95
    # cells: the conventional cell holds conv_nsites atoms at the CIF's volume per atom
    from cryspnet_gen.symmetry import conventional_volume

    vol = np.array([conventional_volume(row) for row in frame[list(D.CELL_COLUMNS)].to_numpy()])
    # spglib idealises the cell at symprec 0.1, which moves the volume by up to a few 0.1%
    assert np.allclose(vol / frame["conv_nsites"], frame["volume_per_atom"], rtol=5e-3)
    own = ~mp["material_id"].isin(
        frame.loc[frame["source"] != "mp2025", "material_id"]
    )  # not injected test rows
    assert np.allclose((mp["volume"] / mp["nsites_ref"])[own], mp["volume_per_atom"][own], rtol=1e-4)
    # where no reduction applies (cubic, tetragonal, hexagonal), the table's a and c are ours
    simple = mp[mp["bravais"].str[0].isin(["c", "t"]) | (mp["bravais"] == "hP")]
    simple = simple[simple["space_group"] == simple["spg_number"]]
    assert len(simple) >= 15
    assert np.allclose(simple["a"], simple["a_ref"], rtol=2e-3)
    assert np.allclose(simple["c"], simple["c_ref"], rtol=2e-3)
    # Z is a whole number of formula units
    assert np.allclose(frame["z"], np.round(frame["z"])) and (frame["z"] >= 1).all()
    # monoclinic cells in the reduced convention
    mono = frame[frame["bravais"].str[0] == "m"]
    assert ((mono["beta"] >= 90) & (mono["beta"] < 125)).all()


def test_structure_table_cache(mini_data: Path, mini_build: D.DataBuild) -> None:
    again = D.build_structure_table(mini_data, progress=False)
    assert again.from_cache
    pd.testing.assert_frame_equal(again.frame, mini_build.structures.frame)
    assert [tuple(e) for e in again.errors] == [tuple(e) for e in mini_build.structures.errors]


def test_label_table_and_policies(mini_build: D.DataBuild) -> None:
    labels = mini_build.labels
    assert labels["formula"].is_unique
    s = mini_build.structures.frame
    mp = s[s["source"] == "mp2025"]
    # the MP label is the lowest-energy polymorph
    for formula, group in mp.groupby("formula"):
        row = labels.set_index("formula").loc[formula]
        best = group.sort_values("e_above_hull", na_position="last").iloc[0]
        assert (
            row["mp_space_group"] == best["space_group"] or group["e_above_hull"].nsmallest(2).nunique() == 1
        )
    n_mp = labels["mp_material_id"].notna().sum()
    only_cod = (labels["mp_material_id"].isna() & labels["cod_space_group"].notna()).sum()
    r_mp = D.policy_labels(labels, s, "mp")
    r_both = D.policy_labels(labels, s, "mp+cod")
    r_exp = D.policy_labels(labels, s, "experimental")
    assert len(r_mp) == n_mp and set(r_mp["label_source"]) == {"mp"}
    assert len(r_both) == n_mp + only_cod
    assert r_both.loc[r_both["label_source"] == "cod", "a"].isna().all()
    assert r_both.loc[r_both["label_source"] == "mp", "a"].notna().all()
    # experimental: COD's group wins wherever COD has the formula
    merged = r_exp.merge(labels, on="formula")
    has_cod = merged["cod_space_group"].notna()
    assert (merged.loc[has_cod, "space_group"] == merged.loc[has_cod, "cod_space_group"]).all()
    assert all(bravais_of(int(g)) == b for g, b in zip(r_exp["space_group"], r_exp["bravais"], strict=True))
    with pytest.raises(ValueError, match="Unknown label"):
        D.policy_labels(labels, s, "icsd")  # type: ignore[arg-type]


def test_cod_labels_mode_and_ties(tmp_path: Path) -> None:
    cod = pd.DataFrame(
        {
            "chemsys": ["Na-Cl"] * 4 + ["O-Ti"] * 2 + ["X"],
            "formula": ["NaCl", "Na2Cl2", "NaCl", "NaCl", "TiO2", "TiO2", "Xx2"],
            "cod_id": ["1", "2", "3", "4", "5", "6", "7"],
            "spg_number": [225, 225, 221, 225, 136, 141, 1],
            "mp_e_above_hull": [0.0] * 7,
        }
    )
    _write_csv(cod, tmp_path / D.COD_LABELS)
    table, bad = D.read_cod_labels(tmp_path)
    table = table.set_index("formula")
    assert table.loc["NaCl", "cod_space_group"] == 225 and table.loc["NaCl", "cod_count"] == 4
    assert table.loc["NaCl", "cod_modal_fraction"] == pytest.approx(0.75)
    assert table.loc["TiO2", "cod_space_group"] == 141  # tie -> higher group number
    assert bad == ["Xx2"]


def test_bench_split_keeps_test_formulas_out(mini_build: D.DataBuild) -> None:
    frame = mini_build.frame("bench")
    assert set(frame["split"]) == {"train", "val", "test_mpts52", "test_mp20"}
    test = set().union(*mini_build.test_formulas.values())
    trainval = set(frame.loc[frame["split"].isin(["train", "val"]), "formula"])
    assert trainval and not trainval & test
    # the mini MP part holds test structures: they must have been excluded, not absent
    mp_formulas = set(mini_build.structures.frame.query("source == 'mp2025'")["formula"])
    assert mp_formulas & test
    for policy in ("mp+cod", "experimental"):
        f = mini_build.frame("bench", policy=policy)
        assert not set(f.loc[f["split"].isin(["train", "val"]), "formula"]) & test
    full = mini_build.frame("full")
    assert set(full["split"]) == {"train", "val"}
    assert mp_formulas <= set(full["formula"])
    # training frame schema that the models rely on
    for col in (
        "formula",
        "split",
        "bravais",
        "space_group",
        *D.CELL_COLUMNS,
        "volume_per_atom",
        "label_source",
    ):
        assert col in frame.columns


def test_split_is_seeded_and_stable() -> None:
    formulas = [f"Li{i}O" for i in range(1, 4001)]
    a = D.assign_splits(formulas, "full", seed=3)
    b = D.assign_splits(list(reversed(formulas)), "full", seed=3)
    c = D.assign_splits(formulas, "full", seed=4)
    assert a == b and a != c
    frac = sum(v == "val" for v in a.values()) / len(a)
    assert 0.08 < frac < 0.12
    sub = D.assign_splits(formulas[:100], "full", seed=3)
    assert all(sub[f] == a[f] for f in sub)  # independent of the other formulas present
    with pytest.raises(ValueError, match="Unknown split"):
        D.assign_splits(formulas, "random")  # type: ignore[arg-type]


def test_no_test_formula_in_full_bench_training(shared_data: Path, real_lattice: pd.DataFrame) -> None:
    """On the complete data: every formula of MP and COD that is a test formula is assigned to test."""
    tests = D.read_test_formulas(shared_data)
    assert len(tests["test_mpts52"]) > 3000 and len(tests["test_mp20"]) > 3000
    cod, _ = D.read_cod_labels(shared_data)
    mp = {D.normalize_formula(f) for f in real_lattice["formula"].unique()}
    universe = (mp | set(cod["formula"])) - {None}
    assignment = D.assign_splits(universe, "bench", test_formulas=tests)  # type: ignore[arg-type]
    trainval = {f for f, s in assignment.items() if s != "test"}
    assert not trainval & (tests["test_mpts52"] | tests["test_mp20"])
    # and the test formulas really occur in MP (so excluding them is doing something)
    assert len(mp & tests["test_mp20"]) > 0.9 * len(tests["test_mp20"])
