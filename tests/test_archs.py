"""Classifier archs (``TrainConfig.arch``): LightGBM trees and stacks, their bundles and their calibration."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from _model_fixtures import cached_table, shared_bundle, train_tiny

from cryspnet_gen.bundle import BundleError, read_manifest
from cryspnet_gen.featurize import FEATURIZER_SETTINGS
from cryspnet_gen.predict import load_predictor
from cryspnet_gen.symmetry import BRAVAIS_LATTICES
from cryspnet_gen.train import TrainConfig

TREES = {"tree_max_rounds": 25, "tree_num_leaves": 7, "tree_early_stopping": 5}


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def table():
    return cached_table(n=1600, seed=0)


@pytest.fixture(scope="module")
def tree_bundle(table, tmp_path_factory):
    frame, X, labels = table
    out = tmp_path_factory.mktemp("trees")
    return train_tiny(
        frame, X, labels, out, name="trees", seed=0, settings=FEATURIZER_SETTINGS, arch="lightgbm", **TREES
    )


@pytest.fixture(scope="module")
def stack_bundle(table, tmp_path_factory):
    frame, X, labels = table
    out = tmp_path_factory.mktemp("stack")
    return train_tiny(
        frame,
        X,
        labels,
        out,
        name="stack",
        seed=0,
        settings=FEATURIZER_SETTINGS,
        arch="stack",
        subset_models=[],
        networks_from=None,
        **TREES,
    )


def test_tree_bundle_trains_and_predicts(tree_bundle, table):
    frame, _, _ = table
    manifest = read_manifest(tree_bundle)
    assert manifest["train_config"]["arch"] == "lightgbm"
    master = manifest["tasks"]["bravais"]["master"]
    assert master["kind"] == "lightgbm" and master["tree_file"] in manifest["trees"]
    assert manifest["tasks"]["space_group"]["lattices"]["mP"]["kind"] == "lightgbm"
    assert not any(name.startswith("bravais") for name in manifest["weights"])  # no classifier networks
    val = manifest["metrics"]["validation"]
    train = frame[frame.split == "train"]
    mode_acc = float((frame[frame.split == "val"].bravais == train.bravais.mode()[0]).mean())
    assert val["bravais"]["master"]["top1"] > mode_acc + 0.3
    assert val["space_group"]["top1"] > 0.75
    assert val["volume"]["r2"] > 0.8  # the regressors are still networks
    pred = load_predictor(path=tree_bundle).predict(["NaCl", "Fe2O3"], top_bravais=14)
    for p in pred:
        assert p.error is None
        assert sum(lat.probability for lat in p.lattices) == pytest.approx(1.0, abs=1e-6)
        assert {lat.bravais for lat in p.lattices} == set(BRAVAIS_LATTICES)


def test_stack_bundle_weights_and_temperatures(stack_bundle):
    manifest = read_manifest(stack_bundle)
    master = manifest["tasks"]["bravais"]["master"]
    assert master["kind"] == "stack"
    assert [p.get("kind", "network") for p in master["parts"]] == ["network", "lightgbm"]
    assert sum(master["weights"]) == pytest.approx(1.0)
    assert all(p["temperature"] > 0 for p in master["parts"])
    assert manifest["calibration"]["bravais"]["master"] == master["temperature"]
    sg = manifest["tasks"]["space_group"]["lattices"]["mP"]
    assert sg["kind"] == "stack" and sg["temperature"] == manifest["calibration"]["space_group"]
    p = load_predictor(path=stack_bundle).predict("NaCl", top_bravais=14)[0]
    assert sum(lat.probability for lat in p.lattices) == pytest.approx(1.0, abs=1e-6)


def test_calibration_keeps_the_order_of_a_single_model(tree_bundle, table):
    _, X, _ = table
    predictor = load_predictor(path=tree_bundle)
    entry = predictor.manifest["tasks"]["bravais"]["master"]
    assert entry["temperature"] != 1.0
    raw = predictor.entry_probabilities(entry, X[:300])
    calibrated, _ = predictor.bravais_probabilities(X[:300])
    assert not np.allclose(raw, calibrated)
    assert (np.argsort(-raw, axis=1, kind="stable") == np.argsort(-calibrated, axis=1, kind="stable")).all()


def test_tampered_tree_file_is_refused(tree_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tree_bundle, copy)
    tree = copy / read_manifest(copy)["tasks"]["bravais"]["master"]["tree_file"]
    text = tree.read_text()
    tree.write_text(text.replace("leaf_value=", "leaf_value=1", 1)[: len(text)])
    with pytest.raises(BundleError, match="corrupt or was modified"):
        load_predictor(path=copy)
    tree.unlink()
    with pytest.raises(BundleError, match="missing"):
        load_predictor(path=copy)


def test_tree_training_is_deterministic(table, tmp_path, tree_bundle):
    frame, X, labels = table
    again = train_tiny(
        frame,
        X,
        labels,
        tmp_path,
        name="trees",
        seed=0,
        settings=FEATURIZER_SETTINGS,
        arch="lightgbm",
        **TREES,
    )
    first, second = read_manifest(tree_bundle), read_manifest(again)
    assert first["trees"] == second["trees"]  # same sha256 per tree file
    assert first["calibration"] == second["calibration"]


def test_networks_from_reuses_a_bundle_trained_on_the_same_rows(table, tmp_path):
    frame, X, labels = table
    base = shared_bundle()
    out = train_tiny(
        frame,
        X,
        labels,
        tmp_path,
        name="reuse",
        seed=0,
        settings=FEATURIZER_SETTINGS,
        arch="stack",
        networks_from=base,
        **TREES,
    )
    reused, original = read_manifest(out), read_manifest(base)
    assert (
        reused["weights"]["volume.safetensors"]["sha256"]
        == original["weights"]["volume.safetensors"]["sha256"]
    )
    assert reused["tasks"]["bravais"]["master"]["kind"] == "stack"
    other = frame.copy()
    other.loc[other.index[:50], "split"] = "test_x"  # other rows: refused
    with pytest.raises(ValueError, match="another split, features or rows"):
        train_tiny(
            other, X, labels, tmp_path, name="bad", seed=0, settings=FEATURIZER_SETTINGS, networks_from=base
        )


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="Unknown arch"):
        TrainConfig(arch="transformer")  # type: ignore[arg-type]
    assert TrainConfig.preset("tiny", arch="stack").arch == "stack"
