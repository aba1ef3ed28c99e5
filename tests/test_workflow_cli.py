"""The workflow commands' boundary: every option checked when parsed, every default in the help, one-line errors
(the traceback only with ``-v``), ``-v``/``-q`` after the command, and parallel ``submit``s that all succeed."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fireworks")

from _workflow_jobs import make_fake_model

from cryspnet_gen.workflows.cli import add_subcommands, build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("submit", "run", "status", "results", "restore")


def parse_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "NaCl", "-k", "0"],
        ["submit", "NaCl", "-k", "-2"],
        ["submit", "NaCl", "-k", "three"],
        ["submit", "NaCl", "--space-group", "0"],
        ["submit", "NaCl", "--space-group", "231"],
        ["submit", "NaCl", "--steps", "0"],
        ["submit", "NaCl", "--fmax", "-0.1"],
        ["submit", "NaCl", "--fmax", "nan"],
        ["submit", "NaCl", "--seed", "-1"],
        ["submit", "NaCl", "--max-atoms", "0"],
        ["submit", "NaCl", "--relax", "dft"],
        ["submit", "NaCl", "--model-path", "/no/such/bundle"],
        ["submit", "NaCl", "--launchpad", "/no/such/launchpad.yaml"],
        ["submit", "NaCl", "--wait", "-1"],
        ["submit", "NaCl", "--source", "everything"],
        ["submit"],
        ["run", "--threads", "0"],
        ["run", "--max-jobs", "0"],
        ["run", "--lost-after", "0"],
        ["run", "--wait", "inf"],
        ["status", "--lost-after", "soon"],
        ["results"],
        ["results", "NaCl", "-k", "0"],
        ["results", "NaCl", "--relax", "dft"],
        ["restore", "--wait", "x"],
        ["restore", "--launchpad", "x.yaml"],
    ],
)
def test_bad_options_are_usage_errors_in_one_line(capsys, argv):
    err = parse_error(capsys, argv)
    last = err.strip().splitlines()[-1]
    assert last.startswith("cryspnet-gen") and ": error: " in last, err


def test_a_store_that_is_a_file_is_a_usage_error(capsys, tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    assert "is a file, not a store folder" in parse_error(capsys, ["status", "--store", str(file)])


def test_every_option_shows_its_default_and_defaults_are_sane():
    parser = argparse.ArgumentParser(prog="cryspnet-gen")
    sub = parser.add_subparsers(dest="command")
    add_subcommands(sub)
    for name in COMMANDS:
        p = sub.choices[name]
        text = p.format_help()
        for action in p._actions:
            if (
                not action.option_strings
                or action.nargs == 0
                or argparse.SUPPRESS in (action.default, action.help)  # flags; hidden deprecated spellings
            ):
                continue
            help_text = p.formatter_class(prog="x")._get_help_string(action) or ""
            assert "default" in help_text, (name, action.option_strings)
        assert "-v, --verbose" in text and "-q, --quiet" in text, name
    args = parser.parse_args(["run"])
    assert (args.threads, args.wait, args.max_jobs) == (1, 600.0, None)
    assert parser.parse_args(["submit", "NaCl"]).wait == 600.0  # parallel clients wait by default


def test_verbose_and_quiet_after_the_command_and_before_it():
    from cryspnet_gen.cli import build_parser as main_parser

    parser = main_parser()
    assert parser.parse_args(["status", "-v", "-q"]).verbose is True
    assert parser.parse_args(["-v", "status"]).verbose is True  # not reset by the subcommand
    assert parser.parse_args(["status"]).verbose is False
    assert parser.parse_args(["restore", "--store", "S"]).func.__name__ == "cmd_restore"


def test_errors_are_one_line_and_verbose_adds_the_traceback(capsys, tmp_path, monkeypatch):
    store = tmp_path / "s"
    store.mkdir()
    (store / "launchpad.json").write_text("null")
    args = build_parser().parse_args(["status", "--store", str(store)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "launchpad.json: holds null" in err
    args = build_parser().parse_args(["status", "--store", str(store), "-v"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("cryspnet-gen status: error:")

    # An unexpected error is still one line (with a hint), never a traceback.
    import cryspnet_gen.workflows.manage as manage

    def broken(*a: object, **k: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(manage, "workflow_status", broken)
    (store / "launchpad.json").unlink()
    from cryspnet_gen.workflows.store import open_store

    with open_store(store):
        pass
    args = build_parser().parse_args(["status", "--store", str(store)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected error: KeyError" in err and "-v shows the traceback" in err


FORKED_SUBMITS = """
import os, sys
from cryspnet_gen.workflows.cli import main
import cryspnet_gen.workflows.makers, atomate2.forcefields.jobs  # imported once, before forking
store, model, out = sys.argv[1:4]
children = []
for formula in sys.argv[4:]:
    pid = os.fork()
    if pid == 0:  # a submit process of its own, started at the same moment as the others
        with open(os.path.join(out, formula + ".out"), "w") as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            rc = main(["submit", formula, "--model", model, "--store", store])
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(rc)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print(codes)
"""


@pytest.mark.slow
def test_four_parallel_submits_all_succeed_with_default_options(tmp_path):
    model = make_fake_model(tmp_path)
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MONGOMOCK_SERVERSTORE_FILE", None)
    formulas = ["NaCl", "KCl", "LiF", "MgO"]
    proc = subprocess.run(
        [sys.executable, "-c", FORKED_SUBMITS, str(store), str(model), str(out), *formulas],
        env=env, cwd=REPO_ROOT, text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "[0, 0, 0, 0]", proc.stdout + proc.stderr
    for f in formulas:
        text = (out / f"{f}.out").read_text()
        assert f"added    {f}" in text and "1 added" in text and "Traceback" not in text, text
    from cryspnet_gen.workflows.manage import workflow_status
    from cryspnet_gen.workflows.store import open_store

    with open_store(store, readonly=True) as h:
        assert sorted(r.formula for r in workflow_status(h.launchpad)) == sorted(formulas)
