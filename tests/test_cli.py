"""The ``cryspnet-gen`` command line: every bad value is a one-line usage error before any model loads, every
option has help and shows its default, ``-v/-q`` go anywhere, outputs are never overwritten silently.

The property-based test at the end drives the whole parser with random argument vectors and formulas.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryspnet_gen.cli import build_parser, main

#: The subcommands whose commands these tests stub out (name in the parser -> module attribute).
COMMANDS = {
    "cryspnet_gen.cli.generate": "cmd_generate",
    "cryspnet_gen.cli.predict": "cmd_predict",
    "cryspnet_gen.cli.featurize": "cmd_featurize",
    "cryspnet_gen.cli.train": "cmd_train",
    "cryspnet_gen.cli.data": "cmd_data_build",
    "cryspnet_gen.cli.templates": "cmd_templates_lookup",
}


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything tries to load a model bundle."""
    import cryspnet_gen.predict

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(cryspnet_gen.predict, "load_predictor", refuse)


def run(argv: list[str], capsys) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    return rc, out, err, seconds


def invalid_cases(tmp: Path) -> list[tuple[list[str], str]]:
    """``(argv, words the error names)`` for each invalid input of issue #22 (and a few more)."""
    a_file = tmp / "a-file.txt"
    a_file.write_text("NaCl\n")
    a_dir = tmp / "emptydir"
    a_dir.mkdir()
    return [
        (["generate", "NaCl", "--space-group", "999"], "--space-group"),
        (["generate", "NaCl", "--space-group", "0"], "--space-group"),
        (["generate", "NaCl", "--max-atoms", "0"], "--max-atoms"),
        (["generate", "NaCl", "--timeout", "0"], "--timeout"),
        (["generate", "NaCl", "--timeout", "nan"], "--timeout"),
        (["generate", "NaCl", "--seed", "-1"], "--seed"),
        (["generate", "NaCl", "-k", "0"], "-k"),
        (["generate", "NaCl", "--steps", "0"], "--steps"),
        (["generate", "NaCl", "--threads", "0"], "--threads"),
        (["generate", "NaCl", "--format", "xyz"], "--format"),
        (["generate", "NaCl", "-o", str(a_file)], "is a file"),
        (["generate", "-i", str(tmp / "missing.txt")], "does not exist"),
        (["generate", "NaCl", "--model", "foo"], "--model"),
        (["predict", "NaCl", "--top-bravais", "0"], "--top-bravais"),
        (["predict", "NaCl", "--top-bravais", "15"], "--top-bravais"),
        (["predict", "NaCl", "--top-space-groups", "0"], "--top-space-groups"),
        (["predict", "NaCl", "--model", "foo"], "--model"),
        (["predict", "NaCl", "--model", str(a_dir)], "not a model bundle folder"),
        (["predict", "NaCl", "--model-path", str(a_dir)], "not a model bundle folder"),
        (["predict", "NaCl", "-o", str(a_dir)], "is a folder"),
        (["predict", "NaCl", "-o", str(a_file)], "already exists"),
        (["featurize", "NaCl", "-o", str(a_dir)], "is a folder"),
        (["train", "--out", str(tmp / "runs"), "--preset", "nope"], "--preset"),
        (["train", "--out", str(tmp / "runs"), "--config", str(tmp / "nope.json")], "does not exist"),
        (["evaluate", "--model", "foo", "--out", str(tmp / "rep")], "--model"),
        (["evaluate", "--out", str(tmp / "rep")], "--model"),
        (["data", "build", "--workers", "0"], "--workers"),
        (["templates", "lookup", "NaCl", "-n", "0"], "-n"),
        (
            ["templates", "build", "--from", str(a_dir), "--out", str(tmp / "s"), "--per-type", "-1"],
            "--per-type",
        ),
        (
            ["templates", "build", "--from", str(a_dir), "--out", str(tmp / "s"), "--workers", "0"],
            "--workers",
        ),
        (["submit", "NaCl", "--space-group", "999"], "--space-group"),
        (["submit", "NaCl", "-k", "0"], "-k"),
        (["run", "--threads", "0"], "--threads"),
        (["results", "NaCl", "-k", "0"], "-k"),
        (["nonsense"], "invalid choice"),
        ([], "required"),
    ]


def test_every_invalid_input_is_one_line_and_exit_2_before_any_model(tmp_path, capsys, no_model):
    for argv, words in invalid_cases(tmp_path):
        rc, out, err, seconds = run(argv, capsys)
        assert rc == 2, (argv, rc, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert words in lines[0] and "Traceback" not in err, (argv, err)
        assert lines[0].startswith("cryspnet-gen"), (argv, err)
        assert seconds < 3, (argv, seconds)
        assert out == "", (argv, out)
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"
    assert sorted(p.name for p in (tmp_path / "emptydir").iterdir()) == []


def test_run_time_errors_are_one_line_without_traceback(tmp_path, capsys, monkeypatch):
    """An unexpected exception inside a command: one line naming it, exit 1; the traceback only with -v."""
    import cryspnet_gen.cli.featurize as featurize

    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(featurize, "cmd_featurize", boom)
    rc, _, err, _ = run(["featurize", "NaCl"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "RuntimeError: something broke" in err
    assert "--verbose" in err and "Traceback" not in err
    rc, _, err, _ = run(["featurize", "NaCl", "-v"], capsys)
    assert rc == 1 and "Traceback" in err


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def test_every_option_has_help_and_shows_its_default():
    missing = []
    for path, parser in walk(build_parser()):
        formatter = parser.formatter_class(prog=parser.prog)
        for action in parser._actions:
            if isinstance(
                action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
            ):
                continue
            if action.help == argparse.SUPPRESS:
                continue  # deprecated spellings and internal options
            name = "/".join(action.option_strings) or action.dest
            text = formatter._get_help_string(action) if action.help else ""
            if not text.strip():
                missing.append(f"{' '.join(path)} {name}: no help")
            elif (
                action.option_strings
                and action.nargs != 0
                and not action.required
                and "default" not in text.lower()
            ):
                missing.append(f"{' '.join(path)} {name}: no default shown ({text!r})")
    assert not missing, "\n".join(missing)


def test_help_of_every_subcommand_shows_defaults(capsys):
    for path, _ in walk(build_parser()):
        rc, out, _, _ = run([*path, "--help"], capsys)
        assert rc == 0 and "usage:" in out, path
    rc, out, _, _ = run(["generate", "--help"], capsys)
    assert "(default: 300)" in out and "(default: 60.0)" in out  # --steps, --timeout
    assert "cryspnet-mp-v2" in out  # --model lists the shipped bundles
    rc, out, _, _ = run(["templates", "build", "--help"], capsys)
    assert "12 min" in out and "MB" in out  # its cost


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "predict", "NaCl"],
        ["predict", "-v", "NaCl"],
        ["predict", "NaCl", "-v"],
        ["predict", "NaCl", "--verbose", "-q"],
        ["-qv", "predict", "NaCl"],
    ],
)
def test_global_flags_anywhere(argv, capsys, monkeypatch):
    import cryspnet_gen.cli.predict as predict

    seen = {}

    def record(args):
        seen.update(verbose=args.verbose, quiet=args.quiet, formulas=args.formulas)
        return 0

    monkeypatch.setattr(predict, "cmd_predict", record)
    rc, _, err, _ = run(argv, capsys)
    assert rc == 0, err
    assert seen["formulas"] == ["NaCl"] and seen["verbose"] is True
    assert seen["quiet"] is ("-q" in argv or "-qv" in argv)


def test_templates_store_spellings(tmp_path, capsys, no_model):
    """``--templates`` everywhere for template stores; ``templates lookup --store`` still works, with a note."""
    missing = tmp_path / "no-store"
    rc, _, err, _ = run(["templates", "lookup", "NaCl", "--templates", str(missing)], capsys)
    assert rc == 2 and "unrecognized" not in err and "no template store" in err
    rc, _, err, _ = run(["templates", "lookup", "NaCl", "--store", str(missing)], capsys)
    assert rc == 2 and "--store is deprecated; use --templates" in err and "no template store" in err


def test_predict_refuses_to_overwrite_and_writes_0644(tmp_path, capsys, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_generate import random_predictor

    import cryspnet_gen.cli.common as common

    monkeypatch.setattr(common, "load_predictor_for", lambda args: random_predictor())
    out = tmp_path / "pred.csv"
    old = os.umask(0o022)
    try:
        rc, _, err, _ = run(["predict", "NaCl", "SrTiO3", "-o", str(out)], capsys)
    finally:
        os.umask(old)
    assert rc == 0, err
    assert (out.stat().st_mode & 0o777) == 0o644
    text = out.read_text()
    rc, _, err, _ = run(["predict", "NaCl", "-o", str(out)], capsys)
    assert rc == 2 and "already exists" in err and "--force" in err
    assert out.read_text() == text
    rc, _, err, _ = run(["predict", "NaCl", "-o", str(out), "--force"], capsys)
    assert rc == 0 and out.read_text() != text
    assert not list(tmp_path.glob(".*.tmp"))


def test_predict_prints_the_cells_generate_builds(capsys, monkeypatch):
    """The cell ``predict`` reports for a (lattice, group) pair is the one ``generate`` builds (Z included)."""
    import sys
    import warnings

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parent))
    from test_generate import random_predictor

    from cryspnet_gen.cli.predict import structure_cells
    from cryspnet_gen.generate import generate_candidates
    from cryspnet_gen.records import predictions_to_dataframe

    predictor = random_predictor()
    preds = predictor.predict(["NaCl", "SrTiO3"], top_bravais=14, top_space_groups=3)
    frame = structure_cells(preds, predictions_to_dataframe(preds), 200)
    for formula, sg in (("NaCl", 225), ("SrTiO3", 221)):
        row = frame[(frame.formula == formula) & (frame.space_group == sg)]
        if row.empty:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (cand,) = generate_candidates(formula, k=1, predictor=predictor, space_groups=[sg], timeout=60)
        assert int(row.z.iloc[0]) == cand.z
        if not any("stretched" in n or ("Z=" in n and "failed" in n) for n in cand.notes):
            assert float(row.a.iloc[0]) == pytest.approx(cand.structure.lattice.a, rel=1e-6)
    assert pd.api.types.is_integer_dtype(frame.z)
    assert (frame.dropna(subset=["z"]).z >= 1).all()


def test_generate_refuses_existing_outputs_before_any_work(tmp_path, capsys, no_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "NaCl_candidates.json").write_text("[]")
    rc, _, err, seconds = run(["generate", "NaCl", "LiFePO4", "-o", str(out)], capsys)
    assert rc == 2 and "NaCl_candidates.json already exists" in err and "--force" in err
    assert seconds < 3


def test_written_candidate_files_are_0644(tmp_path):
    from pymatgen.core import Lattice, Structure

    from cryspnet_gen.files import write_candidates
    from cryspnet_gen.records import Candidate

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cand = Candidate("NaCl", 1, "cF", 225, "Fm-3m", 0.5, 0.5, 1.0, s, 4, "NaCl")
    old = os.umask(0o022)
    try:
        paths = write_candidates([cand], tmp_path)
    finally:
        os.umask(old)
    assert paths and all((p.stat().st_mode & 0o777) == 0o644 for p in paths)


def test_train_presets_match_the_library():
    from cryspnet_gen.cli.train import PRESETS
    from cryspnet_gen.train import TrainConfig

    for name in PRESETS:
        TrainConfig.preset(name)
    with pytest.raises(ValueError):
        TrainConfig.preset("nope")


# ----------------------------------------------------------------------------------------------------------
# property-based: the whole parser, random argument vectors

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ELEMENTS = [
    "H",
    "Li",
    "O",
    "Na",
    "Cl",
    "Fe",
    "Sr",
    "Ti",
    "La",
    "Zr",
    "P",
    "Cs",
    "Pb",
    "I",
    "Ga",
    "N",
    "Xx",
    "Q",
]
#: Options with a constraint, and the values that break it (anything else drawn is valid for them).
CONSTRAINED = {
    "-k": lambda v: _int(v) is None or _int(v) < 1,
    "-n": lambda v: _int(v) is None or _int(v) < 1,
    "--seed": lambda v: _int(v) is None or _int(v) < 0,
    "--max-atoms": lambda v: _int(v) is None or _int(v) < 1,
    "--max-rows": lambda v: _int(v) is None or _int(v) < 1,
    "--workers": lambda v: _int(v) is None or _int(v) < 1,
    "--steps": lambda v: _int(v) is None or _int(v) < 1,
    "--threads": lambda v: _int(v) is None or _int(v) < 1,
    "--space-group": lambda v: _int(v) is None or not 1 <= _int(v) <= 230,  # type: ignore[operator]
    "--top-bravais": lambda v: _int(v) is None or not 1 <= _int(v) <= 14,  # type: ignore[operator]
    "--top-space-groups": lambda v: _int(v) is None or not 1 <= _int(v) <= 230,  # type: ignore[operator]
    "--timeout": lambda v: _float(v) is None or not 0 < _float(v) < float("inf"),  # type: ignore[operator]
}
VALUES = ["1", "3", "14", "225", "0", "-1", "999", "2.5", "abc", "nan", "inf", ""]
#: Subcommand -> (leading arguments, whether it takes formulas, options drawn from CONSTRAINED).
COMMAND_LINES = {
    "generate": (
        ["generate"],
        True,
        ["-k", "--seed", "--max-atoms", "--steps", "--threads", "--space-group", "--timeout"],
    ),
    "predict": (["predict"], True, ["--top-bravais", "--top-space-groups"]),
    "featurize": (["featurize"], True, []),
    "lookup": (["templates", "lookup", "SrTiO3"], False, ["-n"]),
    "data": (["data", "build"], False, ["--workers", "--seed", "--max-rows"]),
    "train": (["train", "--out", "runs"], False, ["--seed", "--max-rows"]),
    "submit": (["submit", "NaCl"], True, ["-k", "--seed", "--space-group"]),
    "results": (["results", "NaCl"], True, ["-k"]),
}
#: Commands replaced by a recorder (they would train, build or touch a workflow store); predict, featurize and
#: templates lookup run for real.
STUBBED = {
    "cryspnet_gen.cli.generate": "cmd_generate",
    "cryspnet_gen.cli.data": "cmd_data_build",
    "cryspnet_gen.cli.train": "cmd_train",
    "cryspnet_gen.workflows.cli": ("cmd_submit", "cmd_results"),
}


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


formulas = st.one_of(
    st.lists(st.tuples(st.sampled_from(ELEMENTS), st.integers(0, 12)), min_size=1, max_size=4).map(
        lambda parts: "".join(e + (str(n) if n > 1 else "") for e, n in parts)
    ),
    st.text(alphabet="()[]0123456789.+-_ abcXYZ", max_size=8),
)


@st.composite
def argument_vectors(draw) -> tuple[list[str], bool]:
    lead, takes_formulas, allowed = COMMAND_LINES[draw(st.sampled_from(sorted(COMMAND_LINES)))]
    argv = list(lead)
    invalid = False
    if takes_formulas:
        argv += draw(
            st.lists(formulas, min_size=0, max_size=3).map(
                lambda fs: [f for f in fs if not f.startswith("-")]
            )
        )
    for option in draw(st.lists(st.sampled_from(allowed), max_size=4)) if allowed else []:
        value = draw(st.sampled_from(VALUES))
        invalid |= CONSTRAINED[option](value)
        argv += [option, value] if not value.startswith("-") else [f"{option}={value}"]
    flags = draw(st.lists(st.sampled_from(["-v", "-q", "--verbose", "--quiet"]), max_size=2))
    at = draw(st.integers(0, len(argv)))
    return [*argv[:at], *flags, *argv[at:]] if at else [*flags, *argv], invalid


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=argument_vectors())
def test_random_command_lines_never_give_a_traceback(case, capsys, monkeypatch):
    """Random argument vectors over the subcommands (global flags anywhere): never a traceback; an invalid option
    value is exit 2 before the command runs, one line; a valid line reaches the command (``predict``,
    ``featurize`` and ``templates lookup`` run for real, on random formulas and a small random model)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import importlib

    from test_generate import random_predictor

    import cryspnet_gen.cli.common as common

    argv, invalid = case
    ran = []
    for module, names in STUBBED.items():
        for name in (names,) if isinstance(names, str) else names:
            monkeypatch.setattr(importlib.import_module(module), name, lambda args: ran.append(args) or 0)
    monkeypatch.setattr(common, "load_predictor_for", lambda args: _cached_predictor(random_predictor))
    rc, _, err, _ = run(argv, capsys)
    assert "Traceback" not in err, (argv, err)
    assert rc in (0, 1, 2), (argv, rc)
    if invalid:
        assert rc == 2 and not ran and len(err.strip().splitlines()) == 1, (argv, rc, err)
    if rc == 2:
        assert err.strip().startswith("cryspnet-gen") and len(err.strip().splitlines()) == 1, (argv, err)


_PREDICTOR: list = []


def _cached_predictor(factory):
    if not _PREDICTOR:
        _PREDICTOR.append(factory())
    return _PREDICTOR[0]


def test_train_arch_option_and_its_errors(tmp_path, capsys):
    from cryspnet_gen.cli.train import train_config

    parser = build_parser()
    args = parser.parse_args(["train", "--out", str(tmp_path), "--preset", "shipped", "--arch", "lightgbm"])
    config = train_config(args)
    assert config.arch == "lightgbm" and config.tree_space_group["tree_num_leaves"] == 63
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path), "--arch", "transformer"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and "invalid choice: 'transformer'" in err[-1] and "lightgbm" in err[-1]
    bad = tmp_path / "bad.json"
    bad.write_text('{"tree_space_group": {"num_leaves": 3}}')
    assert main(["train", "--out", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "bad.json" in err[0]
        and "tree_* fields only" in err[0]
        and "Traceback" not in err[0]
    )
