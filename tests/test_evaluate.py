"""Tests of the metrics and of the evaluation report (on a tiny bundle trained on synthetic labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _model_fixtures import cached_table, shared_bundle

from cryspnet_gen import metrics as M
from cryspnet_gen.evaluate import (
    LightGBMBaseline,
    RandomForestBaseline,
    calibration_table,
    evaluate,
    joint_space_group_proba,
    predictor_outputs,
)
from cryspnet_gen.symmetry import BRAVAIS_LATTICES, space_groups_of


def test_topk_accuracy() -> None:
    proba = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
    y = np.array([1, 1, 0])
    assert M.topk_accuracy(proba, y, 1) == pytest.approx(1 / 3)
    assert M.topk_accuracy(proba, y, 2) == pytest.approx(2 / 3)
    assert M.topk_accuracy(proba, y, 3) == 1.0
    assert M.topk_accuracy(proba, np.array([-1, 0, 2]), 1) == pytest.approx(2 / 3)  # unknown class = miss


def test_baselines() -> None:
    freq = np.array([0.6, 0.3, 0.1])
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    assert M.mode_topk(freq, y, 1) == pytest.approx(0.5)
    assert M.mode_topk(freq, y, 2) == pytest.approx(0.8)
    # k=1: sum_c p_train(c) p_test(c)
    assert M.random_topk(freq, y, 1) == pytest.approx(0.6 * 0.5 + 0.3 * 0.3 + 0.1 * 0.2)
    # k=2 without replacement: P(c drawn) = p_c + sum_{d != c} p_d p_c / (1 - p_d)
    p = freq
    drawn = [p[c] + sum(p[d] * p[c] / (1 - p[d]) for d in range(3) if d != c) for c in range(3)]
    exact = 0.5 * drawn[0] + 0.3 * drawn[1] + 0.2 * drawn[2]
    assert M.random_topk(freq, y, 2, draws=4000) == pytest.approx(exact, abs=0.01)
    assert M.random_topk(freq, y, 3) == pytest.approx(1.0)


def test_regression_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.r2_score(y, y) == 1.0
    assert M.r2_score(y, np.full(4, y.mean())) == pytest.approx(0.0)
    assert M.log_mse(y, 2 * y) == pytest.approx(np.log(2) ** 2)
    assert np.isnan(M.r2_score(np.ones(3), np.ones(3)))
    cm = M.confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    assert cm.tolist() == [[1, 0], [1, 1]]


def test_joint_probability_sums_to_one() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(14), size=5)
    cond = {
        b: (list(space_groups_of(b)), rng.dirichlet(np.ones(len(space_groups_of(b))), size=5))
        for b in BRAVAIS_LATTICES
    }
    joint = joint_space_group_proba(p, cond)
    assert joint.shape == (5, 230)
    assert np.allclose(joint.sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, object]:
    from cryspnet_gen.predict import load_predictor

    frame, X, _ = cached_table()
    frame = frame.copy()
    # give both test sets rows
    test_rows = np.flatnonzero(frame["split"].to_numpy() == "val")[:80]
    frame.loc[test_rows[:40], "split"] = "test_mpts52"
    frame.loc[test_rows[40:], "split"] = "test_mp20"
    predictor = load_predictor(path=shared_bundle())
    out = tmp_path_factory.mktemp("report")
    report = evaluate(
        predictor,
        frame,
        X,
        out_dir=out,
        rf_trees=10,
        compare={"same": predictor},
        ablation={"mp+cod": predictor},
    )
    return out, report.data, frame


def test_report_files_and_numbers(report_dir: tuple[Path, dict, object]) -> None:
    out, data, frame = report_dir
    assert (out / "evaluation.md").is_file()
    assert json.loads((out / "evaluation.json").read_text()) == json.loads(json.dumps(data, default=float))
    for split in ("test_mpts52", "test_mp20"):
        entry = data["test_sets"][split]
        assert entry["n"] == (frame["split"] == split).sum()
        assert (out / f"confusion_{split}.png").stat().st_size > 1000
        assert (out / f"parity_{split}.png").stat().st_size > 1000
        assert (out / f"reliability_{split}.png").stat().st_size > 1000
        for model in (entry, entry["random_forest"], entry["lightgbm"]):
            cal = model["calibration"]
            assert 0 <= cal["bravais_ece"] <= 1 and 0 <= cal["space_group_ece"] <= 1
            assert sum(cal["bravais_curve"]["count"]) == entry["n"]
        assert entry["lightgbm"]["bravais"]["top1"] <= entry["lightgbm"]["bravais"]["top2"]
        assert entry["compare"]["same"]["bravais"] == entry["bravais"]["master"]
        assert entry["compare"]["same"]["calibration"]["bravais_ece"] == entry["calibration"]["bravais_ece"]
        b = entry["bravais"]
        for model in ("master", "random", "mode"):
            assert 0 <= b[model]["top1"] <= b[model]["top2"] <= 1
        e2e = entry["space_group_end_to_end"]
        assert 0 <= e2e["top1"] <= e2e["top5"] <= 1
        for s in entry["space_group_given_lattice"].values():
            assert s["top1"] <= s["top3"]
        assert entry["random_forest"]["bravais"]["top1"] <= entry["random_forest"]["bravais"]["top2"]
        # the ablation scored the same predictor: same numbers
        assert entry["ablation"]["mp+cod"]["bravais"] == b["master"]
        assert set(entry["lattice"]) <= set(BRAVAIS_LATTICES)
    md = (out / "evaluation.md").read_text()
    assert "Table 2 analogue" in md and "RandomForest" in md and "confusion_test_mp20.png" in md
    assert "All models side by side" in md and "| LightGBM |" in md and "reliability_test_mp20.png" in md
    assert data["lightgbm"]["rounds"]["bravais"] >= 1


def test_model_beats_random_on_learnable_labels(report_dir: tuple[Path, dict, object]) -> None:
    """The synthetic labels are functions of the features: the trained model must beat guessing."""
    _, data, _ = report_dir
    both = [data["test_sets"][s]["bravais"] for s in ("test_mpts52", "test_mp20")]
    assert np.mean([b["master"]["top1"] for b in both]) > np.mean([b["random"]["top1"] for b in both]) + 0.15


def test_random_forest_outputs_are_distributions() -> None:
    frame, X, _ = cached_table()
    train = frame["split"].to_numpy() == "train"
    rf = RandomForestBaseline(n_estimators=5, seed=0, n_jobs=1).fit(
        X[train], frame["bravais"][train], frame["space_group"][train]
    )
    out = rf.outputs(X[:20])
    assert out.p_lattice.shape == (20, 14)
    assert np.allclose(out.p_lattice.sum(axis=1), 1)
    assert np.allclose(out.joint.sum(axis=1), 1)


def test_lightgbm_baseline_learns_and_is_deterministic() -> None:
    frame, X, _ = cached_table()
    split = frame["split"].to_numpy()
    tr, va = split == "train", split == "val"

    def fit() -> LightGBMBaseline:
        return LightGBMBaseline(seed=0, n_jobs=1, max_rounds=30).fit(
            X[tr],
            frame["bravais"][tr],
            frame["space_group"][tr],
            X[va],
            frame["bravais"][va],
            frame["space_group"][va],
        )

    gbm = fit()
    out = gbm.outputs(X[va])
    assert np.allclose(out.p_lattice.sum(axis=1), 1) and np.allclose(out.joint.sum(axis=1), 1)
    y = np.array([BRAVAIS_LATTICES.index(b) for b in frame["bravais"][va]])
    freq = M.class_frequencies(list(frame["bravais"][tr]), BRAVAIS_LATTICES)
    assert M.topk_accuracy(out.p_lattice, y, 1) > M.mode_topk(freq, y, 1) + 0.1
    assert np.array_equal(fit().outputs(X[va]).p_lattice, out.p_lattice)


def test_calibration_table_of_an_overconfident_model() -> None:
    """A model that always says 0.99 but is right half of the time has a top-1 ECE near 0.49."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 14, n)
    guess = np.where(rng.random(n) < 0.5, y, (y + 1) % 14)
    p = np.full((n, 14), 0.01 / 13)
    p[np.arange(n), guess] = 0.99
    cond = {
        b: (list(space_groups_of(b)), np.full((n, len(space_groups_of(b))), 1 / len(space_groups_of(b))))
        for b in BRAVAIS_LATTICES
    }
    from cryspnet_gen.evaluate import ModelOutputs

    cal = calibration_table(ModelOutputs(p, cond), y, np.zeros(n, dtype=int))
    assert cal["bravais_ece"] == pytest.approx(0.99 - np.mean(guess == y), abs=1e-9)
    assert cal["bravais_curve"]["count"] == [n]


def test_predictor_outputs_shapes() -> None:
    from cryspnet_gen.predict import load_predictor

    _, X, _ = cached_table()
    out = predictor_outputs(load_predictor(path=shared_bundle()), X[:7])
    assert out.p_lattice.shape == (7, 14)
    assert out.volume_per_atom is not None and out.volume_per_atom.shape == (7,)
    assert np.allclose(out.joint.sum(axis=1), 1, atol=1e-4)
