"""The bundles shipped in models/: present, intact, small, and sensible on textbook compounds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cryspnet_gen.featurize import feature_labels
from cryspnet_gen.predict import DEFAULT_BUNDLE, available_bundles, load_predictor

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_default_bundle_is_shipped_and_loads() -> None:
    assert DEFAULT_BUNDLE in available_bundles()
    predictor = load_predictor()
    assert predictor.name == DEFAULT_BUNDLE
    assert set(predictor.bravais_models) == {"master", "metal", "oxide"}
    assert predictor.feature_labels == feature_labels()


def test_bundles_are_small_and_documented() -> None:
    total = 0
    for name in available_bundles():
        folder = MODELS / name
        size = sum(f.stat().st_size for f in folder.iterdir())
        assert size <= 30 * 2**20
        total += size
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["name"] == name
        readme = (folder / "README.md").read_text()
        assert manifest["split"] in readme and "CC BY 4.0" in readme
    assert total <= 60 * 10**6  # the symmetry bundles together (issue 17's budget)


def test_every_shipped_file_goes_into_the_wheel() -> None:
    """Each file of models/ matches a package-data pattern of pyproject.toml, so a wheel install has it."""
    import fnmatch
    import re

    # the package-data line (tomllib is Python >= 3.11 only; the list is plain JSON)
    text = (MODELS.parent / "pyproject.toml").read_text()
    patterns = json.loads(re.search(r'^"cryspnet_gen\.bundles" = (\[.*\])$', text, re.M).group(1))
    files = [p.relative_to(MODELS).as_posix() for p in MODELS.rglob("*") if p.is_file()]
    shipped = [f for f in files if not f.endswith(".py") and "__pycache__" not in f]
    missing = [f for f in shipped if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert shipped and not missing, missing


def test_default_bundle_is_the_calibrated_v2_recipe() -> None:
    predictor = load_predictor()
    manifest = predictor.manifest
    assert predictor.version == "2" and manifest["split"] == "full"
    assert manifest["train_config"]["arch"] == "stack"
    master = manifest["tasks"]["bravais"]["master"]
    assert master["kind"] == "lightgbm" and 0.5 < master["temperature"] < 2.0
    assert manifest["metrics"]["validation"]["bravais"]["master"]["top1"] > 0.6


@pytest.mark.parametrize(("formula", "lattice"), [("NaCl", "cF"), ("Cu", "cF"), ("W", "cI"), ("Mg", "hP")])
def test_textbook_lattices_in_top_two(formula: str, lattice: str) -> None:
    [pred] = load_predictor().predict([formula])
    assert pred.error is None
    assert lattice in [b for b, _ in pred.bravais_ranking()[:2]]


def test_shipped_predictions_are_consistent() -> None:
    preds = load_predictor().predict(["Li7La3Zr2O12", "LiFePO4", "Xx2"], top_bravais=14, top_space_groups=230)
    assert preds[2].error is not None and "Xx2" in preds[2].error
    for pred in preds[:2]:
        probs = [p for _, p in pred.space_group_ranking()]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)
        assert 5.0 < pred.volume_per_atom < 30.0


@pytest.mark.parametrize("name", ["cryspnet-mp-v2", "cryspnet-bench"])
def test_shipped_bundles_carry_a_template_ranker(name: str) -> None:
    """Both bundles ship the learned template ranker (issue 18), trained on bench-split validation formulas only,
    and its probabilities are probabilities."""
    import numpy as np

    from cryspnet_gen.sources.templates.ranker import FEATURES

    predictor = load_predictor(name)
    ranker = predictor.template_ranker
    assert ranker is not None
    assert list(ranker.features) == list(FEATURES)
    assert "template_ranker" in json.dumps(predictor.manifest)
    rng = np.random.default_rng(0)
    p = ranker.match_probability(rng.normal(size=(50, len(FEATURES))))
    assert p.shape == (50,) and np.all((p >= 0) & (p <= 1))


def test_default_generation_ranks_templates_with_the_learned_ranker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default path (shipped bundle + shipped prototype library) ranks template options with the ranker:
    each template candidate says the ranker's P(match), and its score is log P(match)."""
    import math

    from cryspnet_gen import generate_candidates

    monkeypatch.delenv("CRYSPNET_GEN_TEMPLATES")  # the shipped library, as a user gets it
    cands = generate_candidates("NaCl", k=3, known=False)
    assert len(cands) == 3
    assert all(c.source == "template" for c in cands), [(c.source, c.notes) for c in cands]
    for c in cands:
        match = re.search(r"learned ranker P\(match\) ([0-9.]+)", " ".join(c.notes))
        assert match, c.notes
        assert float(match.group(1)) == pytest.approx(math.exp(c.score), abs=0.006)
    assert cands[0].score >= cands[1].score >= cands[2].score
