"""Interpretability: permutation importance, attribution, representations, similar materials, material map."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from cryspnet_gen.explain import (
    FAMILIES,
    Representation,
    explain_formula,
    family_groups,
    feature_family,
    nearest,
    permutation_importance,
    similar_materials,
)
from cryspnet_gen.featurize import feature_labels
from tests._model_fixtures import shared_bundle

# The similar-materials tests use the user's cache folder, as a user would: the index of the shipped bundle and
# library is keyed by their content and built once (about a minute), whichever test or worker asks first.


# -- families and importance ---------------------------------------------------------------------------------


def test_every_feature_has_exactly_one_family() -> None:
    labels = feature_labels()
    groups = family_groups(labels)
    assert set(groups) == set(FAMILIES)
    assert sorted(i for cols in groups.values() for i in cols) == list(range(len(labels)))
    assert feature_family("MagpieData mean Electronegativity") == "electronegativity"
    assert feature_family("O") == "element fractions"
    with pytest.raises(ValueError, match="no known family"):
        feature_family("not a feature")


def _planted_task(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    logits = 4.0 * X[:, 0] + 1.5 * X[:, 1] + 0.5 * X[:, 2]
    y = (logits + rng.logistic(size=n) > 0).astype(int)
    return X, y


def test_permutation_importance_recovers_the_planted_feature_and_ranks_noise_last() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _planted_task()
    model = LogisticRegression().fit(X[:400], y[:400])
    Xv, yv = X[400:], y[400:]

    def score(Z: np.ndarray) -> np.ndarray:
        p = model.predict_proba(Z)
        return np.log(p[np.arange(len(Z)), np.tile(yv, len(Z) // len(yv))])

    groups = {f"x{i}": [i] for i in range(5)}
    table = permutation_importance(score, Xv, groups=groups, n_repeats=5, seed=0)
    assert list(table.index[:2]) == ["x0", "x1"]
    assert table.loc["x0", "importance"] > 2 * table.loc["x1", "importance"] > 0
    noise = table.loc[["x3", "x4"], "importance"]
    assert noise.abs().max() < 0.25 * table.loc["x1", "importance"]
    assert set(table.index[-2:]) == {"x3", "x4"}
    assert (table["std"] >= 0).all()
    again = permutation_importance(score, Xv, groups=groups, n_repeats=5, seed=0)
    pd.testing.assert_frame_equal(table, again)


def test_permutation_importance_of_a_constant_column_is_zero_without_scoring_it() -> None:
    X = np.c_[np.arange(10.0), np.ones(10)]
    calls = []

    def score(Z: np.ndarray) -> np.ndarray:
        calls.append(len(Z))
        return -np.abs(Z[:, 0] - np.tile(np.arange(10.0), len(Z) // 10))

    table = permutation_importance(score, X, groups={"a": [0], "const": [1]}, n_repeats=2)
    assert table.loc["const", "importance"] == 0.0
    assert table.loc["a", "importance"] > 0
    assert sum(calls) == 10 + 2 * 10  # baseline + two shuffles of "a" only
    with pytest.raises(ValueError, match="n_repeats"):
        permutation_importance(score, X, groups={"a": [0]}, n_repeats=0)


def test_model_importance_runs_on_a_bundle_for_every_output() -> None:
    from cryspnet_gen.explain import model_importance
    from cryspnet_gen.predict import load_predictor
    from tests._model_fixtures import cached_table

    predictor = load_predictor(path=shared_bundle())
    frame, X, _ = cached_table()
    report = model_importance(
        predictor, X, frame["bravais"], frame["space_group"], frame["volume_per_atom"], n_rows=60, n_repeats=1
    )
    assert set(report.features) == {"bravais", "space_group", "volume"}
    for output, table in report.features.items():
        assert len(table) == len(feature_labels())
        assert table["importance"].is_monotonic_decreasing
        assert set(table["family"]) <= set(FAMILIES)
        assert len(report.families[output]) == len(FAMILIES)
        assert np.isfinite(report.baseline[output])
    summary = report.to_dict(top=5)
    assert len(summary["outputs"]["bravais"]["features"]) == 5
    json.dumps(summary)


# -- nearest neighbours and representations -----------------------------------------------------------------


def test_nearest_matches_brute_force_and_breaks_ties_by_index() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(500, 7)).astype(np.float32)
    queries = rng.normal(size=(40, 7)).astype(np.float32)
    idx, dist = nearest(points, queries, 5)
    full = np.sqrt(((queries[:, None, :].astype(float) - points[None].astype(float)) ** 2).sum(-1))
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :5], rtol=1e-6)
    twins = np.zeros((4, 3), dtype=np.float32)
    idx, _ = nearest(twins, np.zeros((1, 3)), 3)
    assert idx.tolist() == [[0, 1, 2]]


def test_representations_of_a_bundle() -> None:
    from cryspnet_gen.featurize import featurize
    from cryspnet_gen.predict import load_predictor

    predictor = load_predictor(path=shared_bundle())
    X = featurize(["NaCl", "KBr", "SrTiO3"]).matrix
    plain = Representation.of(predictor, "features")
    assert plain.embed(X).shape == (3, len(feature_labels()))
    hidden = Representation.of(predictor, "hidden")
    assert hidden.embed(X).shape[0] == 3 and hidden.embed(X).shape[1] > 0
    # no stored weights: "weighted" falls back to plain features
    assert Representation.of(predictor, "weighted").kind == "features"
    predictions = Representation.of(predictor, "predictions").embed(X)
    np.testing.assert_allclose((predictions**2).sum(axis=1), 1.0, atol=1e-4)  # sqrt of a distribution
    combined = Representation.of(predictor, "combined")
    with pytest.raises(ValueError, match="fit_embed"):
        combined.embed(X)
    known = combined.fit_embed(X)
    assert known.shape == (3, len(feature_labels()) + 230)
    np.testing.assert_allclose(combined.embed(X), known, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown representation"):
        Representation.of(predictor, "pixels")  # type: ignore[arg-type]


def _tiny_known() -> pd.DataFrame:
    from cryspnet_gen.symmetry import bravais_of

    rows = [
        ("NaCl", 225, "AB"),
        ("KBr", 225, "AB"),
        ("SrTiO3", 221, "ABC3"),
        ("Si", 227, "A"),
        ("GaAs", 216, "AB"),
    ]
    return pd.DataFrame(
        {
            "formula": [f for f, _, _ in rows],
            "material_id": [f"mp-{i}" for i in range(len(rows))],
            "space_group": [g for _, g, _ in rows],
            "bravais": [bravais_of(g) for _, g, _ in rows],
            "anonymous": [a for _, _, a in rows],
            "type": [f"{a}|{g}" for _, g, a in rows],
            "e_above_hull": [0.0] * len(rows),
            "experimental": [True] * len(rows),
            "polymorphs": [1] * len(rows),
        }
    )


def test_index_cache_round_trip_and_corrupt_file(tmp_path, monkeypatch, caplog) -> None:
    from cryspnet_gen.explain import KnownCompoundIndex
    from cryspnet_gen.predict import load_predictor

    monkeypatch.setenv("CRYSPNET_GEN_CACHE_DIR", str(tmp_path))
    predictor = load_predictor(path=shared_bundle())
    calls = []

    def table() -> pd.DataFrame:
        calls.append(1)
        return _tiny_known()

    first = KnownCompoundIndex.build(table, Representation.of(predictor, "combined"), cache_key="k")
    again = KnownCompoundIndex.build(table, Representation.of(predictor, "combined"), cache_key="k")
    assert len(calls) == 1  # the second index came from the cache, table and all
    np.testing.assert_array_equal(first.points, again.points)
    pd.testing.assert_frame_equal(first.table, again.table, check_dtype=False)
    from cryspnet_gen.featurize import featurize

    X = featurize(["NaBr"]).matrix
    assert first.query(X, 3)[0]["formula"].tolist() == again.query(X, 3)[0]["formula"].tolist()
    (cached,) = (tmp_path / "similar").glob("*.npz")
    cached.write_bytes(b"not an npz file")
    rebuilt = KnownCompoundIndex.build(table, Representation.of(predictor, "combined"), cache_key="k")
    assert len(calls) == 2 and "unreadable" in caplog.text
    np.testing.assert_array_equal(rebuilt.points, first.points)


def test_index_cache_keeps_the_most_recently_used(tmp_path, monkeypatch) -> None:
    import os
    import time

    from cryspnet_gen.explain import KnownCompoundIndex
    from cryspnet_gen.explain.neighbours import CACHE_KEEP
    from cryspnet_gen.predict import load_predictor

    monkeypatch.setenv("CRYSPNET_GEN_CACHE_DIR", str(tmp_path))
    predictor = load_predictor(path=shared_bundle())
    folder = tmp_path / "similar"
    keys = [f"key{i}" for i in range(CACHE_KEEP + 2)]
    for i, key in enumerate(keys):
        KnownCompoundIndex.build(_tiny_known(), Representation.of(predictor, "features"), cache_key=key)
        for j, path in enumerate(sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)):
            os.utime(path, (time.time() - 100 + j, time.time() - 100 + j))  # distinct, ordered times
        if i == 0:
            first = next(folder.glob("*.npz"))
    assert len(list(folder.glob("*.npz"))) == CACHE_KEEP
    assert len(list(folder.glob("*.parquet"))) == CACHE_KEEP
    assert not first.exists()  # the least recently used went first
    # using an index keeps it: build the newest again, then two new ones; it survives
    KnownCompoundIndex.build(_tiny_known(), Representation.of(predictor, "features"), cache_key=keys[-1])
    newest = max(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)
    for key in ("again1", "again2"):
        KnownCompoundIndex.build(_tiny_known(), Representation.of(predictor, "features"), cache_key=key)
    assert newest.exists() and len(list(folder.glob("*.npz"))) == CACHE_KEEP


def test_weights_entry_sums_the_classifier_importances_and_ignores_negative_ones() -> None:
    from cryspnet_gen.explain.importance import ImportanceReport
    from cryspnet_gen.explain.report import weights_entry

    bravais = pd.DataFrame({"importance": [0.5, -0.1, 0.0]}, index=["a", "b", "c"])
    group = pd.DataFrame({"importance": [0.1, 0.2, -0.3]}, index=["b", "a", "c"])
    volume = pd.DataFrame({"importance": [9.0, 9.0, 9.0]}, index=["a", "b", "c"])
    report = ImportanceReport(
        {"bravais": bravais, "space_group": group, "volume": volume}, {}, {"bravais": 5}, {}
    )
    assert weights_entry(report)["weights"] == {"a": 0.7, "b": 0.1, "c": 0.0}


def test_saved_weights_make_the_weighted_representation(tmp_path) -> None:
    from cryspnet_gen.explain.report import save_weights
    from cryspnet_gen.predict import load_predictor

    bundle = tmp_path / "tiny"
    shutil.copytree(shared_bundle(), bundle)
    labels = feature_labels()
    weights = {label: (1.0 if "Electronegativity" in label else 0.0) for label in labels}
    save_weights(bundle, {"weights": weights, "method": "test", "n_rows": 1, "n_repeats": 1})
    predictor = load_predictor(path=bundle)
    rep = Representation.of(predictor, "weighted")
    assert rep.kind == "weighted"
    assert rep.weights is not None and rep.weights.sum() == pytest.approx(1.0)
    z = rep.embed(np.zeros((1, len(labels))))
    assert np.count_nonzero(z) <= sum(v > 0 for v in weights.values())
    assert "Feature weights" in (bundle / "README.md").read_text()


# -- similar materials and explanations (shipped bundle and library) ----------------------------------------


def test_similar_materials_flags_the_query_and_is_deterministic() -> None:
    first = similar_materials("NaCl", n=6)
    again = similar_materials("ClNa", n=6)
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 6
    assert first["distance"].is_monotonic_increasing
    assert first.iloc[0]["formula"] == "NaCl" and bool(first.iloc[0]["query"])
    assert (
        first.iloc[0]["distance"] < 0.01 < first.iloc[1]["distance"]
    )  # points are stored at float16 precision
    assert first["query"].sum() == 1  # flagged, not dropped, and only once
    assert first["material_id"].str.startswith("mp-").all()
    assert set(first["substitutable"]) <= {True, False}
    assert first.loc[first["formula"] == "NaCl", "substitutable"].all()
    assert first.attrs["known_compounds"] > 100_000


def test_similar_nacl_lists_rock_salts_and_llzo_lists_garnets() -> None:
    nacl = similar_materials("NaCl", n=10)
    others = nacl[~nacl["query"]]
    assert (others["space_group"] == 225).sum() >= 7, others  # rock salt and its ordered superstructures
    assert set(others.loc[others["substitutable"], "formula"]) & {"NaF", "NaBr", "KCl", "NaI", "LiCl"}, others
    llzo = similar_materials("Li7La3Zr2O12", n=10)
    garnets = llzo["space_group"].isin([230, 142])  # cubic Ia-3d and its tetragonal I4_1/acd distortion
    assert garnets.sum() >= 8, llzo
    assert {"Li7La3Hf2O12", "Li7Nd3Zr2O12"} <= set(llzo["formula"]), llzo


def test_similar_materials_errors_are_one_line() -> None:
    for bad in ("Xx2O", "", "NaCl(("):
        with pytest.raises(ValueError) as info:
            similar_materials(bad)
        assert "\n" not in str(info.value)
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            similar_materials("NaCl", n=n)  # type: ignore[arg-type]


def test_explain_srtio3_gives_signed_effects_per_family_and_feature() -> None:
    explanation = explain_formula("SrTiO3")
    assert explanation.formula == "SrTiO3"
    assert 0 < explanation.bravais_probability <= 1
    assert 0 < explanation.space_group_probability <= explanation.bravais_probability + 1e-9
    assert [f["family"] for f in explanation.families] != []
    assert {f["family"] for f in explanation.families} == set(FAMILIES)
    effects = [f["space_group"] for f in explanation.features]
    assert effects == sorted(effects, key=lambda e: -abs(e))
    assert any(e > 0 for e in effects) and any(e < 0 for e in effects)
    text = explanation.format(top=5)
    assert "SrTiO3" in text and "supports the prediction" in text
    data = explanation.to_dict()
    json.dumps(data)
    assert data["prediction"]["space_group"] == explanation.space_group
    with pytest.raises(ValueError):
        explain_formula("Xx")


# -- material map --------------------------------------------------------------------------------------------


def test_material_map_finds_planted_clusters_and_summarises_them(tmp_path) -> None:
    from cryspnet_gen.explain.materialmap import material_map

    rng = np.random.default_rng(0)
    centres = np.array([[0.0] * 6, [12.0] * 6, [-12.0] + [12.0] * 5])
    kinds = [("NaCl", 225, "cF", "AB"), ("SrTiO3", 221, "cP", "ABC3"), ("Si", 227, "cF", "A")]
    points = np.concatenate([c + rng.normal(size=(150, 6)) for c in centres])
    table = pd.DataFrame(
        [
            {"formula": f, "space_group": g, "bravais": b, "anonymous": a}
            for f, g, b, a in kinds
            for _ in range(150)
        ]
    )
    the_map = material_map(
        table, points, sample=450, seed=0, perplexity=20, min_cluster_size=30, representation="test"
    )
    assert len(the_map.clusters) == 3
    assert sorted(the_map.clusters["size"]) == pytest.approx([150, 150, 150], abs=10)
    assert set(the_map.clusters["cluster"]) == {1, 2, 3}
    assert all("100%" in s for s in the_map.clusters["space groups"])
    png = the_map.plot(tmp_path / "map.png")
    assert png.stat().st_size > 10_000


# -- the command line ----------------------------------------------------------------------------------------


def test_cli_similar_and_explain(capsys: pytest.CaptureFixture[str]) -> None:
    from cryspnet_gen.cli import main

    assert main(["similar", "NaCl", "-n", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["formula"] == "NaCl" and len(data[0]["similar"]) == 3
    assert main(["similar", "Xx2O", "KBr", "-n", "2"]) == 1  # the bad row fails, the good one is printed
    out, err = capsys.readouterr()
    assert "KBr" in out and err.count("\n") == 1 and "Xx2O" in err
    with pytest.raises(SystemExit) as info:
        main(["similar", "NaCl", "-n", "0"])
    assert info.value.code == 2
    assert main(["explain", "SrTiO3", "--top", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data[0]["features"]) == 4 and data[0]["formula"] == "SrTiO3"


@pytest.mark.slow
def test_interpret_writes_the_report(tmp_path) -> None:
    from cryspnet_gen.explain.report import interpret
    from cryspnet_gen.explain.similar import resolve_library
    from cryspnet_gen.predict import load_predictor

    predictor = load_predictor(path=shared_bundle())
    report = interpret(
        predictor, resolve_library(), out_dir=tmp_path, rows=40, repeats=1, queries=60, map_sample=400
    )
    assert {"interpretability.md", "importance.png", "material_map.png"} <= set(report.files)
    text = (tmp_path / "interpretability.md").read_text()
    assert "Permutation feature importance" in text and "Material map" in text
    assert set(report.neighbours["representation"]) == {
        "features",
        "hidden",
        "weighted",
        "predictions",
        "combined",
    }
    weights = report.model["feature_weights"]["weights"]
    assert len(weights) == len(feature_labels()) and all(v >= 0 for v in weights.values())
    json.loads((tmp_path / "interpretability.json").read_text())


@pytest.mark.slow
def test_evaluate_adds_the_interpretability_report(tmp_path) -> None:
    import argparse

    from cryspnet_gen.cli.train import add_interpretability
    from cryspnet_gen.evaluate import EvaluationReport
    from cryspnet_gen.predict import load_predictor

    report = EvaluationReport({"model": {}}, "# Evaluation\n")
    args = argparse.Namespace(out=str(tmp_path), data_dir=None, importance_rows=30, map_sample=0, seed=0)
    add_interpretability(report, load_predictor(path=shared_bundle()), args)
    text = (tmp_path / "evaluation.md").read_text()
    assert text.startswith("# Evaluation") and "## Interpretability" in text and "importance.png" in text
    assert (tmp_path / "importance.png").is_file() and (tmp_path / "interpretability.md").is_file()
