from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _model_fixtures import (
    CONSTANT_LATTICE,
    SPARSE_LATTICE,
    cached_table,
    shared_bundle,
    tiny_config,
    train_tiny,
)

from cryspnet_gen.nn import Classifier, Regressor, output_range
from cryspnet_gen.predict import is_metal, is_oxide, read_bundle
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES
from cryspnet_gen.train import TrainConfig, ce_loss, log_mse_loss, train_bundle, train_ensemble


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny networks: one thread avoids thread-sync overhead on a busy 2-core machine.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def table():
    return cached_table(n=1600, seed=0)


@pytest.fixture(scope="module")
def bundle():
    return shared_bundle()


def _blobs(n: int, n_classes: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, separable but with an imbalanced class mix."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_classes, n_features))
    y = rng.choice(n_classes, size=n, p=np.linspace(3, 1, n_classes) / np.linspace(3, 1, n_classes).sum())
    X = centres[y] + rng.normal(size=(n, n_features))
    return X.astype(np.float32), y


def _split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.arange(n)
    return idx[: int(0.6 * n)], idx[int(0.6 * n) : int(0.8 * n)], idx[int(0.8 * n) :]


def _train_classifier(seed: int, X: np.ndarray, y: np.ndarray, **cfg: object):
    tr, va, _ = _split(len(y))
    config = tiny_config(seed=seed, max_epochs=8, **cfg)

    def make():
        net = Classifier(n_features=X.shape[1], n_classes=int(y.max()) + 1, hidden=[32, 16])
        net.standardizer.fit(X[tr])
        return net

    return train_ensemble(
        make,
        ce_loss,
        torch.from_numpy(X),
        [torch.from_numpy(y)],
        tr,
        va,
        n_members=2,
        config=config,
        seed_keys=("test",),
        sample_weight=np.bincount(y[tr])[y[tr]] ** -0.5,
    )


def test_classifier_ensemble_learns_separable_task():
    X, y = _blobs(1500, 5, 10, seed=0)
    ens, infos = _train_classifier(0, X, y)
    _, _, te = _split(len(y))
    with torch.no_grad():
        prob = torch.softmax(ens(torch.from_numpy(X[te])), -1).mean(0).numpy()
    acc = float((prob.argmax(1) == y[te]).mean())
    mode = float((y[te] == np.bincount(y[: int(0.6 * len(y))]).argmax()).mean())
    assert acc > 0.9 > mode + 0.4
    assert len(infos) == 2 and all(i["stop_set"] == "val" for i in infos)


def test_restore_best_false_keeps_the_end_of_the_cycle():
    X, y = _blobs(1500, 5, 10, seed=0)
    _, kept = _train_classifier(0, X, y, patience=100, restore_best=False)
    assert all(i["best_epoch"] == i["epochs"] == 8 for i in kept)
    _, restored = _train_classifier(0, X, y, patience=100)
    assert all(i["epochs"] == 8 for i in restored)
    # the restored epoch is the one with the lowest validation loss, reported as such
    assert all(1 <= i["best_epoch"] <= 8 and i["stop_loss"] is not None for i in restored)


def test_regressor_ensemble_learns_synthetic_targets():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1500, 8)).astype(np.float32)
    target = np.stack([4 + np.tanh(X[:, 0] + X[:, 1]), 90 + 15 * np.tanh(X[:, 2])], axis=1).astype(np.float32)
    tr, va, te = _split(len(X))
    lo, hi = output_range(target[tr])

    def make():
        net = Regressor(n_features=8, n_outputs=2, hidden=[32, 16]).set_range(lo, hi)
        net.standardizer.fit(X[tr])
        return net

    ens, _ = train_ensemble(
        make,
        log_mse_loss,
        torch.from_numpy(X),
        [torch.from_numpy(target)],
        tr,
        va,
        n_members=2,
        config=tiny_config(max_epochs=15),
        seed_keys=("reg",),
    )
    with torch.no_grad():
        pred = ens(torch.from_numpy(X[te])).mean(0).numpy()
    for k in range(2):
        y = target[te, k]
        r2 = 1 - ((y - pred[:, k]) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        assert r2 > 0.7, (k, r2)
    assert np.all(pred >= lo) and np.all(pred <= hi)


def test_training_is_deterministic_for_a_seed():
    X, y = _blobs(600, 3, 6, seed=1)
    a, _ = _train_classifier(7, X, y)
    b, _ = _train_classifier(7, X, y)
    c, _ = _train_classifier(8, X, y)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_leaves_global_torch_state_alone():
    X, y = _blobs(300, 3, 4, seed=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _train_classifier(0, X, y)
    torch.testing.assert_close(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_train_config_checks_choices_and_round_trips():
    with pytest.raises(ValueError, match="stop_on"):
        TrainConfig(stop_on="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="space_group_arch"):
        TrainConfig(space_group_arch="transformer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subset_models"):
        TrainConfig(subset_models=["nitride"])
    with pytest.raises(ValueError, match="n_members"):
        TrainConfig(n_members=0)
    cfg = tiny_config(space_group_arch="shared_trunk")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.as_dict()))) == cfg


def test_is_metal_and_is_oxide():
    assert is_metal("Fe3Al") and is_metal("LaNi5") and is_metal("Mg2Cu")
    assert not is_metal("Fe2O3") and not is_metal("GaAs") and not is_metal("Si")
    assert is_oxide("Fe2O3") and is_oxide("Li7La3Zr2O12")
    assert not is_oxide("NaCl") and not is_oxide("Os")  # osmium is not oxygen
    with pytest.raises(ValueError):
        is_oxide("Xx2")


def test_train_bundle_metrics_beat_baselines(bundle, table):
    frame, _, _ = table
    manifest, _ = read_bundle(bundle)
    val = manifest["metrics"]["validation"]
    train = frame[frame.split == "train"]
    valf = frame[frame.split == "val"]
    mode_acc = float((valf.bravais == train.bravais.mode()[0]).mean())
    assert val["bravais"]["master"]["top1"] > mode_acc + 0.3
    assert val["bravais"]["master"]["top2"] >= val["bravais"]["master"]["top1"]
    assert set(val["bravais"]) == {"master", "metal", "oxide"}
    assert val["space_group"]["top1"] > 0.75  # two groups per lattice: chance is ~0.5
    assert val["volume"]["r2"] > 0.8
    r2 = [v for lat in val["lattice"]["per_lattice"].values() for v in lat["r2"].values() if lat["n"] > 20]
    assert np.median(r2) > 0.5
    assert manifest["metrics"]["test"] is None


def test_train_bundle_model_kinds(bundle, table):
    frame, _, labels = table
    manifest, tensors = read_bundle(bundle)
    sg = manifest["tasks"]["space_group"]["lattices"]
    lat = manifest["tasks"]["lattice"]["lattices"]
    assert sg[CONSTANT_LATTICE]["kind"] == "prior" and len(sg[CONSTANT_LATTICE]["classes"]) == 1
    assert sg[SPARSE_LATTICE]["kind"] == "prior"
    assert sg["mP"]["kind"] == "network"
    absent = [b for b in BRAVAIS_LATTICES if b not in set(frame.bravais)]
    assert absent
    for b in absent:
        probs = sg[b]["probabilities"]
        assert sg[b]["kind"] == "prior" and np.allclose(probs, probs[0])  # uniform
        assert lat[b]["kind"] == "none"
    assert lat[SPARSE_LATTICE]["kind"] == "prior"
    assert lat["hR"]["kind"] == "network"
    assert lat["hR"]["parameter_names"] == list(PARAMETER_NAMES["hR"])
    assert lat["hR"]["range"]["hi"][1] < 120  # rhombohedral alpha must stay below 120 degrees
    assert manifest["features"]["labels"] == labels
    # tensor names are prefixed by lattice and member
    assert any(k.startswith("mP.members.1.") for k in tensors["space_group.safetensors"])
    assert (bundle / "README.md").read_text().startswith("# tiny")


def test_shared_trunk_space_group_variant(table, tmp_path):
    frame, X, labels = table
    out = train_tiny(
        frame,
        X,
        labels,
        tmp_path,
        name="shared",
        seed=1,
        settings={},
        space_group_arch="shared_trunk",
        subset_models=[],
        n_members=1,
    )
    manifest, _ = read_bundle(out)
    task = manifest["tasks"]["space_group"]
    assert task["arch"] == "shared_trunk" and task["shared"] is not None
    assert task["lattices"]["mP"]["kind"] == "shared"
    assert task["lattices"][CONSTANT_LATTICE]["kind"] == "prior"
    assert manifest["metrics"]["validation"]["space_group"]["top1"] > 0.75
    assert set(manifest["tasks"]["bravais"]) == {"master"}


def test_train_bundle_checks_its_inputs(table, tmp_path):
    frame, X, labels = table
    with pytest.raises(ValueError, match="columns"):
        train_bundle(
            frame.drop(columns=["volume_per_atom"]),
            X,
            config=tiny_config(),
            out_dir=tmp_path,
            name="x",
            version="0",
            split_name="s",
            feature_labels=labels,
            featurizer_settings={},
        )
    with pytest.raises(ValueError, match="feature labels"):
        train_bundle(
            frame,
            X,
            config=tiny_config(),
            out_dir=tmp_path,
            name="x",
            version="0",
            split_name="s",
            feature_labels=labels[:-1],
            featurizer_settings={},
        )
