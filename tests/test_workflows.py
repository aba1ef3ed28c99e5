"""Workflows: Makers, FireWorks workflows, the end-to-end CLI path with CHGNet, VASP inputs (the store under damage
and parallel use: test_store.py; the command line's checks: test_workflow_cli.py).

CHGNet relaxations run with a handful of steps and one torch thread (more threads than free cores slow CHGNet
down many times over on a busy machine). The end-to-end commands run ``python -m cryspnet_gen.workflows.cli`` in
subprocesses, as a user would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fireworks")
pytest.importorskip("jobflow")
pytest.importorskip("atomate2")
pytest.importorskip("chgnet")

from _model_fixtures import shared_bundle
from _workflow_jobs import make_fake_model
from pymatgen.core import Lattice, Structure

from cryspnet_gen.records import Candidate

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cryspnet_gen.workflows.cli"]


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    return make_fake_model(tmp_path)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **extra}
    env.pop("MONGOMOCK_SERVERSTORE_FILE", None)
    return env


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the workflow CLI in a fresh process."""
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, env=_env(), timeout=timeout, cwd=REPO_ROOT
    )


def candidate(formula: str, rank: int, structure: Structure, space_group: int, **kw: object) -> Candidate:
    """A hand-built Candidate (only the fields the workflows read need real values)."""
    values: dict[str, object] = {
        "formula": formula,
        "rank": rank,
        "bravais": "cF",
        "space_group": space_group,
        "probability": 0.5 / rank,
        "bravais_probability": 0.7,
        "space_group_probability": 0.7 / rank,
        "structure": structure,
        "z": 1,
        "formula_unit": formula,
        "bundle": "hand-built",
        "bundle_version": "0",
        **kw,
    }
    if "space_group_symbol" not in values:
        values["space_group_symbol"] = structure.get_space_group_info(symprec=0.1)[0]
    names = {f.name for f in dataclasses.fields(Candidate)}
    return Candidate(**{k: v for k, v in values.items() if k in names})  # type: ignore[arg-type]


def rocksalt(a: float = 5.9) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl(a: float = 3.1) -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# ----------------------------------------------------------------------------------------------------------
# CLI wiring


def test_add_subcommands_builds_the_four_commands():
    import argparse

    from cryspnet_gen.workflows.cli import add_subcommands

    parser = argparse.ArgumentParser(prog="cryspnet-gen")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(["submit", "NaCl", "LiCoO2", "-k", "2", "--relax", "vasp", "--store", "S"])
    assert (args.formulas, args.k, args.relax, args.store, args.seed) == (
        ["NaCl", "LiCoO2"],
        2,
        "vasp",
        "S",
        0,
    )
    assert callable(args.func)
    for argv in (["run", "--rerun-fizzled"], ["status"], ["results", "NaCl", "-o", "out"]):
        args = parser.parse_args(argv)
        assert callable(args.func), argv
    with pytest.raises(SystemExit):
        parser.parse_args(["submit", "NaCl", "--relax", "dft"])


def test_main_parser_has_the_workflow_commands():
    from cryspnet_gen.cli import build_parser

    parser = build_parser()
    for argv in (["submit", "NaCl"], ["run"], ["status"], ["results", "NaCl"], ["templates", "info"]):
        assert callable(parser.parse_args(argv).func), argv
    args = parser.parse_args(["generate", "NaCl", "-k", "2", "--space-group", "225", "--source", "cryspnet"])
    from cryspnet_gen.cli.generate import generate_options

    opts = generate_options(args)
    assert (opts.k, opts.space_groups, opts.source, opts.templates) == (2, (225,), "cryspnet", None)


def test_store_folder_resolution(tmp_path, monkeypatch):
    from cryspnet_gen.workflows.store import STORE_ENV, default_store_dir, resolve_store_dir

    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_dir() == tmp_path / "xdg" / "cryspnet-gen" / "store"
    assert resolve_store_dir() == tmp_path / "xdg" / "cryspnet-gen" / "store"
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "env"))
    assert resolve_store_dir() == tmp_path / "env"
    assert resolve_store_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_cluster_templates_parse_and_launchpad_option(tmp_path):
    from fireworks import FWorker
    from fireworks.utilities.fw_serializers import load_object_from_file
    from jobflow.settings import JobflowSettings

    from cryspnet_gen.workflows.store import StoreError, open_store

    templates = REPO_ROOT / "workflows"
    assert FWorker.from_file(str(templates / "my_fworker.yaml")).category == ""
    qadapter = load_object_from_file(str(templates / "my_qadapter.yaml"))
    script = qadapter.get_script_str(str(tmp_path))
    assert script.startswith("#!/bin/bash") and "#SBATCH --nodes=1" in script and "rlaunch" in script
    settings = JobflowSettings(CONFIG_FILE=str(templates / "jobflow.yaml"))
    assert type(settings.JOB_STORE.docs_store).__name__ == "MongoStore"
    assert "data" in settings.JOB_STORE.additional_stores
    # A LaunchPad file gives a MongoDB LaunchPad, whose server is asked at once: an unreachable one fails in
    # seconds with one line naming the file and the host (pymongo alone would wait 30 s per operation).
    t0 = time.perf_counter()
    with (
        pytest.raises(StoreError, match=r"cannot reach the MongoDB of .*mongodb\.example\.org:27017") as info,
        open_store(launchpad=templates / "my_launchpad.yaml"),
    ):
        pass
    assert time.perf_counter() - t0 < 20 and "\n" not in str(info.value)
    with (
        pytest.raises(StoreError, match="not both"),
        open_store(tmp_path, launchpad=templates / "my_launchpad.yaml"),
    ):
        pass
    with pytest.raises(StoreError, match="does not exist"), open_store(launchpad=tmp_path / "missing.yaml"):
        pass
    (tmp_path / "bad.yaml").write_text("host: [\n")
    with (
        pytest.raises(StoreError, match=r"bad\.yaml cannot be read"),
        open_store(launchpad=tmp_path / "bad.yaml"),
    ):
        pass
    with pytest.raises(StoreError, match="no workflow store"), open_store(tmp_path / "none", readonly=True):
        pass


# ----------------------------------------------------------------------------------------------------------
# Makers and FireWorks workflows


def _garnet_candidates() -> list[Candidate]:
    # Composition is what matters for VASP inputs; 24 atoms on a grid in a cubic cell.
    species = ["Li"] * 7 + ["La"] * 3 + ["Zr"] * 2 + ["O"] * 12
    coords = [(i / 3, j / 2, k / 4) for i in range(3) for j in range(2) for k in range(4)]
    s = Structure(Lattice.cubic(8.5), species, coords)
    return [candidate("Li7La3Zr2O12", r, s.copy(), 1, bravais="aP", space_group_symbol="P1") for r in (1, 2)]


def test_vasp_workflow_fireworks_and_specs(tmp_path):
    from jobflow.managers.fireworks import flow_to_workflow

    from cryspnet_gen.workflows.makers import CandidateRelaxMaker, relaxation_flow, vasp_relax_maker

    maker = CandidateRelaxMaker(
        k=2, seed=3, model_path=tmp_path / "model", relax_maker=vasp_relax_maker(), relax_category="vasp"
    )
    meta = maker.workflow_metadata("Li7La3Zr2O12")
    wf = flow_to_workflow(maker.make("Li7La3Zr2O12"), metadata={"cryspnet": meta})
    # Before run time: the generation job and the fan-out (which replaces itself by the relaxations).
    assert [fw.spec["cryspnet"]["role"] for fw in wf.fws] == ["generate", "fanout"]
    assert wf.metadata["cryspnet"]["key"] == meta["key"]
    for fw in wf.fws:
        assert fw.spec["cryspnet"]["formula"] == "Li7La3Zr2O12"
        assert (fw.spec["cryspnet"]["k"], fw.spec["cryspnet"]["seed"], fw.spec["cryspnet"]["relax"]) == (
            2,
            3,
            "vasp",
        )
        assert fw.spec["cryspnet"]["model"] == str((tmp_path / "model").absolute())

    # What the fan-out adds at run time: a double relaxation (2 Fireworks) per candidate and a collect job.
    cands = _garnet_candidates()
    relax_wf = flow_to_workflow(
        relaxation_flow(cands, maker.relax_maker, metadata=meta, relax_category="vasp")
    )
    assert len(relax_wf.fws) == 2 * len(cands) + 1
    relax = [fw for fw in relax_wf.fws if fw.spec["cryspnet"]["role"] == "relax"]
    collect = [fw for fw in relax_wf.fws if fw.spec["cryspnet"]["role"] == "collect"]
    assert len(relax) == 4 and len(collect) == 1
    for fw in relax:
        c = cands[fw.spec["cryspnet"]["rank"] - 1]
        assert fw.spec["_category"] == "vasp"
        assert fw.spec["cryspnet"]["space_group"] == c.space_group
        assert fw.spec["cryspnet"]["probability"] == pytest.approx(c.probability)
        assert fw.spec["cryspnet"]["key"] == meta["key"]
        assert f"#{c.rank}" in fw.name and "Li7La3Zr2O12" in fw.name
    assert sum(fw.spec["cryspnet"]["final"] for fw in relax) == 2  # the second relaxation of each
    assert "_category" not in collect[0].spec
    assert collect[0].spec["_allow_fizzled_parents"] is True  # rank what succeeded
    assert set(relax_wf.links.parent_links[collect[0].fw_id]) == {
        fw.fw_id for fw in relax if fw.spec["cryspnet"]["final"]
    }

    # VASP inputs: POTCAR.spec needs no pseudopotentials.
    from cryspnet_gen.workflows.vasp import write_vasp_inputs

    out = write_vasp_inputs(cands[0], tmp_path / "vasp", maker=maker.relax_maker, potcar_spec=True)
    assert {"INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"} <= {p.name for p in out.iterdir()}
    symbols = (out / "POTCAR.spec").read_text().split()
    assert [s.split("_")[0] for s in symbols] == ["Li", "La", "Zr", "O"]


def test_vasp_inputs_without_potcars_give_a_clear_error(tmp_path, monkeypatch):
    from pymatgen.core import SETTINGS

    from cryspnet_gen.workflows.vasp import VaspSetupError, write_vasp_inputs

    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    monkeypatch.delitem(SETTINGS, "PMG_VASP_PSP_DIR", raising=False)
    with pytest.raises(VaspSetupError, match="PMG_VASP_PSP_DIR") as info:
        write_vasp_inputs(_garnet_candidates()[0], tmp_path / "vasp")
    assert "potcar_spec=True" in str(info.value)


def test_maker_round_trip_and_submission_key(tmp_path):
    from cryspnet_gen import formula
    from cryspnet_gen.options import GenerateOptions
    from cryspnet_gen.workflows.makers import CandidateRelaxMaker, canonical_formula, chgnet_relax_maker

    maker = CandidateRelaxMaker(k=2, model_path=tmp_path, relax_maker=chgnet_relax_maker(steps=5))
    again = CandidateRelaxMaker.from_dict(json.loads(maker.to_json()))
    assert again.key("NaCl") == maker.key("NaCl") == maker.key("ClNa")
    assert canonical_formula is formula.canonical_formula  # the old import path still works
    assert canonical_formula("ClNa") == "NaCl" and canonical_formula("Li7La3Zr2O12") == "Li7La3Zr2O12"
    # The generation options travel as the Maker's own fields (the stored workflow format is unchanged).
    templated = CandidateRelaxMaker(
        k=2, max_atoms=50, space_groups=[225], generate_kwargs={"source": "cryspnet"}
    )
    back = CandidateRelaxMaker.from_dict(json.loads(templated.to_json()))
    assert back.key("NaCl") == templated.key("NaCl")
    assert back.generate_options() == GenerateOptions(
        k=2, max_atoms=50, space_groups=(225,), source="cryspnet"
    )
    gen = json.loads(templated.make("NaCl").to_json())["jobs"][0]
    assert gen["function"]["@callable"] == "generate_candidates_job"
    assert set(gen["function_kwargs"]) == {
        "k", "seed", "model", "model_path", "max_atoms", "space_groups", "generate_kwargs"
    }  # fmt: skip
    other_steps = dataclasses.replace(maker, relax_maker=chgnet_relax_maker(steps=6))
    assert len({maker.key("NaCl"), maker.key("KCl"), dataclasses.replace(maker, k=3).key("NaCl"),
                dataclasses.replace(maker, seed=1).key("NaCl"), other_steps.key("NaCl")}) == 5  # fmt: skip
    with pytest.raises(ValueError):
        maker.make("Xx2O")


# ----------------------------------------------------------------------------------------------------------
# the embedded store


def test_embedded_stores_do_not_leak_within_a_process(tmp_path):
    import fireworks.core.launchpad as fw_launchpad
    import pymongo

    from cryspnet_gen.workflows.makers import CandidateRelaxMaker, chgnet_relax_maker
    from cryspnet_gen.workflows.manage import find_workflows, submit
    from cryspnet_gen.workflows.store import open_store

    maker = CandidateRelaxMaker(k=2, model_path=tmp_path / "m", relax_maker=chgnet_relax_maker(steps=5))
    with open_store(tmp_path / "a") as a:
        [first] = submit(["NaCl"], maker=maker, handle=a)
        assert first.added and len(first.fw_ids) == 2
    with open_store(tmp_path / "b") as b:
        assert find_workflows(b.launchpad) == []
        [other] = submit(["KCl"], maker=maker, handle=b)
        assert other.added
    with open_store(tmp_path / "a") as a:
        assert [w["metadata"]["cryspnet"]["formula"] for w in find_workflows(a.launchpad)] == ["NaCl"]
        [again, bad] = submit(["ClNa", "Xx2O"], maker=maker, handle=a)
        assert not again.added and again.fw_ids == first.fw_ids and again.key == first.key
        assert bad.error and not bad.added
    with open_store(tmp_path / "b", readonly=True) as b:
        assert [w["metadata"]["cryspnet"]["formula"] for w in find_workflows(b.launchpad)] == ["KCl"]
    # fireworks itself stays on pymongo (a real --launchpad still works) and nothing is left in the environment.
    assert fw_launchpad.MongoClient is pymongo.MongoClient
    assert "MONGOMOCK_SERVERSTORE_FILE" not in os.environ


def test_fizzled_job_is_reported_and_can_be_rerun(tmp_path, fake_model):
    from cryspnet_gen.workflows.makers import CandidateRelaxMaker, chgnet_relax_maker
    from cryspnet_gen.workflows.manage import (
        find_workflows,
        rerun_fizzled,
        run_local,
        submit,
        workflow_status,
    )
    from cryspnet_gen.workflows.results import format_results, load_results
    from cryspnet_gen.workflows.store import open_store

    # The "model" is an empty manifest: the generation job fails to load it, quickly.
    maker = CandidateRelaxMaker(k=2, model_path=fake_model, relax_maker=chgnet_relax_maker(steps=5))
    with open_store(tmp_path / "s") as store:
        submit(["NaCl"], maker=maker, handle=store)
        summary = run_local(store, progress=False)
        assert summary.launched == 1 and len(summary.fizzled) == 1
        [st] = workflow_status(store.launchpad)
        assert st.counts["FIZZLED"] == 1 and st.counts["WAITING"] == 1
    with open_store(tmp_path / "s", readonly=True) as store:
        res = load_results(store, find_workflows(store.launchpad)[0])
        [(name, rank, error)] = res.failures
        assert "generate" in name and rank is None and "manifest" in error.lower()
        assert "FIZZLED" in format_results(res) and "--rerun-fizzled" in format_results(res)
    with open_store(tmp_path / "s") as store:
        assert rerun_fizzled(store) == summary.fizzled
        [st] = workflow_status(store.launchpad)
        assert st.counts["READY"] == 1 and st.counts["FIZZLED"] == 0


# ----------------------------------------------------------------------------------------------------------
# relaxations


def test_relax_candidates_in_process_ranks_by_energy_and_keeps_bad_rows():
    from monty.json import MontyDecoder, MontyEncoder

    from cryspnet_gen.records import RelaxedCandidate
    from cryspnet_gen.relax import relax_candidates

    empty = Structure(Lattice.cubic(4.0), [], [])
    cands = [
        candidate("NaCl", 1, cscl(), 221),
        candidate("NaCl", 2, rocksalt(), 225),
        candidate("NaCl", 3, empty, 225, space_group_symbol="Fm-3m"),
    ]
    ranked = relax_candidates(cands, steps=5, progress=False, threads=1)
    assert len(ranked) == 3
    good, bad = ranked[:2], ranked[2]
    assert [r.energy_rank for r in good] == [1, 2]
    assert all(r.ok and math.isfinite(r.energy_per_atom) for r in good)
    assert good[0].energy_per_atom <= good[1].energy_per_atom
    assert good[0].candidate.space_group == 225  # rock salt is the lower-energy polymorph of NaCl
    assert all(r.relaxed_space_group in (221, 225) and r.volume_change is not None for r in good)
    assert all(r.n_steps is not None and r.n_steps <= 5 for r in good)
    assert bad.candidate.rank == 3 and bad.error and bad.energy_rank is None and not bad.ok
    back = json.loads(json.dumps(good[0], cls=MontyEncoder), cls=MontyDecoder)
    assert isinstance(back, RelaxedCandidate) and isinstance(back.candidate, Candidate)
    assert back.energy_per_atom == good[0].energy_per_atom and back.structure == good[0].structure


@pytest.mark.slow
def test_end_to_end_submit_run_results_with_chgnet(tmp_path):
    bundle = shared_bundle()
    store, out = tmp_path / "store", tmp_path / "out"
    submit = [
        "submit", "NaCl", "-k", "2", "--steps", "5", "--model", bundle, "--space-group", "225",
        "--space-group", "221", "--store", store,
    ]  # fmt: skip
    first = cli(*submit)
    assert first.returncode == 0, first.stderr
    assert "1 added" in first.stdout
    second = cli(*submit)
    assert second.returncode == 0 and "already submitted" in second.stdout, second.stdout

    t0 = time.perf_counter()
    run = cli("run", "--store", store, "--threads", "1", "-q", timeout=600)
    run_s = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    # generate, fan-out, 2 relaxations, collect, and the fan-out's output job
    assert "ran 6 job(s)" in run.stdout and "6 COMPLETED, 0 FIZZLED" in run.stdout, run.stdout

    status = cli("status", "NaCl", "--store", store)
    assert status.returncode == 0
    [row] = [line.split() for line in status.stdout.splitlines() if line.startswith("NaCl")]
    assert row[4] == "COMPLETED" and row[8] == "6" and row[9] == "0"

    res = cli("results", "NaCl", "--store", store, "--json", "-o", out)
    assert res.returncode == 0, res.stderr
    [wf] = json.loads(res.stdout)
    assert wf["state"] == "COMPLETED" and wf["complete"] and not wf["failures"]
    rows = wf["candidates"]
    assert len(rows) == 2
    energies = [r["energy_per_atom"] for r in rows]
    assert all(math.isfinite(e) for e in energies) and energies == sorted(energies)
    assert [r["energy_rank"] for r in rows] == [1, 2]
    assert sorted(r["space_group"] for r in rows) == [221, 225]
    assert all(r["relaxed_space_group"] is not None and r["volume_change"] is not None for r in rows)
    cifs = sorted((out / "NaCl-k2-seed0-chgnet").glob("*.cif"))
    assert len(cifs) == 2
    assert Structure.from_file(cifs[0]).composition.reduced_formula == "NaCl"
    table = cli("results", "NaCl", "--store", store)
    assert "E-rank" in table.stdout and "complete" in table.stdout

    # The candidates' metadata is queryable on the LaunchPad, as with `lpad get_fws -q`.
    from cryspnet_gen.workflows.store import open_store

    with open_store(store, readonly=True) as handle:
        relax = list(
            handle.launchpad.fireworks.find({"spec.cryspnet.role": "relax", "spec.cryspnet.formula": "NaCl"})
        )
        assert sorted(fw["spec"]["cryspnet"]["rank"] for fw in relax) == [1, 2]
        assert all(fw["state"] == "COMPLETED" for fw in relax)
        assert {fw["spec"]["cryspnet"]["model_version"] for fw in relax} == {"0.0.test"}
    print(f"end-to-end run of 6 jobs: {run_s:.1f} s")


def test_submit_checks_the_template_options(tmp_path):
    store = tmp_path / "store"
    needs = cli(
        "submit", "NaCl", "--source", "templates", "--store", store
    )  # CRYSPNET_GEN_TEMPLATES=none (conftest)
    assert needs.returncode == 2 and "needs --templates" in needs.stderr, needs.stderr
    missing = cli("submit", "NaCl", "--templates", tmp_path / "no-such-store", "--store", store)
    assert missing.returncode == 2 and "no template store at" in missing.stderr, missing.stderr
    assert not store.exists() or not any(store.iterdir())  # nothing was submitted
