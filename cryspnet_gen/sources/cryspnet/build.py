"""One pyxtal attempt under a hard time limit, and the checks every built structure must pass.

On the main thread of a POSIX process the limit is a ``SIGALRM`` interval timer whose handler raises a private
``BaseException`` subclass inside pyxtal's Python loops (re-raised every second in case pyxtal swallows it; a
previous handler and timer are restored afterwards). Elsewhere each attempt runs in a child process (``fork``
where available) that is killed at the limit.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import multiprocessing
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.formula import FormulaUnit
from cryspnet_gen.options import can_use_alarm
from cryspnet_gen.symmetry import SYMPREC
from cryspnet_gen.validity import repair_contacts

if TYPE_CHECKING:
    from pymatgen.core import Structure

logger = logging.getLogger(__name__)

# pyxtal's own retries inside one from_random call; with a fixed lattice each retry repeats the same 40 x 10
# placement loops, so new attempts (new seeds) are a better use of the time.
_PYXTAL_MAX_COUNT = 2
_REPEAT_ALARM_S = 1.0


@functools.lru_cache(maxsize=64)
def _group(space_group: int) -> Any:
    from pyxtal.symmetry import Group

    _share_tolerance_matrix()
    return Group(space_group)


@functools.cache
def _share_tolerance_matrix() -> None:
    """Give pyxtal's Wyckoff merging one shared ``Tol_matrix``.

    ``Wyckoff_position.merge`` calls ``operations.check_images(..., tol=...)`` without ``tm``, and
    ``check_images`` then builds a fresh ``Tol_matrix(prototype="atomic")`` (a 100 x 100 table filled in Python,
    6 ms) on every call, unused because ``tol`` is given: 37 % of the time of a 70-atom La1.8Sr0.2CuO4 cell
    (docs/benchmarks.md, "Candidate generation"). Passing the same default matrix, built once, changes no
    result (``check_images`` only reads it).
    """
    import pyxtal.symmetry as pyxtal_symmetry
    from pyxtal.tolerance import Tol_matrix

    original = pyxtal_symmetry.check_images
    shared = Tol_matrix(prototype="atomic")

    @functools.wraps(original)
    def check_images(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("tm") is None and len(args) < 5:
            kwargs["tm"] = shared
        return original(*args, **kwargs)

    pyxtal_symmetry.check_images = check_images


@dataclass(frozen=True)
class PyxtalJob:
    """Everything one pyxtal attempt needs (picklable, for the child-process path)."""

    space_group: int
    species: tuple[str, ...]
    num_ions: tuple[int, ...]
    cell: tuple[float, ...]
    entropy: tuple[int, ...]
    t_factor: float
    sites: tuple[tuple[str, ...], ...] | None = None
    """Wyckoff labels per species (``"4a"``) to place the atoms on; None: pyxtal picks orbits at random."""


def _build(job: PyxtalJob) -> Structure:
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice

    group = _group(job.space_group)
    rng = np.random.default_rng(np.random.SeedSequence(list(job.entropy)))
    lattice = Lattice.from_para(*job.cell, ltype=group.lattice_type, random_state=rng)
    xtal = pyxtal()
    # pyxtal prints to stdout in places (e.g. "Error: Invalid atomic symbol" when the time limit's exception lands
    # in one of its bare ``except:`` blocks): keep stdout for results, send its lines to the debug log
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            xtal.from_random(
                3,
                group,
                list(job.species),
                list(job.num_ions),
                lattice=lattice,
                sites=None if job.sites is None else [list(site) for site in job.sites],
                random_state=rng,
                t_factor=job.t_factor,
                max_count=_PYXTAL_MAX_COUNT,
            )
    finally:
        if printed.getvalue().strip():
            logger.debug("pyxtal printed: %s", printed.getvalue().strip()[:500])
    if not xtal.valid:
        raise RuntimeError("pyxtal returned an invalid structure")
    return xtal.to_pymatgen()


class _AlarmExpired(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that pyxtal's ``except Exception`` does not eat it."""


class TimeLimit(Exception):
    """An attempt ran out of time."""


def _run_with_alarm(job: PyxtalJob, seconds: float) -> Structure:
    state = {"active": True}

    def handler(signum: int, frame: Any) -> None:
        if state["active"]:
            raise _AlarmExpired

    # imports and the group tables before the timer: an expiry inside an import leaves a half-initialised
    # module behind for the rest of the process
    import pyxtal
    import pyxtal.lattice  # noqa: F401

    _group(job.space_group)
    previous = signal.signal(signal.SIGALRM, handler)
    stdout = sys.stdout
    started = time.monotonic()
    outer_delay, outer_interval = 0.0, 0.0
    try:
        try:
            # inside the try: a limit of a millisecond can expire before the next line runs
            outer_delay, outer_interval = signal.setitimer(
                signal.ITIMER_REAL, max(seconds, 1e-3), _REPEAT_ALARM_S
            )
            return _build(job)
        finally:
            state["active"] = False
    except _AlarmExpired:
        raise TimeLimit from None
    except Exception:
        # pyxtal's bare ``except:`` blocks can swallow the alarm and fail later in another way (a tolerance of
        # None, a TypeError): past the deadline, any failure is the time limit's
        if time.monotonic() - started >= seconds:
            raise TimeLimit from None
        raise
    finally:
        state["active"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        # an expiry can land inside _build's stdout redirection before it is undone
        sys.stdout = stdout
        # signal() returns None for a handler that was not set from Python: fall back to the default.
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if outer_delay > 0:  # someone else's timer was running: give it back what is left
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_interval)


def _child(conn: Any, job: PyxtalJob) -> None:
    try:
        conn.send(("ok", _build(job).as_dict()))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class _ChildError(Exception):
    pass


def _run_in_process(job: PyxtalJob, seconds: float | None) -> Structure:
    from pymatgen.core import Structure

    methods = multiprocessing.get_all_start_methods()
    ctx: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, job), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds):
            raise TimeLimit
        try:
            status, payload = parent.recv()
        except EOFError:
            raise _ChildError(f"the pyxtal worker process died (exit code {proc.exitcode})") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    if status != "ok":
        raise _ChildError(payload)
    return Structure.from_dict(payload)


def run_job(job: PyxtalJob, seconds: float | None, isolation: str) -> Structure:
    if isolation == "process" or (isolation == "auto" and seconds is not None and not can_use_alarm()):
        return _run_in_process(job, seconds)
    if seconds is None:
        return _build(job)
    return _run_with_alarm(job, seconds)


def check_structure(
    structure: Structure, space_group: int, fu: FormulaUnit, factor: float
) -> tuple[Structure | None, str | None]:
    """``(structure, note)`` for a built structure that passes the checks, stretched apart when its atoms were a
    little too close (:func:`cryspnet_gen.validity.repair_contacts`; the note says so, else ``None``), or
    ``(None, reason)`` when it fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    formula = structure.composition.reduced_formula
    if formula != fu.reduced_formula:
        return None, f"built formula {formula} differs from {fu.reduced_formula}"
    repaired, note = repair_contacts(structure, factor, space_group=space_group)
    if repaired is None:
        return None, note
    try:
        found = SpacegroupAnalyzer(repaired, symprec=SYMPREC).get_space_group_number()
    except Exception as exc:  # spglib failures surface as several types
        return None, f"symmetry analysis failed ({type(exc).__name__}: {exc})"
    if found != space_group:
        return None, f"symmetry check found space group {found}, not {space_group} (symprec={SYMPREC:g})"
    return repaired, note
