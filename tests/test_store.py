"""The embedded workflow store under damage and parallel use: strict reading, backups and restore, the folder
lock, moved and copied stores, interrupted saves, killed and interrupted runners, lost runs.

Workflows here are pure-Python jobs (``_workflow_jobs``) run by the real runner, so no model or CHGNet is
needed; commands run in this process through the workflow CLI's parser, except where a process must die
(SIGKILL, Ctrl-C), which runs ``python -m cryspnet_gen.workflows.cli`` or ``python -c`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("fireworks")
pytest.importorskip("jobflow")

from _workflow_jobs import add_pause_workflow, make_fake_model, outputs

from cryspnet_gen.workflows.lock import StoreLock
from cryspnet_gen.workflows.manage import lost_runs, run_local, store_notes, workflow_status
from cryspnet_gen.workflows.store import StoreCorruptError, StoreError, StoreHandle, open_store

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    return make_fake_model(tmp_path)


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS)])}
    env.pop("MONGOMOCK_SERVERSTORE_FILE", None)
    return env


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run a workflow command in this process: (exit code, stdout, stderr)."""
    from cryspnet_gen.workflows.cli import build_parser

    try:
        args = build_parser().parse_args([str(a) for a in argv])
        rc = int(args.func(args))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *argv], env=_env(), cwd=REPO_ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def formulas_in(folder: Path) -> dict[str, str]:
    with open_store(folder, readonly=True) as h:
        return {r.formula: r.state for r in workflow_status(h.launchpad)}


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with two finished two-job workflows (NaCl, KCl): four job outputs."""
    folder = tmp_path_factory.mktemp("finished") / "store"
    with open_store(folder) as h:
        add_pause_workflow(h, "NaCl")
        add_pause_workflow(h, "KCl")
        summary = run_local(h, progress=False)
    assert len(summary.completed) == 4 and not summary.fizzled
    return folder


@pytest.fixture
def store(finished_store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(finished_store, dst)
    return dst


# ----------------------------------------------------------------------------------------------------------
# strict reading: every command refuses a damaged store in one line and changes nothing


def _empty_counter(raw: bytes) -> bytes:
    data = json.loads(raw)
    data["cryspnet_gen"]["fw_id_assigner"]["documents"] = []
    return json.dumps(data).encode()


DAMAGE: dict[str, tuple[str, Callable[[bytes], bytes] | None]] = {
    "launchpad truncated": ("launchpad.json", lambda b: b[: len(b) // 2]),
    "launchpad random bytes": ("launchpad.json", lambda b: random.Random(0).randbytes(300)),
    "launchpad empty": ("launchpad.json", lambda b: b""),
    "launchpad list": ("launchpad.json", lambda b: b"[]"),
    "launchpad null": ("launchpad.json", lambda b: b"null"),
    "launchpad empty object": ("launchpad.json", lambda b: b"{}"),
    "launchpad empty id counter": ("launchpad.json", _empty_counter),
    "launchpad deleted": ("launchpad.json", None),
    "jobs truncated": ("jobs.json", lambda b: b[: len(b) // 3]),
    "jobs object": ("jobs.json", lambda b: b"{}"),
    "jobs emptied": ("jobs.json", lambda b: b"[]"),  # the right shape, but the outputs are gone
    "jobs deleted": ("jobs.json", None),
    "data random bytes": ("data.json", lambda b: b"\xff\xfe\x00garbage"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_is_refused_by_every_command_then_restored(case, store, fake_model, capsys):
    name, damage = DAMAGE[case]
    path = store / name
    before = outputs(store)
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    damaged = path.read_bytes() if path.exists() else None
    commands = [
        ["status"],
        ["results", "NaCl"],
        ["run", "--max-jobs", "1"],
        ["submit", "LiF", "--model", fake_model, "--space-group", "225"],
    ]
    for argv in commands:
        rc, out, err = cli(capsys, *argv, "--store", store)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2, (argv, out, err)
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
        assert str(path) in lines[0] and "cryspnet-gen restore --store" in lines[0], (argv, lines)
        # left as it was: never skipped, rewritten, or replaced by a new store
        assert (path.read_bytes() if path.exists() else None) == damaged, argv
    rc, out, err = cli(capsys, "restore", "--store", store)
    assert rc == 0, err
    assert f"restored  {name}" in out
    if damaged is not None:
        assert [p.read_bytes() for p in store.glob(f"{name}.damaged-*")] == [damaged]
    assert formulas_in(store) == {"NaCl": "COMPLETED", "KCl": "COMPLETED"}
    assert outputs(store) == before  # nothing lost
    rc, out, err = cli(capsys, "status", "--store", store)
    assert rc == 0 and "NaCl" in out and "KCl" in out, err


def test_without_a_good_backup_force_new_starts_afresh_and_keeps_the_files(store, fake_model, capsys):
    (store / "launchpad.json").write_bytes(b"{trunc")
    (store / "launchpad.json.bak").write_bytes(b"")
    rc, out, err = cli(capsys, "status", "--store", store)
    assert rc == 2 and "no good backup" in err and "--force-new" in err
    rc, out, err = cli(capsys, "restore", "--store", store)
    assert rc == 1 and "cannot restore it" in out and "--force-new" in err
    assert (store / "launchpad.json").read_bytes() == b"{trunc"
    rc, out, err = cli(capsys, "submit", "LiF", "--model", fake_model, "--store", store, "--force-new")
    assert rc == 0 and "added    LiF" in out, err
    assert formulas_in(store) == {"LiF": "READY"}
    kept = {p.name.split(".old-")[0]: p.read_bytes() for p in store.glob("*.old-*")}
    assert kept["launchpad.json"] == b"{trunc" and {"jobs.json", "data.json"} <= set(kept)


def test_a_folder_without_a_store_is_not_a_store_and_an_empty_one_is_created(tmp_path, capsys):
    rc, _, err = cli(capsys, "status", "--store", tmp_path / "none")
    assert rc == 2 and "no workflow store at" in err and "no launchpad.json" in err
    file = tmp_path / "a-file"
    file.write_text("x")
    rc, _, err = cli(capsys, "status", "--store", file)
    assert rc == 2 and "is a file, not a store folder" in err
    with open_store(tmp_path / "new") as h:
        assert workflow_status(h.launchpad) == []
    assert {p.name for p in (tmp_path / "new").iterdir()} == {
        "launchpad.json", "launchpad.json.bak", "jobs.json", "jobs.json.bak", "data.json", "data.json.bak"
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# the lock


def test_deleting_the_holder_record_does_not_unlock_and_writers_wait_by_default(store, fake_model, capsys):
    lock = StoreLock(store)
    lock.acquire()
    try:
        (store / "holder.json").unlink()  # what `rm STORE/lock` did to the old lock file
        rc, out, err = cli(capsys, "run", "--store", store, "--wait", "0")
        assert rc == 2 and "still in use by" in err and "--wait SECONDS" in err, err
        if Path("/proc/locks").exists():
            assert f"process {os.getpid()}" in err  # the kernel still knows the holder
        rc, out, err = cli(capsys, "status", "--store", store)
        assert rc == 0 and "is writing this store" in err
        release = threading.Timer(2.0, lock.release)
        release.start()
        rc, out, err = cli(capsys, "submit", "LiF", "--model", fake_model, "--store", store)
        release.join()
    finally:
        lock.release()
    assert rc == 0 and "added    LiF" in out, err
    assert "waiting for the workflow store" in err  # a progress line naming the holder
    assert set(formulas_in(store)) == {"NaCl", "KCl", "LiF"}
    assert not (store / "holder.json").exists() and not list(store.glob(".waiting.*"))


def test_a_replaced_store_folder_is_not_locked_under_its_old_name(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    first = StoreLock(folder)
    first.acquire()
    os.rename(folder, tmp_path / "moved")
    folder.mkdir()  # a new folder under the old name is another store
    second = StoreLock(folder)
    second.acquire(wait=0)
    assert second.held
    second.release()
    first.release()


# ----------------------------------------------------------------------------------------------------------
# moved and copied stores


def test_a_moved_store_runs_to_completion_and_a_copy_writes_into_itself(tmp_path):
    with open_store(tmp_path / "a") as h:
        add_pause_workflow(h, "NaCl", n=3)
    os.rename(tmp_path / "a", tmp_path / "b")
    with open_store(tmp_path / "b") as h:
        add_pause_workflow(h, "KCl", n=2)
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "b").glob("*.json")}
    with open_store(tmp_path / "c") as h:
        assert len(run_local(h, progress=False).completed) == 5
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").glob("*.json")} == snapshot  # the original
    with open_store(tmp_path / "b") as h:
        summary = run_local(h, progress=False)
    assert len(summary.completed) == 5 and not summary.fizzled
    assert formulas_in(tmp_path / "b") == {"NaCl": "COMPLETED", "KCl": "COMPLETED"}
    assert sorted(outputs(tmp_path / "b").values()) == [2, 2, 4, 4, 8]
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------------------------------------
# killed and interrupted processes


def test_sigkill_between_temporary_write_and_rename_loses_nothing(store):
    code = textwrap.dedent(
        f"""
        import os, signal
        from cryspnet_gen.workflows import storefiles
        from cryspnet_gen.workflows.store import open_store
        from _workflow_jobs import add_pause_workflow

        real = os.replace
        def replace(src, dst):
            if str(dst).endswith("launchpad.json"):
                os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is written, the rename not done
            return real(src, dst)
        storefiles.os.replace = replace
        with open_store({str(store)!r}) as h:
            add_pause_workflow(h, "LiF")
        """
    )
    proc = spawn("-c", code)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    stray = list(store.glob(".launchpad.json.*.tmp"))
    assert len(stray) == 1
    assert formulas_in(store) == {"NaCl": "COMPLETED", "KCl": "COMPLETED"}  # all or nothing: LiF not added
    with open_store(store) as h:  # the next writer cleans up
        assert len(workflow_status(h.launchpad)) == 2
    assert not list(store.glob(".*.tmp"))


def _runner_with_a_paused_job(store: Path, marker: Path, seconds: float = 120) -> subprocess.Popen[str]:
    with open_store(store) as h:
        add_pause_workflow(h, "LiF", n=2, seconds=seconds, marker=str(marker))
    proc = spawn("-m", "cryspnet_gen.workflows.cli", "run", "--store", str(store), "-q")
    wait_for(marker, proc)
    return proc


def test_sigkill_of_a_runner_mid_job_then_run_completes(store, capsys):
    marker = store.parent / "paused"
    before = outputs(store)
    proc = _runner_with_a_paused_job(store, marker)
    proc.kill()
    proc.communicate(timeout=60)
    rc, _, err = cli(capsys, "status", "--store", store)
    assert rc == 0 and "interrupted:" in err and "cryspnet-gen run" in err, err
    with open_store(store) as h:
        summary = run_local(h, progress=False)
    assert len(summary.completed) == 2 and not summary.fizzled
    assert formulas_in(store) == {"NaCl": "COMPLETED", "KCl": "COMPLETED", "LiF": "COMPLETED"}
    after = outputs(store)  # no duplicates (checked by outputs) and nothing lost
    assert before.items() <= after.items() and len(after) == len(before) + 2


@pytest.mark.slow
def test_ctrl_c_stops_a_runner_in_one_line_and_leaves_the_job_ready(store):
    marker = store.parent / "paused"
    proc = _runner_with_a_paused_job(store, marker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "READY again" in lines[0], err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    with open_store(store, readonly=True) as h:
        states = {fw["name"]: fw["state"] for fw in h.launchpad.fireworks.find({"name": "pause"})}
        lif = [fw for fw in h.launchpad.fireworks.find({"spec.cryspnet.formula": "LiF"})]
    assert sorted(fw["state"] for fw in lif) == ["READY", "WAITING"] or sorted(fw["state"] for fw in lif) == [
        "READY",
        "READY",
    ], states
    assert not any(fw["state"] == "FIZZLED" for fw in lif)
    with open_store(store) as h:
        summary = run_local(h, progress=False)
    assert len(summary.completed) == 2 and not summary.fizzled


@pytest.mark.slow
def test_a_runner_hands_the_store_to_a_waiting_writer_between_jobs(store):
    marker = store.parent / "paused"
    proc = _runner_with_a_paused_job(store, marker, seconds=3)
    with open_store(store, wait=60) as h:  # waits for the paused job, not for the whole run
        add_pause_workflow(h, "MgO", n=2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "ran 4 job(s)" in out, out  # LiF's two jobs and MgO's, read after the hand-over
    assert formulas_in(store) == {
        "NaCl": "COMPLETED",
        "KCl": "COMPLETED",
        "LiF": "COMPLETED",
        "MgO": "COMPLETED",
    }


# ----------------------------------------------------------------------------------------------------------
# lost runs on MongoDB (FireWorks' detect_lostruns), here on a mongomock LaunchPad standing in for one


def test_lost_runs_are_reported_and_rerun_on_a_mongodb_store(tmp_path, monkeypatch):
    import datetime

    from fireworks import FWorker

    from cryspnet_gen.workflows.storefiles import active_store

    monkeypatch.chdir(tmp_path)
    with open_store(tmp_path / "s") as h:
        add_pause_workflow(h, "NaCl", n=1)
        lpad = h.launchpad
    mongo = StoreHandle(launchpad=lpad, folder=None, spec_store=None, readonly=False)
    fw, launch_id = lpad.checkout_fw(FWorker(), str(tmp_path))  # a worker took it, then vanished
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=5)).isoformat()
    history = lpad.launches.find_one({"launch_id": launch_id})["state_history"]
    for entry in history:
        entry["updated_on"] = old  # its last sign of life, five hours ago
    lpad.launches.update_one({"launch_id": launch_id}, {"$set": {"state_history": history}})
    assert lost_runs(mongo, expiration_secs=6 * 3600) == []
    assert lost_runs(mongo, expiration_secs=4 * 3600) == [fw.fw_id]
    notes = store_notes(mongo, expiration_secs=4 * 3600)
    assert any("--rerun-lost" in n and str(fw.fw_id) in n for n in notes), notes
    with active_store(tmp_path / "s"):  # where its jobs write (on MongoDB: the workers' JOB_STORE)
        summary = run_local(mongo, rerun_lost=True, lost_after=4 * 3600, progress=False)
    assert summary.recovered == [fw.fw_id] and summary.completed == [fw.fw_id]


def test_store_errors_are_one_line_with_what_to_do(tmp_path):
    (tmp_path / "jobs.json").write_text('[{"uuid": "x", "index": 1}]')
    with pytest.raises(StoreCorruptError) as info, open_store(tmp_path):
        pass
    text = str(info.value)
    assert "\n" not in text and "launchpad.json" in text and "is missing although jobs.json holds 1" in text
    assert not (tmp_path / "launchpad.json").exists()  # no new store over existing data
    with pytest.raises(StoreError, match="nothing to restore"):
        from cryspnet_gen.workflows.store import restore_store

        restore_store(tmp_path / "empty")
