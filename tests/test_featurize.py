"""Tests for cryspnet_gen.featurize: the label contract, agreement with matminer, input validation, batches."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition

import cryspnet_gen.featurize as fz
from cryspnet_gen.featurize import (
    FEATURIZER_SETTINGS,
    N_ELEMENTS_LABEL,
    Features,
    feature_labels,
    featurize,
    featurize_one,
    parse_composition,
)
from cryspnet_gen.formula import parse_string

N_FEATURES = 22 * 5 + 6 + 4 + 3 + 1 + 118 + 1


@pytest.fixture(scope="module")
def reference():
    """matminer's featurizers, configured from FEATURIZER_SETTINGS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fz.matminer_featurizers()


def _matminer_row(featurizers, comp: Composition) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = [float(v) for f in featurizers for v in f.featurize(comp)]
    return [*row, float(len(comp.element_composition))]


# --------------------------------------------------------------------------------------------------------------
# labels and settings


def test_labels_are_matminers_in_order(reference):
    labels = feature_labels()
    expected = [label for f in reference for label in f.feature_labels()] + [N_ELEMENTS_LABEL]
    assert labels == expected
    assert len(labels) == N_FEATURES == 243
    assert len(set(labels)) == len(labels)
    assert labels[0] == "MagpieData minimum Number"
    assert labels[3] == "MagpieData mean Number"
    assert labels[109] == "MagpieData avg_dev SpaceGroupNumber"
    assert labels[110:116] == ["0-norm", "2-norm", "3-norm", "5-norm", "7-norm", "10-norm"]
    assert labels[116:123] == [
        "frac s valence electrons",
        "frac p valence electrons",
        "frac d valence electrons",
        "frac f valence electrons",
        "compound possible",
        "max ionic char",
        "avg ionic char",
    ]
    assert labels[123] == "band center"
    assert labels[124] == "H" and labels[241] == "Og"
    assert labels[-1] == N_ELEMENTS_LABEL
    assert not any("mode" in label for label in labels)


def test_labels_are_a_fresh_copy():
    labels = feature_labels()
    labels.append("junk")
    assert feature_labels()[-1] == N_ELEMENTS_LABEL


def test_settings_are_json_and_pin_every_matminer_argument():
    from matminer.featurizers.composition import ElementProperty

    assert json.loads(json.dumps(FEATURIZER_SETTINGS)) == FEATURIZER_SETTINGS

    def check(spec):
        module, _, name = spec["class"].rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name)
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert sorted(spec["args"]) == sorted(params), spec["class"]
        for value in spec["args"].values():
            if isinstance(value, dict) and "class" in value:
                check(value)

    for spec in FEATURIZER_SETTINGS["featurizers"]:
        check(spec)
    magpie = ElementProperty.from_preset("magpie", impute_nan=True)
    args = FEATURIZER_SETTINGS["featurizers"][0]["args"]
    assert args["features"] == magpie.features
    assert args["stats"] == [s for s in magpie.stats if s != "mode"]
    assert args["impute_nan"] is True


def test_import_is_light():
    code = (
        "import sys, cryspnet_gen.featurize as f; "
        "heavy = [m for m in ('matminer', 'pymatgen.core', 'pandas') if m in sys.modules]; "
        "assert not heavy, heavy; "
        "assert f._tables.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------------------
# agreement with matminer

EDGE_CASES = [
    "Fe",
    "O2",
    "H",
    "NaCl",
    "Fe3O4",
    "XeF2",
    "ArF",
    "KrF2",
    "La1.8Sr0.2CuO4",
    "Ca3(PO4)2",
    "K4[Fe(CN)6]",
    "Y3N@C80",
    "Li7La3Zr2O12",
    "Fe0.001Ni0.999",
    "Li0.333333Co0.333333Ni0.333334O2",
    "UO2",
    "PuO2",
    "Fr2O",
    "RaCl2",
    "Ac2O3",
    "No2O3",
    "LrN",
    "Ce(Al5Ru)2",
    "Na3VSi4(HO6)2",
    "Mg(OH)2",
    "Fe2Fe3",
    "C999",
    "K0.87684729Ba0.03940887Na0.09852217Mg3.144Ti0.144Mn0.8004Al2.2752Zn1.08Cr0.012Fe0.504Si5.84H0.98522167O24",
]
# forms this module reads differently from pymatgen: (input, the pymatgen formula meant)
REWRITTEN = [("CuSO4·5H2O", "CuSO4(H2O)5"), ("Na2CO3 * 10H2O", "Na2CO3(H2O)10")]


def _sample(path: Path, n: int, rng: np.random.Generator, keep=lambda f: True) -> list[str]:
    # keep_default_na=False: "NaN" is sodium nitride
    formulas = pd.read_csv(path, usecols=["formula"], keep_default_na=False)["formula"]
    pool = sorted({f for f in formulas if f and keep(f)})
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


@pytest.mark.slow
def test_agrees_with_matminer_on_real_formulas(shared_data, reference):
    rng = np.random.default_rng(20240601)
    cod = shared_data / "dara_symmetry_labels" / "cod_filtered_info_2024_flat.csv.gz"
    formulas = (
        _sample(shared_data / "mp2025_topology" / "lattice.csv.gz", 1400, rng)
        + _sample(cod, 700, rng, keep=lambda f: "." in f)
        + _sample(cod, 200, rng, keep=lambda f: "." not in f)
    )
    feats = featurize(formulas + EDGE_CASES + [f for f, _ in REWRITTEN])
    rejected = [e for e in feats.errors if e is not None]
    assert len(rejected) <= 10, rejected
    assert all(("noble gases" in e or "not supported" in e or "unknown element" in e) for e in rejected)
    assert feats.ok[len(formulas) :].all(), feats.errors[len(formulas) :]

    meant = formulas + EDGE_CASES + [m for _, m in REWRITTEN]
    keep = np.flatnonzero(feats.ok)
    assert len(keep) >= 2000
    assert sum("." in meant[i] for i in keep) >= 600
    ref = np.array([_matminer_row(reference, Composition(meant[i])) for i in keep])
    got = feats.matrix[keep]
    assert got.dtype == np.float32
    assert not np.isnan(got).any() and not np.isnan(ref).any()

    boolean = feats.labels.index("compound possible")
    np.testing.assert_array_equal(got[:, boolean], ref[:, boolean])
    assert 0 < got[:, boolean].sum() < len(keep)  # both answers occur
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)


def test_charge_balance_with_many_combinations_matches_matminer(reference):
    """Formulas with more than 512 oxidation-state combinations take the pruned path."""
    ion = reference[3]
    formulas = [
        "MnClBrIPSSeTeO9",
        "MnCrVClBrIPSO12",
        "Mn2Cl3Br5I7P11S13Se17Te19",
        "Li0.0123ClBrIPSSeTe",
        "Li0.0123Cs0.9877ClBrIPSSeTe",
    ]
    states = fz._tables().oxidation_states
    answers = set()
    for formula in formulas:
        zs, amounts = parse_string(formula)
        assert math.prod(len(states[z]) for z in zs) > 512
        expected = bool(ion.featurize(Composition(formula))[0])
        assert fz._compound_possible.__wrapped__(zs, amounts) is expected, formula
        answers.add(expected)
    assert answers == {True, False}


# --------------------------------------------------------------------------------------------------------------
# input validation

BAD_STRINGS = [
    "",
    "   ",
    "Xx2O",
    "H2O(",
    "Fe2O3)",
    "()",
    "Fe()",
    "Fe-1O",
    "Na0Cl",
    "Na0ClNa",
    "Fe(O)0",
    "He",
    "Ar2",
    "HeNe",
    "Fe1e9O",
    "C1001",
    "Fe1e-9O",
    "FeO1e400",
    "Fe1nanO",
    "FeinfO",
    "Fe" + "9" * 400,
    "D2O",
    "Cn",
    "Og2",
    "fe2o3",
    "NaCl2-",
    "Fe2+O3",
    "Fe..2O",
    "123",
    "Fe·",
    "·H2O",
    "M2O3",
]


@pytest.mark.parametrize("formula", BAD_STRINGS)
def test_bad_strings_raise_value_error_naming_the_formula(formula):
    with pytest.raises(ValueError, match="invalid formula") as info:
        parse_composition(formula)
    assert repr(formula) in str(info.value)
    with pytest.raises(ValueError) as info:
        featurize_one(formula)
    assert repr(formula) in str(info.value)


@pytest.mark.parametrize("value", [None, 5, 3.5, float("nan"), b"NaCl", ["Na", "Cl"], {"Na": 1, "Cl": 1}])
def test_non_formula_types_raise_value_error(value):
    with pytest.raises(ValueError, match="expected a formula string") as info:
        parse_composition(value)
    assert str(value) in str(info.value)
    with pytest.raises(ValueError, match="expected a formula string"):
        featurize_one(value)


@pytest.mark.parametrize(
    ("comp", "reason"),
    [
        (Composition({"Fe": float("inf"), "O": 1}), "not a positive finite"),
        (Composition({"Fe": 1e-7, "O": 1}), "below the minimum"),
        (Composition({"Fe": 2000, "O": 1}), "exceeds the maximum"),
        (Composition("Xx2O"), "dummy species"),
        (Composition("He2"), "noble gases"),
        (Composition("Cn"), "not supported"),
        (Composition(), "no elements"),
    ],
)
def test_bad_compositions_raise_value_error(comp, reason):
    with pytest.raises(ValueError, match=reason) as info:
        parse_composition(comp)
    try:
        text = comp.formula
    except OverflowError:  # pymatgen cannot write an infinite amount
        text = "Feinf O1"
    assert str(info.value).startswith("invalid formula") and text in str(info.value)


def test_bad_reasons_are_specific():
    reasons = {f: featurize(f).errors[0] for f in ["Na0Cl", "Fe1e9O", "Xx2O", "He", "D2O", "Cn"]}
    assert "not positive" in reasons["Na0Cl"]
    assert "exceeds the maximum 1000" in reasons["Fe1e9O"]
    assert "unknown element symbol 'Xx'" in reasons["Xx2O"]
    assert "noble gases" in reasons["He"]
    assert "isotope" in reasons["D2O"]
    assert "Z=112" in reasons["Cn"]


def test_accepted_forms():
    assert parse_composition("Ca3(PO4)2") == Composition("Ca3(PO4)2")
    assert parse_composition("La1.8Sr0.2CuO4") == Composition({"La": 1.8, "Sr": 0.2, "Cu": 1, "O": 4})
    assert parse_composition("CuSO4·5H2O") == Composition("CuSO4(H2O)5")
    assert parse_composition("CuSO4•5H2O") == Composition("CuSO4(H2O)5")
    # "." is a decimal point, as in pymatgen: this is CuSO4.5H2O, not the pentahydrate
    assert parse_composition("CuSO4.5H2O") == Composition({"Cu": 1, "S": 1, "O": 5.5, "H": 2})
    assert parse_composition("K4[Fe(CN)6]") == Composition("K4Fe(CN)6")
    assert parse_composition("Fe2 O3") == Composition("Fe2O3")
    assert parse_composition("NaN") == Composition({"Na": 1, "N": 1})
    assert parse_composition("XeF2") == Composition("XeF2")
    assert parse_composition("Lr") == Composition("Lr")
    assert parse_composition("C1000") == Composition("C1000")
    species = Composition({"Fe3+": 2, "O2-": 3})
    assert parse_composition(species) == Composition("Fe2O3")


def test_dotted_hydrate_is_read_as_a_decimal_with_a_warning(caplog):
    fz.clear_caches()
    with caplog.at_level("WARNING", logger="cryspnet_gen.featurize"):
        assert parse_composition("MgSO4.7H2O") == Composition({"Mg": 1, "S": 1, "O": 5.7, "H": 2})
        parse_composition("La1.8Sr0.2CuO4")
    assert len(caplog.records) == 1 and "MgSO4.7H2O" in caplog.records[0].getMessage()


# --------------------------------------------------------------------------------------------------------------
# batches


def test_batch_keeps_order_and_nan_rows():
    formulas = ["NaCl", "Xx", "Fe2O3", "", "NaCl", None, "Ca3(PO4)2"]
    feats = featurize(formulas)
    assert isinstance(feats, Features)
    assert feats.matrix.shape == (7, N_FEATURES) and len(feats) == 7
    assert feats.ok.tolist() == [True, False, True, False, True, False, True]
    assert [e is None for e in feats.errors] == feats.ok.tolist()
    assert "'Xx'" in feats.errors[1] and "empty" in feats.errors[3] and "NoneType" in feats.errors[5]
    assert feats.formulas == ["NaCl", "Xx", "Fe2O3", "", "NaCl", "None", "Ca3(PO4)2"]
    assert np.isnan(feats.matrix[[1, 3, 5]]).all()
    assert not np.isnan(feats.matrix[[0, 2, 4, 6]]).any()
    for i in (0, 2, 6):
        np.testing.assert_array_equal(feats.matrix[i], featurize_one(formulas[i]))
    np.testing.assert_array_equal(feats.matrix[0], feats.matrix[4])
    assert feats.labels == feature_labels()


def test_all_bad_and_empty_batches():
    feats = featurize(["Xx", "He"])
    assert feats.matrix.shape == (2, N_FEATURES) and np.isnan(feats.matrix).all()
    empty = featurize([])
    assert empty.matrix.shape == (0, N_FEATURES) and empty.errors == []


def test_single_inputs_give_one_row():
    from_str = featurize("Fe2O3")
    from_comp = featurize(Composition("Fe2O3"))
    assert from_str.matrix.shape == from_comp.matrix.shape == (1, N_FEATURES)
    np.testing.assert_array_equal(from_str.matrix, from_comp.matrix)
    assert from_comp.formulas == ["Fe2 O3"]
    # oxidation states are ignored, the element amounts count
    np.testing.assert_array_equal(featurize_one(Composition({"Fe3+": 2, "O2-": 3})), from_str.matrix[0])
    # generators and pandas objects are iterables of formulas
    assert featurize(f for f in ["NaCl", "KCl"]).matrix.shape == (2, N_FEATURES)
    assert featurize(pd.Series(["NaCl", "KCl", "LiF"])).matrix.shape == (3, N_FEATURES)


def test_float32_and_values():
    row = featurize_one("NaCl")
    assert row.dtype == np.float32 and row.shape == (N_FEATURES,)
    assert featurize(["NaCl"]).matrix.dtype == np.float32
    labels = feature_labels()
    values = dict(zip(labels, row.tolist(), strict=True))
    assert values["Na"] == values["Cl"] == 0.5
    assert values[N_ELEMENTS_LABEL] == values["0-norm"] == 2
    assert values["compound possible"] == 1.0
    assert values["MagpieData minimum Number"] == 11 and values["MagpieData maximum Number"] == 17
    assert values["MagpieData mean Number"] == 14 and values["MagpieData avg_dev Number"] == 3
    # fast=True assumes one oxidation state per element, so mixed-valence Fe3O4 is "impossible"
    assert featurize_one("Fe3O4")[labels.index("compound possible")] == 0.0


def test_deterministic():
    formulas = ["LiFePO4", "La1.8Sr0.2CuO4", "Xx", "Ca3(PO4)2", "CuSO4·5H2O"]
    first = featurize(formulas)
    fz.clear_caches()
    second = featurize(list(reversed(formulas)))
    np.testing.assert_array_equal(first.matrix, second.matrix[::-1])
    assert first.errors == second.errors[::-1]


def test_dedupes_repeats(monkeypatch):
    seen: list[int] = []
    original = fz._featurize_parsed

    def spy(rows, n_features):
        seen.append(len(rows))
        return original(rows, n_features)

    monkeypatch.setattr(fz, "_featurize_parsed", spy)
    formulas = ["NaCl"] * 500 + ["Na1Cl1", "KCl", Composition("KCl"), "Xx"] * 100
    feats = featurize(formulas)
    assert seen == [2]  # NaCl and KCl, computed once each
    assert feats.matrix.shape == (900, N_FEATURES)
    np.testing.assert_array_equal(feats.matrix[500], feats.matrix[0])
    assert np.isnan(feats.matrix[503]).all() and feats.ok.sum() == 800


def test_to_dataframe():
    df = featurize(["NaCl", "Xx"]).to_dataframe()
    assert list(df.columns) == feature_labels()
    assert list(df.index) == ["NaCl", "Xx"]
    assert df.loc["NaCl", "Na"] == pytest.approx(0.5) and df.loc["Xx"].isna().all()
