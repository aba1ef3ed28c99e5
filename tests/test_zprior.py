"""Formula units per cell (Z) learned from known crystals: the prior, its bundle file, its use by CRYSPNet cells."""

from __future__ import annotations

import gzip
import shutil

import pandas as pd
import pytest

from cryspnet_gen.bundle import BundleError, read_manifest, write_z_prior
from cryspnet_gen.formula import formula_unit
from cryspnet_gen.sources.cryspnet.cells import compatible, plan_cells, z_options
from cryspnet_gen.zprior import ZPrior
from tests._model_fixtures import shared_bundle

# P2_1/c (14) AB compounds: Z = 2 fits the 2a-2d sites, but known ones mostly have Z = 4 (general positions).
ROWS = [
    ("FeS", 14, 4),
    ("CoSe", 14, 4),
    ("NiTe", 14, 4),
    ("MnO", 14, 2),
    ("NaCl", 225, 4),
    ("SrTiO3", 221, 1),
]


def _prior() -> ZPrior:
    formulas, groups, zs = zip(*ROWS, strict=True)
    return ZPrior.from_rows(formulas, groups, zs)


def test_prior_orders_by_known_crystals_and_falls_back_to_the_smallest() -> None:
    prior = _prior()
    assert prior.rows == len(ROWS)
    fu = formula_unit("MnS", 200)
    assert prior.order(14, fu, [2, 4, 6, 8]) == [4, 2, 6, 8]
    assert prior.ranking(14, fu) == [4, 2]
    # another formula type in the group: the (group, atoms per formula unit) level still knows AB compounds
    assert prior.order(14, formula_unit("KBr", 200), [2, 4]) == [4, 2]
    # a group never seen: smallest first
    assert prior.order(62, fu, [8, 4]) == [4, 8]
    assert prior.ranking(62, fu) == []


def test_prior_json_round_trip_and_bad_text() -> None:
    prior = _prior()
    again = ZPrior.from_json(prior.to_json())
    assert again.to_json() == prior.to_json()
    fu = formula_unit("MnS", 200)
    assert again.order(14, fu, [2, 4]) == prior.order(14, fu, [2, 4])
    for bad in ("not json", '{"format": "something else"}', '{"format": "cryspnet-gen z prior"}'):
        with pytest.raises(ValueError):
            ZPrior.from_json(bad)


def test_rows_that_cannot_be_parsed_are_skipped() -> None:
    prior = ZPrior.from_rows(["NaCl", "Xx2O", "??"], [225, 225, 225], [4, 4, 4])
    assert prior.rows == 1


@pytest.mark.parametrize(
    ("formula", "group", "ranking"),
    [
        ("MnS", 14, [4, 2]),
        ("MnS", 14, [3, 5, 4]),
        ("SrTiO3", 221, [7, 1]),
        ("Li7La3Zr2O12", 230, [8]),
        ("Si", 227, [999, 8]),
    ],
)
def test_z_options_put_ranked_compatible_values_first_and_never_an_incompatible_one(
    formula: str, group: int, ranking: list[int]
) -> None:
    fu = formula_unit(formula, 200)
    zs = z_options(group, fu, 200, ranking)
    assert 1 <= len(zs) <= 2 and len(set(zs)) == len(zs)
    assert all(compatible(group, tuple(c * z for c in fu.counts)) and z * fu.n_atoms <= 200 for z in zs)
    ranked = [
        z for z in ranking if z * fu.n_atoms <= 200 and compatible(group, tuple(c * z for c in fu.counts))
    ]
    assert zs[: len(ranked[:2])] == ranked[:2]
    assert z_options(group, fu, 200) == sorted(z_options(group, fu, 200))  # no ranking: smallest first


def test_plan_cells_uses_the_ranking() -> None:
    fu = formula_unit("MnS", 200)
    assert plan_cells(fu, 14, "mP", None, 20.0, 200).zs[0] == 2
    assert plan_cells(fu, 14, "mP", None, 20.0, 200, [4, 2]).zs == (4, 2)


def test_bundle_z_prior_round_trip_predictions_and_tampering(tmp_path) -> None:
    from cryspnet_gen.predict import load_predictor

    plain = load_predictor(path=shared_bundle())
    assert plain.z_prior is None
    [pred] = plain.predict(["MnS"], top_bravais=14, top_space_groups=3)
    assert all(lat.z_ranking == [] for lat in pred.lattices)

    bundle = tmp_path / "with-prior"
    shutil.copytree(shared_bundle(), bundle)
    write_z_prior(bundle, _prior().to_json(), source="test rows")
    assert read_manifest(bundle)["z_prior"]["source"] == "test rows"
    assert "z_prior.json.gz" in (bundle / "README.md").read_text()
    predictor = load_predictor(path=bundle)
    assert predictor.z_prior is not None and predictor.z_prior.rows == len(ROWS)
    [pred] = predictor.predict(["MnS"], top_bravais=14, top_space_groups=230)
    mp = next(lat for lat in pred.lattices if lat.bravais == "mP")
    assert mp.z_ranking_of(14) == [4, 2]
    assert len(mp.z_ranking) == len(mp.space_groups)
    again = type(pred).from_dict(pred.as_dict())
    assert next(lat for lat in again.lattices if lat.bravais == "mP").z_ranking_of(14) == [4, 2]

    tampered = tmp_path / "tampered"  # a new folder: a loaded bundle is cached per folder
    shutil.copytree(bundle, tampered)
    (tampered / "z_prior.json.gz").write_bytes(gzip.compress(b'{"format": "tampered"}'))
    with pytest.raises(BundleError, match="Z prior"):
        load_predictor(path=tampered)


def test_add_z_prior_counts_only_training_rows_of_a_bench_frame(tmp_path) -> None:
    from cryspnet_gen.train.assemble import add_z_prior

    bundle = tmp_path / "b"
    shutil.copytree(shared_bundle(), bundle)
    frame = pd.DataFrame(
        {
            "formula": ["FeS", "CoSe", "NiS", "MnS"],
            "space_group": [14, 14, 14, 14],
            "z": [4, 4, 2, None],
            "split": ["train", "train", "val", "test_mp20"],
        }
    )
    add_z_prior(bundle, frame)
    info = read_manifest(bundle)["z_prior"]
    assert info["source"].startswith("2 train rows")
    add_z_prior(bundle, frame[frame["split"] != "test_mp20"])  # a full split: train and val rows
    assert read_manifest(bundle)["z_prior"]["source"].startswith("3 train + val rows")


def test_generation_uses_the_prior_only_when_asked(tmp_path) -> None:
    from cryspnet_gen.generate import generate_candidates
    from cryspnet_gen.predict import load_predictor

    bundle = tmp_path / "with-prior"
    shutil.copytree(shared_bundle(), bundle)
    # known P2_1/c AB crystals with Z = 8: a value the smallest-first rule never tries (it tries 2, then 4)
    write_z_prior(bundle, ZPrior.from_rows(["FeS"] * 3, [14] * 3, [8] * 3).to_json(), source="test rows")
    predictor = load_predictor(path=bundle)
    common = {"k": 1, "space_groups": [14], "source": "cryspnet", "predictor": predictor, "timeout": None}
    [smallest] = generate_candidates("MnS", **common)
    [prior] = generate_candidates("MnS", z_rule="prior", **common)
    assert smallest.z in (2, 4) and prior.z == 8
    assert len(prior.structure) == 16
    with pytest.raises(ValueError, match="z_rule"):
        generate_candidates("MnS", z_rule="largest", **common)
