from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _model_fixtures import cached_table, make_formulas, shared_bundle, train_tiny
from monty.json import MontyDecoder, MontyEncoder

from cryspnet_gen.predict import (
    BundleError,
    Prediction,
    Predictor,
    available_bundles,
    is_metal,
    load_predictor,
    predictions_to_dataframe,
    read_bundle,
    save_bundle,
    write_test_metrics,
)
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES, bravais_of, from_parameters

FORMULAS = ["LiMnO2", "Xx2", "Fe3Al", "NaCl", "Li7La3Zr2O12", "", "SrTiO3", "Cu"]
BAD = {1, 5}


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def bundle() -> Path:
    return shared_bundle()


@pytest.fixture(scope="module")
def predictor(bundle) -> Predictor:
    return load_predictor(path=bundle)


@pytest.fixture(scope="module")
def preds(predictor) -> list[Prediction]:
    return predictor.predict(FORMULAS, top_bravais=3, top_space_groups=2)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    return dst


# -- bundle files -------------------------------------------------------------------------------------


def test_bundle_layout(bundle):
    names = {p.name for p in bundle.iterdir()}
    assert {
        "manifest.json",
        "README.md",
        "bravais_master.safetensors",
        "bravais_metal.safetensors",
        "bravais_oxide.safetensors",
        "space_group.safetensors",
        "lattice.safetensors",
        "volume.safetensors",
    } <= names
    manifest = json.loads((bundle / "manifest.json").read_text())
    for key in ("name", "version", "format_version", "features", "tasks", "weights", "packages", "metrics"):
        assert key in manifest
    assert set(manifest["packages"]) >= {"torch", "numpy", "pymatgen", "matminer", "cryspnet-gen"}
    assert manifest["split"] == "synthetic"
    assert all(len(w["sha256"]) == 64 for w in manifest["weights"].values())
    assert not list(bundle.glob("*.pt")) and not list(bundle.glob("*.pkl"))


def test_round_trip_gives_same_predictions(bundle, predictor, tmp_path):
    manifest, tensors = read_bundle(bundle)
    copy = save_bundle(tmp_path / "copy", manifest, tensors, weights_dtype="float32")
    again = load_predictor(path=copy)
    assert again is not predictor
    a = predictor.predict(FORMULAS, top_bravais=14, top_space_groups=230)
    b = again.predict(FORMULAS, top_bravais=14, top_space_groups=230)
    assert [p.as_dict() for p in a] == [p.as_dict() for p in b]


def test_load_predictor_caches_by_path(bundle, predictor):
    assert load_predictor(path=bundle) is predictor
    assert load_predictor(path=str(bundle) + "/") is predictor


def test_float16_storage_within_tolerance_and_training_deterministic(tmp_path):
    frame, X, labels = cached_table()
    kwargs: dict[str, Any] = {"seed": 3, "settings": {}, "subset_models": [], "n_members": 1, "max_epochs": 4}
    a = train_tiny(frame, X, labels, tmp_path / "a", name="t", **kwargs)
    b = train_tiny(frame, X, labels, tmp_path / "b", name="t", **kwargs)
    c = train_tiny(frame, X, labels, tmp_path / "c", name="t", weights_dtype="float32", **kwargs)
    wa = json.loads((a / "manifest.json").read_text())["weights"]
    wb = json.loads((b / "manifest.json").read_text())["weights"]
    assert wa == wb  # same seed -> byte-identical weight files
    half, full = load_predictor(path=a), load_predictor(path=c)
    feats = X[:300]
    pa, _ = half.bravais_probabilities(feats)
    pc, _ = full.bravais_probabilities(feats)
    np.testing.assert_allclose(pa, pc, atol=1e-2)
    va, _ = half.volume_per_atom(feats)
    vc, _ = full.volume_per_atom(feats)
    np.testing.assert_allclose(va, vc, rtol=1e-2)
    size = {f: (c / f).stat().st_size for f in wa}
    assert sum((a / f).stat().st_size for f in wa) < 0.7 * sum(size.values())


def test_corrupt_weight_file_names_the_file(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    target = bad / "lattice.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"lattice\.safetensors.*(corrupt|sha256)"):
        load_predictor(path=bad)


def test_truncated_weight_file_names_the_file(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    target = bad / "volume.safetensors"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"volume\.safetensors.*truncated"):
        load_predictor(path=bad)


def test_missing_weight_file(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    (bad / "space_group.safetensors").unlink()
    with pytest.raises(BundleError, match=r"space_group\.safetensors is missing"):
        load_predictor(path=bad)


def test_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match=r"manifest\.json not found"):
        load_predictor(path=tmp_path)


def test_broken_manifest_json(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_predictor(path=bad)


def test_newer_format_version_is_refused(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["format_version"] += 1
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"format version.*upgrade"):
        load_predictor(path=bad)


def test_mismatched_feature_labels(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["features"]["labels"][3] = "MagpieData mean Shoe size"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"Shoe size.*retrain"):
        load_predictor(path=bad)


def test_weights_not_fitting_the_network_arguments(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["tasks"]["volume"]["model_args"]["hidden"] = [7]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"volume\.safetensors"):
        load_predictor(path=bad)


def test_unknown_bundle_name():
    with pytest.raises(ValueError, match="Unknown name='no-such-bundle'; available"):
        load_predictor("no-such-bundle")


def test_missing_default_bundle_explains_how_to_train(monkeypatch):
    import cryspnet_gen.predict as predict_module

    monkeypatch.setattr(predict_module, "DEFAULT_BUNDLE", "not-installed-bundle")
    assert "not-installed-bundle" not in available_bundles()
    with pytest.raises(BundleError, match="cryspnet-gen train"):
        load_predictor()


# -- predictions --------------------------------------------------------------------------------------


def test_one_prediction_per_input_in_order_with_errors(preds):
    assert [p.formula for p in preds] == FORMULAS
    for i, p in enumerate(preds):
        if i in BAD:
            assert isinstance(p.error, str) and p.error
            assert p.bravais_probabilities == {} and p.lattices == [] and p.space_group_ranking() == []
        else:
            assert p.error is None
            assert p.model == "master" and p.bundle == "tiny"


def test_bravais_ranking_sorted_and_normalised(preds):
    for p in preds:
        if p.error:
            continue
        ranking = p.bravais_ranking()
        assert [b for b, _ in ranking] != [] and sorted(b for b, _ in ranking) == sorted(BRAVAIS_LATTICES)
        probs = [q for _, q in ranking]
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= q <= 1 for q in probs)
        assert sum(probs) == pytest.approx(1, abs=1e-6)
        assert [lat.bravais for lat in p.lattices] == [b for b, _ in ranking[:3]]


def test_space_group_ranking_joint_and_consistent(preds):
    for p in preds:
        if p.error:
            continue
        ranking = p.space_group_ranking()
        probs = [q for _, q in ranking]
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= q <= 1 for q in probs)
        assert sum(probs) <= 1 + 1e-9
        for lat in p.lattices:
            assert len(lat.space_groups) <= 2
            assert all(bravais_of(g) == lat.bravais for g in lat.space_groups)
            conditional = lat.space_group_probabilities
            assert conditional == sorted(conditional, reverse=True)
        groups = p.ranked_groups()
        assert [(g.space_group, g.probability) for g in groups] == ranking
        for g in groups:
            assert g.probability == pytest.approx(g.bravais_probability * g.space_group_probability)


def test_all_pairs_sum_to_one(predictor):
    for p in predictor.predict(["LiMnO2", "Fe3Al", "Cu"], top_bravais=14, top_space_groups=230):
        ranking = p.space_group_ranking()
        assert sum(q for _, q in ranking) == pytest.approx(1, abs=1e-6)
        assert len({g for g, _ in ranking}) == len(ranking)


def test_lattice_parameters_and_cells(preds):
    p = preds[0]
    for lat in p.lattices:
        names = PARAMETER_NAMES[lat.bravais]
        params = p.lattice_parameters(lat.bravais)
        assert tuple(params) == names
        std = p.lattice_parameters(lat.bravais, std=True)
        assert tuple(std) == names
        if lat.cell is None:  # lattice without a regressor in the tiny bundle
            assert all(v is None for v in params.values())
            continue
        assert all(v is not None and v > 0 for v in params.values())
        assert all(v is not None and v >= 0 for v in std.values())
        expected = from_parameters(lat.bravais, [params[n] for n in names])
        np.testing.assert_allclose(lat.cell, expected, rtol=1e-9)
        assert lat.cell_std is not None and len(lat.cell_std) == 6
    with pytest.raises(KeyError, match="top_bravais"):
        p.lattice_parameters(
            next(b for b in BRAVAIS_LATTICES if b not in {lat.bravais for lat in p.lattices})
        )
    assert p.volume_per_atom is not None and p.volume_per_atom > 0
    assert p.volume_per_atom_std is not None and p.volume_per_atom_std >= 0


def test_prediction_json_round_trip(preds):
    for p in preds:
        text = json.dumps(p, cls=MontyEncoder)
        back = json.loads(text, cls=MontyDecoder)
        assert isinstance(back, Prediction)
        assert back == p
        assert Prediction.from_dict(p.as_dict()) == p


def test_batch_and_single_predictions_agree(predictor, preds):
    single = predictor.predict("SrTiO3", top_bravais=3, top_space_groups=2)
    assert len(single) == 1
    a, b = single[0].as_dict(), preds[6].as_dict()
    assert a["bravais_probabilities"] == pytest.approx(b["bravais_probabilities"], abs=1e-5)
    ra, rb = single[0].space_group_ranking(), preds[6].space_group_ranking()
    assert [g for g, _ in ra] == [g for g, _ in rb]
    assert [q for _, q in ra] == pytest.approx([q for _, q in rb], abs=1e-5)


def test_metal_and_oxide_models(predictor):
    assert predictor.bravais_models == ("master", "metal", "oxide")
    master = predictor.predict(["Fe3Al", "LiMnO2"])
    metal = predictor.predict(["Fe3Al"], model="metal")[0]
    oxide = predictor.predict(["LiMnO2"], model="oxide")[0]
    assert is_metal("Fe3Al")
    assert metal.model == "metal" and oxide.model == "oxide"
    assert metal.bravais_probabilities != master[0].bravais_probabilities
    assert oxide.bravais_probabilities != master[1].bravais_probabilities
    assert sum(metal.bravais_probabilities.values()) == pytest.approx(1)
    with pytest.raises(ValueError, match="model"):
        predictor.predict(["Fe"], model="nitride")


def test_bad_options(predictor):
    with pytest.raises(ValueError, match="top_bravais"):
        predictor.predict(["Fe"], top_bravais=0)
    with pytest.raises(ValueError, match="top_bravais"):
        predictor.predict(["Fe"], top_bravais=15)
    with pytest.raises(ValueError, match="top_space_groups"):
        predictor.predict(["Fe"], top_space_groups=0)


def test_missing_subset_model_is_a_clear_error(bundle, tmp_path):
    manifest, tensors = read_bundle(bundle)
    del manifest["tasks"]["bravais"]["metal"]
    del tensors["bravais_metal.safetensors"]
    path = save_bundle(tmp_path / "nometal", manifest, tensors)
    pred = load_predictor(path=path)
    with pytest.raises(ValueError, match="no 'metal' Bravais model"):
        pred.predict(["Fe3Al"], model="metal")


def test_dataframe(preds):
    frame = predictions_to_dataframe(preds)
    n_pairs = sum(len(p.space_group_ranking()) or 1 for p in preds)
    assert len(frame) == n_pairs
    assert list(dict.fromkeys(frame["formula"])) == list(dict.fromkeys(FORMULAS))
    good = frame[frame["error"].isna()]
    assert good["probability"].between(0, 1).all()
    assert (
        good["probability"] - good["bravais_probability"] * good["space_group_probability"]
    ).abs().max() < 1e-9
    for _, rows in good.groupby("index"):
        assert rows["probability"].is_monotonic_decreasing
        assert list(rows["rank"]) == list(range(1, len(rows) + 1))
    assert frame[frame["error"].notna()]["index"].tolist() == sorted(BAD)
    one = preds[0].to_dataframe()
    assert len(one) == len(preds[0].space_group_ranking())


def test_many_formulas_vectorised(predictor):
    formulas = make_formulas(500, seed=9)
    out = predictor.predict(formulas, top_bravais=2, top_space_groups=3)
    assert [p.formula for p in out] == formulas
    assert all(p.error is None and len(p.lattices) == 2 for p in out)


def test_write_test_metrics_keeps_weights_valid(bundle, tmp_path):
    path = _copy(bundle, tmp_path)
    write_test_metrics(path, {"test_mp20": {"bravais_top1": 0.5, "n": 10, "nan": float("nan")}})
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["metrics"]["test"]["test_mp20"] == {"bravais_top1": 0.5, "n": 10, "nan": None}
    assert manifest["metrics"]["validation"]
    assert "bravais_top1" in (path / "README.md").read_text()
    assert load_predictor(path=path).metrics["test"]["test_mp20"]["n"] == 10


def test_compositions_and_empty_input(predictor):
    from pymatgen.core import Composition

    out = predictor.predict([Composition("Fe2O3"), "NaCl"])
    assert [p.error for p in out] == [None, None]
    assert isinstance(out[0].formula, str) and "Fe" in out[0].formula
    assert predictor.predict([]) == []


def test_format_version_1_bundles_still_load(bundle, tmp_path):
    """A version-1 bundle (networks only, no calibration, no arch: cryspnet-mp-v1 and the v1 cryspnet-bench)."""
    old = _copy(bundle, tmp_path)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    manifest.pop("calibration", None)
    manifest.pop("trees", None)
    manifest["train_config"].pop("arch", None)
    text = json.dumps(manifest)
    assert '"kind": "lightgbm"' not in text
    manifest = json.loads(text.replace('"temperature": ', '"_t": '))
    (old / "manifest.json").write_text(json.dumps(manifest))
    [new] = load_predictor(path=bundle).predict(["NaCl"], top_bravais=14)
    [again] = load_predictor(path=old).predict(["NaCl"], top_bravais=14)
    assert again.error is None
    assert sum(lat.probability for lat in again.lattices) == pytest.approx(1.0, abs=1e-6)
    assert {lat.bravais for lat in again.lattices} == {lat.bravais for lat in new.lattices}
