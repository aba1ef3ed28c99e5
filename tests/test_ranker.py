"""Tests for the learned template ranker (issue 18): labels, features, training, bundle part, use in generation.

The store is a handful of hand-made AB structures (rock salt, CsCl, zinc blende); predictions come from the
randomly initialised in-memory bundle of test_generate.py; the booster is trained on a synthetic labelled table
with a planted informative feature, in seconds.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _model_fixtures import shared_bundle
from _structures import rocksalt
from pymatgen.core import Lattice, Structure
from test_generate import random_predictor

from cryspnet_gen.bundle import BundleError, write_part
from cryspnet_gen.csp.rankertrain import RankerData, fit_ranker, label_options, match_at_k, subset
from cryspnet_gen.generate import generate_candidates
from cryspnet_gen.options import GenerateOptions
from cryspnet_gen.predict import load_predictor
from cryspnet_gen.rankermodel import RankerModelError, TemplateRankerModel
from cryspnet_gen.sources.templates import build_store, load_store, records_from_folder, template_candidates
from cryspnet_gen.sources.templates.ranker import FEATURES, option_features, rerank_options
from cryspnet_gen.sources.templates.scoring import TemplateScoring, pair_probabilities, rank_options


def _cscl(a: float = 4.1) -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _zincblende(a: float = 5.41) -> Structure:
    return Structure.from_spacegroup("F-43m", Lattice.cubic(a), ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def _kbr() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ab")
    rocksalt().to(filename=str(root / "NaCl.cif"))
    _cscl().to(filename=str(root / "CsCl.cif"))
    _zincblende().to(filename=str(root / "ZnS.cif"))
    out = tmp_path_factory.mktemp("store") / "store"
    build_store(records_from_folder(root), out, progress=False, description="AB fixture")
    return load_store(out)


@pytest.fixture(scope="module")
def predictor():
    return random_predictor()


def _synthetic(n_queries: int, seed: int) -> RankerData:
    """Queries of 10 options each; the option with the highest planted feature ("sub_mean" plus a little noise)
    is the match; every other feature is noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_queries * 10, len(FEATURES)))
    y = np.zeros(n_queries * 10, dtype=np.int64)
    j = FEATURES.index("sub_mean")
    for q in range(n_queries):
        rows = slice(10 * q, 10 * q + 10)
        y[10 * q + int(np.argmax(X[rows, j] + 0.1 * rng.normal(size=10)))] = 1
    return RankerData(
        X=X,
        y=y,
        query=np.repeat(np.arange(n_queries), 10),
        kept=np.ones(n_queries * 10, dtype=bool),
        formulas=[f"Q{q}" for q in range(n_queries)],
    )


@pytest.fixture(scope="module")
def trained() -> TemplateRankerModel:
    return fit_ranker(_synthetic(300, 0), _synthetic(60, 1), objective="binary", depth=10, seed=0)


def test_labels_mark_the_matching_template_and_not_another(store, predictor):
    data = label_options([("KBr", _kbr())], store, predictor, depth=10)
    assert data.formulas == ["KBr"] and data.X.shape == (len(data.y), len(FEATURES))
    (pred,) = predictor.predict(["KBr"], top_bravais=14, top_space_groups=230)
    probs, _, _ = pair_probabilities(pred)
    options = rank_options(store, {19: 1, 35: 1}, probs, TemplateScoring(), limit=10)
    groups = [int(store.space_groups[o.row]) for o in options]
    assert sorted(set(groups)) == [216, 221, 225]
    labels = dict(zip(groups, data.y.tolist(), strict=True))
    assert labels[225] == 1  # rock salt: the true structure of KBr
    assert labels[221] == 0  # CsCl: not (zinc blende is within the benchmark's loose stol 0.5 of rock salt)
    assert data.kept.all()


def test_features_describe_the_mapping(store, predictor):
    (pred,) = predictor.predict(["NaBr"], top_bravais=14, top_space_groups=230)
    probs, _, _ = pair_probabilities(pred)
    options = rank_options(store, {11: 1, 35: 1}, probs, TemplateScoring())
    X = option_features(store, {11: 1, 35: 1}, options, pred)
    col = {name: X[:, i] for i, name in enumerate(FEATURES)}
    rock = [
        i for i, o in enumerate(options) if int(store.space_groups[o.row]) == 225 and o.mapping == (11, 35)
    ]
    (i,) = rock
    assert col["same_element_fraction"][i] == pytest.approx(0.5)  # Na kept, Cl -> Br
    assert col["d_electronegativity_max"][i] == pytest.approx(abs(2.96 - 3.16), abs=1e-6)
    assert col["oxidation_sign_agree"][i] == 1.0
    assert np.array_equal(col["hand_rank"], np.arange(len(options)))
    assert (col["hand_score_gap"] >= 0).all() and col["hand_score_gap"][0] == 0


def test_learned_ranking_beats_random_and_finds_the_planted_feature(trained):
    test = _synthetic(200, 2)
    learned = match_at_k(test, trained.raw_scores(test.X), ks=(1,))[1]
    rng = np.random.default_rng(0)
    random = match_at_k(test, rng.random(len(test.y)), ks=(1,))[1]
    assert learned > 0.6 > 0.2 > random
    # calibrated: P(match) of the options sums to about one per query (one match in each)
    p = trained.match_probability(test.X)
    assert p.sum() / 200 == pytest.approx(1.0, abs=0.25)


def test_training_is_deterministic_for_a_seed():
    a = fit_ranker(_synthetic(150, 0), _synthetic(40, 1), objective="lambdarank", depth=10, seed=3)
    b = fit_ranker(_synthetic(150, 0), _synthetic(40, 1), objective="lambdarank", depth=10, seed=3)
    assert a.model_text == b.model_text and a.platt == b.platt
    with pytest.raises(ValueError, match="objective"):
        fit_ranker(_synthetic(10, 0), _synthetic(10, 1), objective="pointwise")
    with pytest.raises(ValueError, match="unknown ranker feature"):
        fit_ranker(_synthetic(10, 0), _synthetic(10, 1), features=["nope"])


def test_subset_keeps_formulas_without_options():
    data = _synthetic(5, 0)
    part = subset(data, ["Q3", "Q1", "missing"])
    assert part.formulas == ["Q3", "Q1"] and len(part.y) == 20
    assert set(part.query.tolist()) == {0, 1}


def test_document_round_trip_and_refusals(trained):
    again = TemplateRankerModel.from_json(trained.to_json())
    X = _synthetic(5, 4).X
    assert np.array_equal(again.raw_scores(X), trained.raw_scores(X))
    assert again.cryspnet_score(0.5) == trained.cryspnet_score(0.5)
    with pytest.raises(RankerModelError, match="not valid JSON"):
        TemplateRankerModel.from_json("{")
    with pytest.raises(RankerModelError, match="not a cryspnet-gen template ranker"):
        TemplateRankerModel.from_json(json.dumps({"format": "other"}))
    doc = json.loads(trained.to_json())
    doc["version"] = 99
    with pytest.raises(RankerModelError, match="upgrade"):
        TemplateRankerModel.from_json(json.dumps(doc))


def test_bundle_part_round_trip_tamper_and_old_bundles(trained, tmp_path: Path):
    bundle = tmp_path / "b"
    shutil.copytree(shared_bundle(), bundle)
    assert load_predictor(path=bundle).template_ranker is None  # a bundle without one still loads
    write_part(bundle, "template_ranker", trained.to_json(), source="synthetic")
    loaded = load_predictor(path=bundle).template_ranker
    assert loaded is not None and loaded.model_text == trained.model_text
    assert "template_ranker.json.gz" in (bundle / "README.md").read_text()
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    (tampered / "template_ranker.json.gz").write_bytes(gzip.compress(b'{"format": "tampered"}'))
    with pytest.raises(BundleError, match="template ranker"):
        load_predictor(path=tampered)


def _store_ranker(store, predictor) -> TemplateRankerModel:
    """A ranker trained on this store's own labels, repeated: it learns to put rock salt first for AB halides."""
    queries = [("KBr", _kbr()), ("RbI", _kbr().copy()), ("LiF", rocksalt(4.0))]
    queries[1][1].replace_species({"K": "Rb", "Br": "I"})
    queries[2][1].replace_species({"Na": "Li", "Cl": "F"})
    data = label_options(queries, store, predictor, depth=10)
    reps = 40
    big = RankerData(
        X=np.tile(data.X, (reps, 1)),
        y=np.tile(data.y, reps),
        query=np.concatenate([data.query + 3 * r for r in range(reps)]),
        kept=np.tile(data.kept, reps),
        formulas=[f"{f}{r}" for r in range(reps) for f in data.formulas],
    )
    return fit_ranker(big, big, objective="binary", depth=10, seed=0)


def test_template_source_uses_the_ranker_and_is_deterministic(store, predictor):
    ranker = _store_ranker(store, predictor)
    opts = GenerateOptions(k=3, template_ranker=ranker)
    first = template_candidates("CsBr", templates=store, predictor=predictor, options=opts, known=False)
    again = template_candidates("CsBr", templates=store, predictor=predictor, options=opts, known=False)
    assert [c.template_id for c in first] == [c.template_id for c in again]
    assert first[0].space_group == 225  # the ranker learnt rock salt for AB halides
    assert all(c.score is not None and c.score <= 0 for c in first)  # log P(match)
    assert [c.score for c in first] == sorted((c.score for c in first), reverse=True)
    hand = template_candidates(
        "CsBr",
        templates=store,
        predictor=predictor,
        options=opts.replace(template_ranking="score"),
        known=False,
    )
    assert {c.template_id for c in hand} == {c.template_id for c in first}
    # the re-ranking keeps every option: those past the ranker's depth follow, scored lower
    (pred,) = predictor.predict(["CsBr"], top_bravais=14, top_space_groups=230)
    probs, _, _ = pair_probabilities(pred)
    options = rank_options(store, {55: 1, 35: 1}, probs, TemplateScoring())
    shallow = TemplateRankerModel.from_json(ranker.to_json())
    shallow.depth = 2
    out = rerank_options(store, {55: 1, 35: 1}, options, pred, shallow)
    assert sorted(o.key for o in out) == sorted(o.key for o in options)
    assert [o.key for o in out[2:]] == [o.key for o in options[2:]]
    assert max(o.score for o in out[2:]) < min(o.score for o in out[:2])


def test_options_and_generation_with_and_without_a_ranker(store, predictor):
    with pytest.raises(ValueError, match="template_ranking"):
        GenerateOptions(template_ranking="magic")
    with pytest.raises(ValueError, match="template_ranker must be"):
        GenerateOptions(template_ranker="model.json")
    # the in-memory test bundle has no ranker: "learned" says so, "auto" falls back to the hand score
    with pytest.raises(ValueError, match="template ranker"):
        generate_candidates("KBr", k=2, predictor=predictor, templates=store, template_ranking="learned")
    auto = generate_candidates("KBr", k=2, predictor=predictor, templates=store, source="templates")
    score = generate_candidates(
        "KBr", k=2, predictor=predictor, templates=store, source="templates", template_ranking="score"
    )
    assert [c.template_id for c in auto] == [c.template_id for c in score]
    ranker = _store_ranker(store, predictor)
    learned = generate_candidates("KBr", k=2, predictor=predictor, templates=store, template_ranker=ranker)
    assert learned[0].space_group == 225
    # CRYSPNet candidates sit on the ranker's scale: log P(match) from their pair probability
    assert ranker.cryspnet_score(0.9) > ranker.cryspnet_score(0.01) or ranker.cryspnet[0] <= 0


def test_features_without_groups_and_a_model_trained_without_them():
    from cryspnet_gen.sources.templates.ranker import FEATURE_GROUPS, features_without

    grouped = [f for _, cols in FEATURE_GROUPS.values() for f in cols]
    assert len(grouped) == len(set(grouped)) and set(grouped) <= set(FEATURES)
    kept = features_without(["volume", "hand_rank"])
    assert "log_volume_ratio" not in kept and "hand_rank" not in kept and "hand_score" in kept
    assert features_without([]) == FEATURES
    with pytest.raises(ValueError, match="unknown ranker feature or group 'volumes'"):
        features_without(["volumes"])
    # A model without the planted feature's group cannot find it; its values no longer move the scores.
    model = fit_ranker(_synthetic(150, 0), _synthetic(40, 1), features=features_without(["substitution"]))
    assert model.meta["masked_features"] == list(FEATURE_GROUPS["substitution"][1])
    X = _synthetic(5, 4).X
    moved = X.copy()
    moved[:, FEATURES.index("sub_mean")] += 5.0
    assert np.array_equal(model.raw_scores(X), model.raw_scores(moved))


def test_train_ranker_refuses_an_unknown_group_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    from cryspnet_gen.cli import main

    code = main(
        [
            "templates",
            "train-ranker",
            "--templates",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--without",
            "volumes",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--without" in err[0] and "volume" in err[0]


def test_cryspnet_offset_moves_cryspnet_scores_and_old_documents_read_zero(trained):
    import dataclasses

    shifted = dataclasses.replace(trained, cryspnet_offset=-1.0)
    assert shifted.cryspnet_score(0.4) == pytest.approx(trained.cryspnet_score(0.4) - 1.0)
    again = TemplateRankerModel.from_json(shifted.to_json())
    assert again.cryspnet_offset == -1.0
    doc = json.loads(trained.to_json())
    doc.pop("cryspnet_offset", None)  # a document written before the offset existed
    assert TemplateRankerModel.from_json(json.dumps(doc)).cryspnet_offset == 0.0
