"""Submit, run and follow candidate-relaxation workflows on a FireWorks LaunchPad.

These functions take an open :class:`~cryspnet_gen.workflows.store.StoreHandle` (see
:func:`~cryspnet_gen.workflows.store.open_store`); the ``cryspnet-gen submit|run|status`` commands are thin
wrappers around them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryspnet_gen.formula import canonical_formula

if TYPE_CHECKING:
    from cryspnet_gen.workflows.makers import CandidateRelaxMaker
    from cryspnet_gen.workflows.store import StoreHandle

__all__ = [
    "RunSummary",
    "SubmitOutcome",
    "WorkflowStatus",
    "find_workflows",
    "firework_error",
    "recover_interrupted",
    "rerun_fizzled",
    "run_local",
    "submit",
    "workflow_status",
]

logger = logging.getLogger(__name__)

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


@dataclass
class RunSummary:
    """What :func:`run_local` ran."""

    completed: list[int] = field(default_factory=list)
    fizzled: list[int] = field(default_factory=list)
    rerun: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def launched(self) -> int:
        return len(self.completed) + len(self.fizzled)


def run_local(
    handle: StoreHandle,
    *,
    formulas: Iterable[str] | None = None,
    rerun_fizzled_first: bool = False,
    max_jobs: int | None = None,
    category: str | None = None,
    progress: bool = True,
    fw_log_level: str = "WARNING",
    threads: int | None = None,
    on_job: Callable[[int, str, str, float, str | None], None] | None = None,
) -> RunSummary:
    """Run READY Fireworks in this process, one after another, until none is left (FireWorks rapidfire).

    Parameters
    ----------
    handle
        An open store (writable).
    formulas
        Only run the workflows of these formulas (default: all).
    rerun_fizzled_first
        Reset FIZZLED Fireworks to READY first (``LaunchPad.rerun_fw``).
    max_jobs
        Stop after this many launches.
    category
        Run only Fireworks of this ``_category`` (``"__none__"``: only those without one); default: any.
    progress
        Show a progress bar.
    fw_log_level
        Log level of FireWorks' own messages.
    threads
        torch threads for the jobs (``None``: torch's default); 1 is fastest for CHGNet on small cells or on
        a machine whose cores are busy.
    on_job
        Called after each launch with ``(fw_id, name, state, seconds, error)``.
    """
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire
    from tqdm.auto import tqdm

    from cryspnet_gen.runtime import torch_threads
    from cryspnet_gen.workflows.store import quiet_fireworks_loggers

    if handle.readonly:
        raise ValueError("run_local needs a store opened for writing")
    quiet_fireworks_loggers()
    lpad = handle.launchpad
    summary = RunSummary()
    start = time.perf_counter()
    summary.recovered = recover_interrupted(handle)
    if rerun_fizzled_first:
        summary.rerun = rerun_fizzled(handle, formulas)

    formulas = list(formulas) if formulas is not None else None
    query: dict[str, Any] = {"spec.cryspnet": {"$exists": True}}
    if formulas is not None:
        keys = [wf["metadata"]["cryspnet"]["key"] for wf in find_workflows(lpad, formulas)]
        query = {"spec.cryspnet.key": {"$in": keys}}
    fworker = FWorker(name=f"cryspnet-gen local {os.getpid()}", category=category or "", query=query)
    ready_query = {**fworker.query, "state": "READY"}
    pending_query = {**fworker.query, "state": {"$in": ["WAITING", "READY", "RESERVED", "RUNNING"]}}

    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def _interrupt(signum: int, frame: Any) -> None:
            # The running job is recorded as FIZZLED (FireWorks catches the interrupt); then stop.
            stop.set()
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, _interrupt)
    bar = tqdm(
        total=lpad.fireworks.count_documents(pending_query), desc="jobs", unit="job", disable=not progress
    )
    with torch_threads(threads):
        try:
            while not stop.is_set() and (max_jobs is None or summary.launched < max_jobs):
                if lpad.fireworks.count_documents(ready_query) == 0:
                    break
                before = lpad.launches.find_one({}, {"launch_id": 1}, sort=[("launch_id", -1)])
                t0 = time.perf_counter()
                rapidfire(lpad, fworker, m_dir=str(handle.launch_dir()), nlaunches=1, strm_lvl=fw_log_level)
                seconds = time.perf_counter() - t0
                handle.flush()  # readers (status, results) see progress after every job
                last = lpad.launches.find_one(
                    {"launch_id": {"$gt": before["launch_id"] if before else 0}}, sort=[("launch_id", -1)]
                )
                if last is None:  # nothing was launched
                    break
                fw_id = int(last["fw_id"])
                fw = lpad.fireworks.find_one({"fw_id": fw_id}, {"name": 1, "state": 1})
                state = str(fw["state"])
                name = str(fw["name"])
                error = firework_error(lpad, fw_id) if state == "FIZZLED" else None
                (summary.completed if state == "COMPLETED" else summary.fizzled).append(fw_id)
                bar.total = summary.launched + lpad.fireworks.count_documents(pending_query)
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
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            summary.seconds = time.perf_counter() - start
            summary.interrupted = summary.interrupted or stop.is_set()
            handle.flush()
    return summary
