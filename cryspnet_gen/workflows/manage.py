"""Submit, run and follow candidate-relaxation workflows on a FireWorks LaunchPad.

These functions take an open :class:`~cryspnet_gen.workflows.store.StoreHandle` (see
:func:`~cryspnet_gen.workflows.store.open_store`); the ``cryspnet-gen submit|run|status`` commands are thin
wrappers around them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryspnet_gen.formula import canonical_formula

if TYPE_CHECKING:
    from cryspnet_gen.workflows.makers import CandidateRelaxMaker
    from cryspnet_gen.workflows.store import StoreHandle

__all__ = [
    "CRYSPNET_FWS",
    "DEFAULT_THREADS",
    "LOST_AFTER",
    "RunSummary",
    "SubmitOutcome",
    "WorkflowStatus",
    "find_workflows",
    "firework_error",
    "handle_hint",
    "lost_runs",
    "recover_interrupted",
    "rerun_fizzled",
    "run_local",
    "store_notes",
    "submit",
    "workflow_status",
]

logger = logging.getLogger(__name__)

#: torch threads per relaxation process: one is fastest for CHGNet on small cells and never oversubscribes a
#: shared machine (docs/benchmarks.md, "Threads for relaxation").
DEFAULT_THREADS = 1
#: Seconds without a ping after which a RUNNING job counts as lost (FireWorks' RUN_EXPIRATION_SECS: 4 h;
#: a running job pings every hour).
LOST_AFTER = 4 * 3600.0
#: The Fireworks of cryspnet workflows.
CRYSPNET_FWS: dict[str, Any] = {"spec.cryspnet": {"$exists": True}}
STATES = ("WAITING", "READY", "RESERVED", "RUNNING", "COMPLETED", "FIZZLED", "DEFUSED", "PAUSED", "ARCHIVED")


@dataclass
class SubmitOutcome:
    """What :func:`submit` did with one formula.

    Attributes
    ----------
    formula
        The formula as given.
    key
        Submission key (see :meth:`CandidateRelaxMaker.key`); ``None`` for a bad formula.
    fw_ids
        Firework ids of the workflow (new, or the existing one).
    added
        True when a workflow was added, False when an equal one was already there (or on error).
    state
        State of the existing workflow when it was already there.
    error
        Why the formula was not submitted.
    """

    formula: str
    key: str | None = None
    fw_ids: list[int] = field(default_factory=list)
    added: bool = False
    state: str | None = None
    error: str | None = None


def find_workflows(
    launchpad: Any,
    formulas: Iterable[str] | None = None,
    *,
    key: str | None = None,
    k: int | None = None,
    seed: int | None = None,
    relax: str | None = None,
) -> list[dict[str, Any]]:
    """Workflow documents (``metadata``, ``nodes``, ``fw_states``, ``state``, ``name``) of cryspnet workflows.

    Formulas are matched in their canonical spelling (``ClNa`` finds ``NaCl``); unparseable ones match nothing.
    """
    query: dict[str, Any] = {"metadata.cryspnet.key": {"$exists": True}}
    if formulas is not None:
        canon = []
        for f in formulas:
            try:
                canon.append(canonical_formula(f))
            except ValueError:
                continue
        query["metadata.cryspnet.formula"] = {"$in": canon}
    if key is not None:
        query["metadata.cryspnet.key"] = key
    for name, value in (("k", k), ("seed", seed), ("relax", relax)):
        if value is not None:
            query[f"metadata.cryspnet.{name}"] = value
    projection = {"metadata": 1, "nodes": 1, "fw_states": 1, "state": 1, "name": 1, "created_on": 1}
    return list(launchpad.workflows.find(query, projection).sort("created_on", 1))


def submit(
    formulas: Sequence[str], *, maker: CandidateRelaxMaker, handle: StoreHandle
) -> list[SubmitOutcome]:
    """Add one workflow per formula, unless an equal one (same :meth:`~CandidateRelaxMaker.key`) is there.

    A bad formula gets an outcome with ``error`` set; the others are still submitted.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    lpad = handle.launchpad
    out: list[SubmitOutcome] = []
    for formula in formulas:
        try:
            meta = maker.workflow_metadata(formula)
        except ValueError as exc:
            out.append(SubmitOutcome(formula=formula, error=str(exc)))
            continue
        existing = find_workflows(lpad, key=meta["key"])
        if existing:
            wf = existing[0]
            out.append(
                SubmitOutcome(
                    formula=formula,
                    key=meta["key"],
                    fw_ids=sorted(wf["nodes"]),
                    added=False,
                    state=wf["state"],
                )
            )
            continue
        flow = maker.make(formula)
        wf = flow_to_workflow(
            flow,
            store=handle.spec_store,  # type: ignore[arg-type]  # None: the runner's JOB_STORE
            name=f"cryspnet {meta['formula']} k={maker.k} seed={maker.seed} {meta['relax']}",
            metadata={"cryspnet": meta},
        )
        old_new = lpad.add_wf(wf)
        out.append(
            SubmitOutcome(formula=formula, key=meta["key"], fw_ids=sorted(old_new.values()), added=True)
        )
        logger.info("submitted %s (key %s) as fireworks %s", formula, meta["key"], sorted(old_new.values()))
    handle.flush()
    return out


@dataclass
class WorkflowStatus:
    """Firework states of one submitted workflow."""

    formula: str
    key: str
    k: int
    seed: int
    relax: str
    state: str
    counts: dict[str, int]
    fw_ids: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def workflow_status(
    launchpad: Any, formulas: Iterable[str] | None = None, **filters: Any
) -> list[WorkflowStatus]:
    """Per workflow: how many Fireworks are in each state (WAITING, READY, RUNNING, COMPLETED, FIZZLED...)."""
    rows = []
    for wf in find_workflows(launchpad, formulas, **filters):
        meta = wf["metadata"]["cryspnet"]
        counts = Counter(str(s) for s in wf.get("fw_states", {}).values())
        rows.append(
            WorkflowStatus(
                formula=meta["formula"],
                key=meta["key"],
                k=meta["k"],
                seed=meta["seed"],
                relax=meta["relax"],
                state=str(wf["state"]),
                counts={s: counts.get(s, 0) for s in STATES if counts.get(s, 0) or s in _SHOWN},
                fw_ids=sorted(wf["nodes"]),
            )
        )
    return rows


_SHOWN = ("READY", "RUNNING", "COMPLETED", "FIZZLED")


def firework_error(launchpad: Any, fw_id: int) -> str | None:
    """Last line of the traceback of a FIZZLED Firework's last launch (``None`` if there is none)."""
    fw = launchpad.fireworks.find_one({"fw_id": fw_id}, {"launches": 1, "state": 1})
    if not fw or not fw.get("launches"):
        return None
    launch = launchpad.launches.find_one({"launch_id": fw["launches"][-1]}, {"action": 1})
    stored = ((launch or {}).get("action") or {}).get("stored_data") or {}
    trace = (stored.get("_exception") or {}).get("_stacktrace")
    if not trace:
        return stored.get("_message")
    lines = [line for line in str(trace).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _scope_fw_ids(launchpad: Any, formulas: Iterable[str] | None) -> list[int] | None:
    if formulas is None:
        return None
    ids: list[int] = []
    for wf in find_workflows(launchpad, formulas):
        ids.extend(int(i) for i in wf["nodes"])
    return ids


def rerun_fizzled(handle: StoreHandle, formulas: Iterable[str] | None = None) -> list[int]:
    """Mark the FIZZLED Fireworks (of these formulas' workflows) to run again; returns their ids."""
    lpad = handle.launchpad
    query: dict[str, Any] = {"state": "FIZZLED", "spec.cryspnet": {"$exists": True}}
    scope = _scope_fw_ids(lpad, formulas)
    if scope is not None:
        query["fw_id"] = {"$in": scope}
    ids = sorted(int(d["fw_id"]) for d in lpad.fireworks.find(query, {"fw_id": 1}))
    rerun: list[int] = []
    for fw_id in ids:
        rerun.extend(lpad.rerun_fw(fw_id))
    handle.flush()
    return sorted(set(rerun))


def recover_interrupted(handle: StoreHandle) -> list[int]:
    """Reset RUNNING/RESERVED Fireworks of an embedded store to READY.

    Only for an embedded store opened for writing: it is locked, so nothing can be running them; they are
    left over from a run that was killed.
    """
    if not handle.embedded or handle.readonly:
        return []
    lpad = handle.launchpad
    ids = sorted(int(d["fw_id"]) for d in lpad.fireworks.find({"state": {"$in": ["RUNNING", "RESERVED"]}}))
    for fw_id in ids:
        lpad.rerun_fw(fw_id)
    if ids:
        logger.warning("reset %d Firework(s) left RUNNING by an interrupted run: %s", len(ids), ids)
        handle.flush()
    return ids


def lost_runs(handle: StoreHandle, *, expiration_secs: float = LOST_AFTER, rerun: bool = False) -> list[int]:
    """Fireworks of cryspnet workflows whose runs were lost (FireWorks' ``detect_lostruns``); rerun if asked.

    A run is lost when its Firework is RUNNING but its launch has not pinged for ``expiration_secs`` (FireWorks
    pings every hour), or its launch ended while the Firework stayed RUNNING. For an embedded store, only a
    RUNNING Firework in a store that nobody is writing is lost (``run`` resets them itself).
    """
    lpad = handle.launchpad
    if handle.embedded:
        if handle.busy:
            return []
        return sorted(
            int(d["fw_id"])
            for d in lpad.fireworks.find({"state": {"$in": ["RUNNING", "RESERVED"]}, **CRYSPNET_FWS})
        )
    _, fw_ids, inconsistent = lpad.detect_lostruns(
        expiration_secs=expiration_secs, rerun=rerun, refresh=rerun, query=dict(CRYSPNET_FWS)
    )
    if rerun and fw_ids:
        logger.warning("reran %d lost Firework(s): %s", len(fw_ids), fw_ids)
    return sorted({int(i) for i in [*fw_ids, *inconsistent]})


def store_notes(handle: StoreHandle, *, expiration_secs: float = LOST_AFTER) -> list[str]:
    """Plain sentences about work that is waiting, running elsewhere, interrupted or lost (for ``status``)."""
    from cryspnet_gen.workflows.errors import describe_holder

    lpad = handle.launchpad
    ready = lpad.fireworks.count_documents({"state": "READY", **CRYSPNET_FWS})
    notes: list[str] = []
    hint = handle_hint(handle)
    if handle.busy:
        notes.append(f"{describe_holder(handle.busy)} is writing this store; this is its last saved state")
    elif handle.interrupted:
        notes.append(
            f"interrupted: {describe_holder(handle.interrupted)} stopped without closing this store (killed?); "
            f"what it had saved is kept and `cryspnet-gen run{hint}` redoes the rest"
        )
    lost = lost_runs(handle, expiration_secs=expiration_secs)
    if lost and handle.embedded:
        notes.append(
            f"{len(lost)} job(s) left RUNNING by a run that stopped: {lost}; `cryspnet-gen run{hint}` runs them "
            "again"
        )
    elif lost:
        notes.append(
            f"{len(lost)} job(s) RUNNING without a sign of life for {expiration_secs / 3600:g} h (lost runs): "
            f"{lost}; `cryspnet-gen run --rerun-lost{hint}` runs them again"
        )
    if ready and not handle.busy and handle.embedded:
        notes.append(f"{ready} job(s) ready to run and no run is going: start `cryspnet-gen run{hint}`")
    return notes


def handle_hint(handle: StoreHandle) -> str:
    """`` --store DIR`` / `` --launchpad FILE`` for commands printed in messages (empty for the default)."""
    from cryspnet_gen.workflows.store import resolve_store_dir

    if handle.folder is not None:
        return "" if handle.folder == resolve_store_dir() else f" --store {handle.folder}"
    return " --launchpad FILE"


@dataclass
class RunSummary:
    """What :func:`run_local` ran.

    ``interrupted`` is set when a signal (Ctrl-C, SIGTERM) stopped the run; the job it stopped is READY again
    and listed in ``stopped``.
    """

    completed: list[int] = field(default_factory=list)
    fizzled: list[int] = field(default_factory=list)
    rerun: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    handovers: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def launched(self) -> int:
        return len(self.completed) + len(self.fizzled)


class _Stopper:
    """SIGINT/SIGTERM handler: stop after the current job, interrupting it (or a wait for the store) if one is
    going on."""

    def __init__(self) -> None:
        self.stop = False
        self.in_job = False
        self.job_interrupted = False
        self.in_wait = False
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        self.stop = True
        if self.in_job:
            self.in_job = False
            self.job_interrupted = True
            raise KeyboardInterrupt  # FireWorks records the job as FIZZLED; run_local makes it READY again
        if self.in_wait:
            self.in_wait = False
            raise KeyboardInterrupt  # everything was saved before the hand-over

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _launch_one(handle: StoreHandle, fworker: Any, stopper: _Stopper, *, strm_lvl: str, capture: bool) -> int:
    """Run one Rocket in a new launcher folder; the highest launch id before it (to find its launch).

    ``capture``: the job's output goes to ``FW_job.out`` and ``FW_job.error`` (tracebacks included) in its
    launcher folder, as FireWorks' ``rapidfire(local_redirect=True)`` does.
    """
    from fireworks.core.rocket_launcher import launch_rocket
    from fireworks.utilities.fw_utilities import create_datestamp_dir

    lpad = handle.launchpad
    before = lpad.launches.find_one({}, {"launch_id": 1}, sort=[("launch_id", -1)])
    cwd = os.getcwd()
    launcher = Path(create_datestamp_dir(str(handle.launch_dir()), logger, prefix="launcher_"))
    logs = [launcher / "FW_job.out", launcher / "FW_job.error"]
    os.chdir(launcher)
    try:
        with contextlib.ExitStack() as stack:
            err = None
            if capture:
                out, err = (stack.enter_context(open(p, "w", encoding="utf-8")) for p in logs)
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(err))
            stopper.in_job = True
            try:
                launch_rocket(lpad, fworker, strm_lvl=strm_lvl, err_file=err)
            except KeyboardInterrupt:  # outside the task itself (checkout, completion): undone the same way
                stopper.stop = stopper.job_interrupted = True
            finally:
                stopper.in_job = False
    finally:
        os.chdir(cwd)
        for path in logs:
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
    return int(before["launch_id"]) if before else 0


def _undo_interrupted(handle: StoreHandle, before: int, fworker_name: str) -> list[int]:
    """Make the job(s) a signal stopped READY again; their ids."""
    lpad = handle.launchpad
    launches = list(lpad.launches.find({"launch_id": {"$gt": before}, "fworker.name": fworker_name}))
    ids = sorted({int(la["fw_id"]) for la in launches if "fw_id" in la})
    if handle.embedded:
        handle.reload(force=True)  # the saved state: before this job started
    else:
        for fw_id in ids:
            lpad.rerun_fw(fw_id)
    return ids


def _files_signature(handle: StoreHandle) -> tuple[Any, ...]:
    """Identity of an embedded store's job-output files (every save gives a new one)."""
    from cryspnet_gen.workflows.storefiles import DATA_FILE, JOBS_FILE

    if handle.folder is None:
        return ()
    sig: list[Any] = []
    for name in (JOBS_FILE, DATA_FILE):
        try:
            st = os.stat(handle.folder / name)
            sig.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            sig.append(None)
    return tuple(sig)


def _verify_files(handle: StoreHandle, fw_id: int | None = None) -> None:
    """Check an embedded store's files again (someone else changed them, or a job failed); if one is damaged,
    make ``fw_id`` READY again, save, and raise :class:`StoreCorruptError` (nothing else is written)."""
    from cryspnet_gen.workflows.storefiles import check_store, corrupt_error

    if handle.folder is None:
        return
    bad = [state for state in check_store(handle.folder).values() if not state.ok]
    if bad:
        if fw_id is not None:
            handle.launchpad.rerun_fw(fw_id)
            handle.flush()
        raise corrupt_error(bad[0])


@contextlib.contextmanager
def _quiet_jobs(level: str, *, embedded: bool) -> Iterator[None]:
    """FireWorks' rocket messages and jobflow's job messages at ``level`` inside the block; no ping thread for
    an embedded store.

    FireWorks gives its rocket logger a stdout handler at INFO whatever the launcher asks for, and jobflow sets
    its logger to INFO at every job: a progress bar would drown in their lines, so the loggers that write them
    get ``level`` of their own. A Rocket pings its launch from a second thread; mongomock is not thread-safe
    (a ping can miss the launch while the job replaces it), and the embedded store needs no pings: its lock
    tells whether a run is alive.
    """
    from unittest import mock

    import fireworks.core.rocket as fw_rocket
    from fireworks.fw_config import ROCKET_STREAM_LOGLEVEL
    from fireworks.utilities.fw_utilities import get_fw_logger

    value = getattr(logging, level.upper(), logging.WARNING)
    saved: list[tuple[logging.Handler | logging.Logger, int]] = []
    get_fw_logger("rocket.launcher", stream_level=ROCKET_STREAM_LOGLEVEL)  # the handler a Rocket adds
    for name in ("rocket.launcher", "launchpad"):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                saved.append((h, h.level))
                h.setLevel(max(h.level, value))
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("jobflow.")]:
        child = logging.getLogger(name)
        saved.append((child, child.level))
        child.setLevel(value)
    no_ping = mock.patch.object(fw_rocket, "start_ping_launch", lambda *a: None)
    try:
        with no_ping if embedded else contextlib.nullcontext():
            yield
    finally:
        for obj, old in saved:
            obj.setLevel(old)


def _worker(handle: StoreHandle, formulas: list[str] | None, category: str | None) -> Any:
    from fireworks import FWorker

    query: dict[str, Any] = dict(CRYSPNET_FWS)
    if formulas is not None:
        keys = [wf["metadata"]["cryspnet"]["key"] for wf in find_workflows(handle.launchpad, formulas)]
        query = {"spec.cryspnet.key": {"$in": keys}}
    return FWorker(name=f"cryspnet-gen local {os.getpid()}", category=category or "", query=query)


def _handover(handle: StoreHandle, stopper: _Stopper) -> bool:
    """Let waiting processes use the store between jobs (see :meth:`StoreHandle.handover`); a signal while
    waiting to get it back stops the run (everything was saved)."""
    stopper.in_wait = True
    try:
        return handle.handover()
    except KeyboardInterrupt:
        stopper.stop = True
        return False
    finally:
        stopper.in_wait = False


def _record_launch(
    handle: StoreHandle,
    before: int,
    seconds: float,
    summary: RunSummary,
    bar: Any,
    *,
    progress: bool,
    on_job: Callable[[int, str, str, float, str | None], None] | None,
) -> bool:
    """Save and report the launch after ``before``; ``False`` when there was none."""
    lpad = handle.launchpad
    last = lpad.launches.find_one({"launch_id": {"$gt": before}}, sort=[("launch_id", -1)])
    if last is None:
        return False
    fw_id = int(last["fw_id"])
    fw = lpad.fireworks.find_one({"fw_id": fw_id}, {"name": 1, "state": 1})
    state, name = str(fw["state"]), str(fw["name"])
    error = firework_error(lpad, fw_id) if state == "FIZZLED" else None
    if error is not None:
        _verify_files(handle, fw_id)
    handle.flush()  # readers (status, results) see progress after every job
    (summary.completed if state == "COMPLETED" else summary.fizzled).append(fw_id)
    bar.update(1)
    bar.set_postfix_str(f"{name} ({seconds:.1f} s)")
    msg = f"{state:9s} fw {fw_id:>4d}  {name}  {seconds:.1f} s"
    if error:
        msg += f"\n          {error}"
    if progress:
        bar.write(msg)
    else:
        logger.info(msg)
    if on_job is not None:
        on_job(fw_id, name, state, seconds, error)
    return True


def run_local(
    handle: StoreHandle,
    *,
    formulas: Iterable[str] | None = None,
    rerun_fizzled_first: bool = False,
    rerun_lost: bool = False,
    lost_after: float = LOST_AFTER,
    max_jobs: int | None = None,
    category: str | None = None,
    progress: bool = True,
    fw_log_level: str = "WARNING",
    threads: int | None = DEFAULT_THREADS,
    tracebacks: bool = False,
    on_job: Callable[[int, str, str, float, str | None], None] | None = None,
) -> RunSummary:
    """Run READY Fireworks in this process, one after another, until none is left.

    Parameters
    ----------
    handle
        An open store (writable).
    formulas
        Only run the workflows of these formulas (default: all).
    rerun_fizzled_first
        Reset FIZZLED Fireworks to READY first (``LaunchPad.rerun_fw``).
    rerun_lost
        MongoDB: first rerun lost runs (:func:`lost_runs`, FireWorks' ``detect_lostruns``). An embedded store
        always resets the jobs of a run that was killed.
    lost_after
        Seconds without a ping after which a RUNNING job counts as lost (MongoDB).
    max_jobs
        Stop after this many launches.
    category
        Run only Fireworks of this ``_category`` (``"__none__"``: only those without one); default: any.
    progress
        Show a progress bar.
    fw_log_level
        Log level of FireWorks' own messages.
    threads
        torch threads for the jobs (``None``: torch's default, one per core). 1 (the default) is fastest for
        CHGNet on small cells and never oversubscribes a shared machine (docs/benchmarks.md).
    tracebacks
        Let the jobs print on the terminal, tracebacks included (otherwise their output goes to ``FW_job.out``
        and ``FW_job.error`` in their launch folders; a failed job's last line is reported either way).
    on_job
        Called after each launch with ``(fw_id, name, state, seconds, error)``.

    A signal (Ctrl-C, SIGTERM) stops the run: the job it interrupts is READY again, not FIZZLED, and the
    summary says ``interrupted``. Between jobs the store is handed to processes waiting for it (``submit``).
    """
    from tqdm.auto import tqdm

    from cryspnet_gen.runtime import torch_threads
    from cryspnet_gen.workflows.store import quiet_fireworks_loggers

    if handle.readonly:
        raise ValueError("run_local needs a store opened for writing")
    quiet_fireworks_loggers()
    summary = RunSummary()
    start = time.perf_counter()
    summary.recovered = recover_interrupted(handle)
    if rerun_lost and not handle.embedded:
        summary.recovered += lost_runs(handle, expiration_secs=lost_after, rerun=True)
    if rerun_fizzled_first:
        summary.rerun = rerun_fizzled(handle, formulas)
    formulas = list(formulas) if formulas is not None else None
    fworker = _worker(handle, formulas, category)
    ready_query = {**fworker.query, "state": "READY"}
    pending_query = {**fworker.query, "state": {"$in": ["WAITING", "READY", "RESERVED", "RUNNING"]}}

    def pending() -> int:
        return int(handle.launchpad.fireworks.count_documents(pending_query))

    bar = tqdm(total=pending(), desc="jobs", unit="job", disable=not progress)
    with (
        torch_threads(threads, blas=True),
        handle.active(),
        _quiet_jobs(fw_log_level, embedded=handle.embedded),
        _Stopper() as stopper,
    ):
        seen = _files_signature(handle)
        try:
            while not stopper.stop and (max_jobs is None or summary.launched < max_jobs):
                if handle.launchpad.fireworks.count_documents(ready_query) == 0:
                    break
                if _files_signature(handle) != seen:
                    _verify_files(handle)  # changed by another process (a hand-over, or by hand)
                t0 = time.perf_counter()
                before = _launch_one(handle, fworker, stopper, strm_lvl=fw_log_level, capture=not tracebacks)
                seconds = time.perf_counter() - t0
                if stopper.job_interrupted:
                    summary.interrupted = True
                    summary.stopped = _undo_interrupted(handle, before, fworker.name)
                    break
                if not _record_launch(
                    handle, before, seconds, summary, bar, progress=progress, on_job=on_job
                ):
                    break  # nothing was launched
                seen = _files_signature(handle)
                bar.total = summary.launched + pending()
                if not stopper.stop and _handover(handle, stopper):
                    summary.handovers += 1
                    bar.total = summary.launched + pending()
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - start
            summary.interrupted = summary.interrupted or stopper.stop
            handle.flush()
    return summary
