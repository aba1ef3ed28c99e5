"""Classifier archs (``TrainConfig.arch``): LightGBM trees and stacks, their bundles and their calibration."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
import torch
from _model_fixtures import cached_table, shared_bundle, train_tiny

from cryspnet_gen.bundle import BundleError, read_bundle, read_manifest, read_tree_texts, save_bundle
from cryspnet_gen.featurize import FEATURIZER_SETTINGS
from cryspnet_gen.predict import load_predictor
from cryspnet_gen.symmetry import BRAVAIS_LATTICES
from cryspnet_gen.train import TrainConfig
from cryspnet_gen.train.classifiers import collapse_stacks, uses_networks
from cryspnet_gen.trees import compact_model_text

TREES = {
    "tree_max_rounds": 25,
    "tree_num_leaves": 7,
    "tree_early_stopping": 5,
    "tree_space_group": {"tree_num_leaves": 3},
}


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
    assert manifest["tasks"]["space_group"]["lattices"]["mP"]["params"]["num_leaves"] == 3  # the overrides
    assert master["params"]["num_leaves"] == 7
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
    assert manifest["calibration"]["bravais"]["master"] == master["temperature"] > 0  # the one in effect
    if master["kind"] == "stack":
        assert [p.get("kind", "network") for p in master["parts"]] == ["network", "lightgbm"]
        assert sum(master["weights"]) == pytest.approx(1.0)
        assert sum(w > 0 for w in master["weights"]) == 2  # a one-part stack is collapsed
        assert all(p["temperature"] > 0 for p in master["parts"])
    else:  # the validation weights kept one part: stored as that part alone
        assert master["kind"] in ("network", "lightgbm") and master["temperature"] > 0
    referenced = set()
    for entry in [*manifest["tasks"]["space_group"]["lattices"].values(), master]:
        assert entry["kind"] in ("stack", "network", "shared", "lightgbm", "prior")
        referenced |= {p["tree_file"] for p in entry.get("parts", [entry]) if p.get("kind") == "lightgbm"}
    assert set(manifest.get("trees") or {}) == referenced  # no tree file that no prediction uses
    used = {f for f in manifest["weights"]}
    assert all((stack_bundle / f).exists() for f in used)
    p = load_predictor(path=stack_bundle).predict("NaCl", top_bravais=14)[0]
    assert sum(lat.probability for lat in p.lattices) == pytest.approx(1.0, abs=1e-6)


def test_collapse_stacks_keeps_the_calibrated_part():
    part_a = {"kind": "network", "file": "a.safetensors", "temperature": 2.0}
    part_b = {"kind": "lightgbm", "tree_file": "b.lgb.txt.gz", "temperature": 0.5}
    sections = {
        "bravais": {
            "master": {"kind": "stack", "parts": [part_a, part_b], "weights": [0.0, 1.0], "temperature": 3.0}
        },
        "lattices": {
            "mP": {"kind": "stack", "parts": [part_a, part_b], "weights": [0.4, 0.6], "temperature": 1.0}
        },
    }
    assert collapse_stacks(sections) == ["bravais/master"]
    assert sections["bravais"]["master"] == {**part_b, "temperature": 1.5}
    assert sections["lattices"]["mP"]["kind"] == "stack"
    assert uses_networks(sections["lattices"]["mP"]) and not uses_networks(sections["bravais"]["master"])


def test_compact_tree_text_predicts_the_same(tree_bundle, table):
    import lightgbm as lgb

    _, X, _ = table
    name = read_manifest(tree_bundle)["tasks"]["bravais"]["master"]["tree_file"]
    text = gzip.decompress((tree_bundle / name).read_bytes()).decode()
    assert "split_gain=" not in text  # already compact as saved
    booster = lgb.Booster(model_str=text)
    full = booster.model_to_string()
    assert "split_gain=" in full
    compact = compact_model_text(full)
    assert len(compact) < 0.8 * len(full)
    raw, raw_compact = (b.predict(X[:200], raw_score=True) for b in (booster, lgb.Booster(model_str=compact)))
    np.testing.assert_allclose(raw_compact, raw, rtol=1e-6, atol=1e-9)
    assert [line for line in compact.split("\n") if line.startswith("threshold=")] == [
        line for line in full.split("\n") if line.startswith("threshold=")
    ]


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
    assert tree.name.endswith(".lgb.txt.gz")
    text = gzip.decompress(tree.read_bytes()).decode()
    tree.write_bytes(gzip.compress(text.replace("leaf_value=", "leaf_value=1", 1).encode()))
    with pytest.raises(BundleError, match=r"corrupt or was modified|truncated or replaced"):
        load_predictor(path=copy)
    data = bytearray((tree_bundle / tree.name).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    tree.write_bytes(bytes(data))
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
    with pytest.raises(ValueError, match="tree_max_bin"):
        TrainConfig(tree_max_bin=1)
    with pytest.raises(ValueError, match="tree_lambda_l2"):
        TrainConfig(tree_lambda_l2=-1.0)


def test_tree_params_follow_the_config():
    from cryspnet_gen.train.trees import tree_params

    params = tree_params(TrainConfig(tree_max_bin=63, tree_lambda_l2=0.5, tree_num_leaves=15), 14, seed=3)
    assert (params["max_bin"], params["lambda_l2"], params["num_leaves"], params["num_class"]) == (
        63,
        0.5,
        15,
        14,
    )
    assert tree_params(TrainConfig(), 2, seed=3)["objective"] == "binary"
    config = TrainConfig(tree_num_leaves=255, tree_space_group={"tree_num_leaves": 31})
    assert config.tree_num_leaves == 255 and config.for_space_groups().tree_num_leaves == 31
    assert config.for_space_groups().tree_space_group == {}
    with pytest.raises(ValueError, match="tree_\\* fields only"):
        TrainConfig(tree_space_group={"num_leaves": 31})
    with pytest.raises(ValueError, match="tree_num_leaves must be >= 1"):
        TrainConfig(tree_space_group={"tree_num_leaves": 0})


def test_plain_text_tree_files_still_load(tree_bundle, tmp_path):
    """Bundles written before trees were gzipped (``*.lgb.txt``) load and predict the same."""
    manifest, tensors = read_bundle(tree_bundle)
    texts = read_tree_texts(tree_bundle, manifest)
    plain = {name.removesuffix(".gz"): text for name, text in texts.items()}
    old = json.loads(json.dumps(manifest).replace(".lgb.txt.gz", ".lgb.txt"))
    folder = save_bundle(tmp_path / "old", old, tensors, weights_dtype="float32", trees=plain)
    assert sorted(p.name for p in folder.glob("*.lgb.txt")) == sorted(plain)
    new = load_predictor(path=tree_bundle).predict(["NaCl", "CaTiO3"], top_bravais=14)
    again = load_predictor(path=folder).predict(["NaCl", "CaTiO3"], top_bravais=14)
    for a, b in zip(new, again, strict=True):
        assert [lat.bravais for lat in a.lattices] == [lat.bravais for lat in b.lattices]
        np.testing.assert_allclose(
            [lat.probability for lat in a.lattices], [lat.probability for lat in b.lattices], atol=1e-6
        )


def test_large_batches_use_every_core_and_predict_the_same(tree_bundle, table):
    from cryspnet_gen.trees import PARALLEL_ROWS

    _, X, _ = table
    predictor = load_predictor(path=tree_bundle)
    entry = predictor.manifest["tasks"]["bravais"]["master"]
    rows = np.resize(np.arange(len(X)), PARALLEL_ROWS + 10)
    big = predictor.entry_probabilities(entry, X[rows])
    small = np.concatenate(
        [predictor.entry_probabilities(entry, X[rows[i : i + 100]]) for i in range(0, len(rows), 100)]
    )
    np.testing.assert_allclose(big, small, rtol=0, atol=1e-12)


def test_native_booster_predicts_like_the_lightgbm_package(tree_bundle, table):
    import lightgbm as lgb

    from cryspnet_gen.lgbm_native import NativeBooster, NativeLightGBMError
    from cryspnet_gen.trees import TreeClassifier, TreeModelError

    _, X, _ = table
    manifest, _ = read_bundle(tree_bundle)
    texts = read_tree_texts(tree_bundle, manifest)
    for text in list(texts.values())[:3]:
        native = NativeBooster(text)
        package = lgb.Booster(model_str=text)
        assert native.num_feature == package.num_feature() == X.shape[1]
        want = package.predict(X[:300]).reshape(300, -1)
        np.testing.assert_allclose(native.predict(X[:300]), want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            native.predict(X[:300], raw_score=True, num_threads=2),
            package.predict(X[:300], raw_score=True).reshape(300, -1),
            rtol=0,
            atol=1e-12,
        )
    with pytest.raises(NativeLightGBMError):
        NativeBooster("not a model")
    with pytest.raises(TreeModelError, match="not a LightGBM text model"):
        TreeClassifier("tree\nversion=v4\n", n_classes=14, n_features=X.shape[1])


# -- element attention: the arch that learns from the composition itself -------------------------------------


@pytest.fixture(scope="module")
def attention_bundle(table, tmp_path_factory):
    frame, X, labels = table
    out = tmp_path_factory.mktemp("attention")
    return train_tiny(
        frame,
        X,
        labels,
        out,
        name="attention",
        seed=0,
        settings=FEATURIZER_SETTINGS,
        arch="attention-stack",
        subset_models=[],
        space_group_arch="shared_trunk",
        attention_dim=16,
        attention_rounds=1,
        attention_hidden=16,
        attention_epochs=3,
        attention_batch_size=64,
        # weak trees, so that the validation-weighted stack keeps both parts
        **{**TREES, "tree_max_rounds": 2, "tree_space_group": {"tree_num_leaves": 3, "tree_max_rounds": 1}},
    )


def test_element_encoding_orders_truncates_and_pads():
    from cryspnet_gen.formula import element_encoding

    enc = element_encoding(["Li7La3Zr2O12", "NaCl", "Xx2", "HLiBeBCNOF"], max_elements=4)
    assert enc.shape == (4, 8) and enc.dtype == np.float32
    assert enc[0, :4].tolist() == [8, 3, 57, 40]  # O, Li, La, Zr: most abundant first
    assert enc[0, 4:].tolist() == pytest.approx([12 / 24, 7 / 24, 3 / 24, 2 / 24])
    assert enc[1].tolist() == [11, 17, 0, 0, 0.5, 0.5, 0, 0]  # a tie keeps atomic-number order; zeros pad
    assert not enc[2].any()  # an unparseable formula is all padding
    assert enc[3, 4:].sum() == pytest.approx(1.0)  # eight elements: the four kept renormalised


def test_element_attention_reads_the_elements_not_their_order_nor_the_features():
    from cryspnet_gen.formula import element_encoding
    from cryspnet_gen.nn import ElementAttention

    torch.manual_seed(0)
    net = ElementAttention(n_features=3, n_classes=5, max_elements=4, dim=8, rounds=2, hidden=8).eval()
    enc = element_encoding(["Li7La3Zr2O12", "Fe2O3"], max_elements=4)
    shuffled = enc.copy()
    shuffled[0, [0, 1, 2, 3, 4, 5, 6, 7]] = enc[0, [2, 0, 3, 1, 6, 4, 7, 5]]
    feats = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    with torch.no_grad():
        a = net(torch.from_numpy(np.hstack([feats, enc])))
        b = net(torch.from_numpy(np.hstack([feats * 0, shuffled])))
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a[0], a[1])  # different compositions, different logits
    with pytest.raises(ValueError, match="element encoding"):
        net(torch.from_numpy(feats))


def test_attention_bundle_trains_stacks_and_predicts(attention_bundle, table):
    frame, X, _ = table
    manifest = read_manifest(attention_bundle)
    assert manifest["train_config"]["arch"] == "attention-stack"
    assert manifest["features"]["element_slots"] == 12
    master = manifest["tasks"]["bravais"]["master"]
    parts = master.get("parts", [master])
    classes = {p.get("model_class") for p in parts} | {
        manifest["tasks"]["space_group"]["shared"]["model_class"]
    }
    assert "ElementAttention" in classes
    shared = manifest["tasks"]["space_group"]["shared"]
    assert all(m["train_loss"] < np.log(len(shared["classes"])) for m in shared["members"])  # it learned
    val = manifest["metrics"]["validation"]
    mode_acc = float(
        (frame[frame.split == "val"].bravais == frame[frame.split == "train"].bravais.mode()[0]).mean()
    )
    assert val["bravais"]["master"]["top1"] > mode_acc + 0.2
    predictor = load_predictor(path=attention_bundle)
    preds = predictor.predict(["NaCl", "Fe2O3", "Xx"], top_bravais=14)
    assert preds[2].error is not None
    for p in preds[:2]:
        assert sum(lat.probability for lat in p.lattices) == pytest.approx(1.0, abs=1e-6)
    formulas = list(frame["formula"][:5])
    p_in, _ = predictor.bravais_probabilities(predictor.model_inputs(X[:5], formulas))
    by_predict = predictor.predict(formulas, top_bravais=14)
    assert p_in[0] == pytest.approx(
        [by_predict[0].bravais_probabilities[b] for b in BRAVAIS_LATTICES], abs=1e-9
    )
    with pytest.raises(ValueError, match="model_inputs"):
        predictor.bravais_probabilities(X[:5])  # the features alone cannot feed the attention model
    assert predictor.volume_per_atom(X[:5])[0].shape == (5,)  # the regressors need no formulas
    from cryspnet_gen.explain import explain_features

    with pytest.raises(ValueError, match="element-attention networks"):  # features explain nothing here
        explain_features(predictor, formulas[0], X[0])


def test_plain_attention_arch_and_its_cli_option(table, tmp_path):
    frame, X, labels = table
    out = train_tiny(
        frame,
        X,
        labels,
        tmp_path,
        name="att",
        seed=0,
        settings=FEATURIZER_SETTINGS,
        arch="attention",
        subset_models=[],
        attention_dim=8,
        attention_rounds=1,
        attention_hidden=8,
        attention_epochs=2,
        attention_batch_size=128,
        min_rows=400,  # few lattices get a network: seconds
    )
    manifest = read_manifest(out)
    assert manifest["tasks"]["bravais"]["master"]["model_class"] == "ElementAttention"
    assert "trees" not in manifest or not manifest["trees"]
    assert "element-attention networks" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="attention_dim"):
        TrainConfig(attention_dim=0)
