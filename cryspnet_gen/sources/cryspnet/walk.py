"""The CRYSPNet candidate source: walk the ranked (lattice, space group) pairs and build structures.

:func:`cryspnet_candidates` takes a parsed :class:`~cryspnet_gen.formula.FormulaUnit`, the formula's
:class:`~cryspnet_gen.records.Prediction` (every lattice and group) and :class:`~cryspnet_gen.options.GenerateOptions`
and returns up to ``k`` candidates; see :mod:`cryspnet_gen.sources.cryspnet` for the method.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cryspnet_gen.formula import FormulaUnit
from cryspnet_gen.options import GenerateOptions
from cryspnet_gen.records import (
    Candidate,
    CandidateList,
    GenerationError,
    LatticePrediction,
    Prediction,
    SkippedPair,
    prediction_fields,
)
from cryspnet_gen.sources.cryspnet.build import PyxtalJob, TimeLimit, check_structure, run_job
from cryspnet_gen.sources.cryspnet.cells import plan_cells, precheck
from cryspnet_gen.symmetry import bravais_of, space_group_symbol

if TYPE_CHECKING:
    from pymatgen.core import Structure

logger = logging.getLogger(__name__)

SOURCE = "cryspnet"
# Attempts at one Z before the next Z is tried (plus one per extra structure wanted from a pair).
_ATTEMPTS_PER_Z = 3
# pyxtal's atomic tolerance is 0.5 x the covalent-radius sum; t_factor scales it.
_PYXTAL_TOL_BASE = 0.5
_MAX_REASONS_IN_MESSAGE = 8


@dataclass
class _Pair:
    bravais: str
    space_group: int
    probability: float
    bravais_probability: float
    space_group_probability: float
    lattice: LatticePrediction | None
    pair_rank: int
    notes: list[str] = field(default_factory=list)


def ranked_pairs(
    pred: Prediction, space_groups: Sequence[int] | None, bravais: Sequence[str] | None
) -> list[_Pair]:
    pairs = [
        _Pair(
            bravais=lat.bravais,
            space_group=int(sg),
            probability=float(lat.probability * p),
            bravais_probability=float(lat.probability),
            space_group_probability=float(p),
            lattice=lat,
            pair_rank=0,
        )
        for lat in pred.lattices
        for sg, p in zip(lat.space_groups, lat.space_group_probabilities, strict=True)
    ]
    pairs.sort(key=lambda g: -g.probability)
    for i, pair in enumerate(pairs, start=1):
        pair.pair_rank = i
    if space_groups is not None:
        by_group = {p.space_group: p for p in pairs}
        lattices = {lat.bravais: lat for lat in pred.lattices}
        forced = []
        for sg in dict.fromkeys(space_groups):
            if sg in by_group:
                forced.append(by_group[sg])
                continue
            lat_name = bravais_of(sg)
            lat = lattices.get(lat_name)
            forced.append(
                _Pair(
                    bravais=lat_name,
                    space_group=sg,
                    probability=0.0,
                    bravais_probability=float(lat.probability) if lat is not None else 0.0,
                    space_group_probability=0.0,
                    lattice=lat,
                    pair_rank=0,
                    notes=[f"space group {sg} forced; the model does not rank it"],
                )
            )
        pairs = sorted(forced, key=lambda g: -g.probability)
    if bravais is not None:
        allowed = set(bravais)
        pairs = [p for p in pairs if p.bravais in allowed]
    return pairs


def _same_structure(a: Structure, others: Sequence[Structure]) -> bool:
    if not others:
        return False
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    return any(matcher.fit(a, b) for b in others)


def _try_pair(
    pair: _Pair,
    pred: Prediction,
    fu: FormulaUnit,
    opts: GenerateOptions,
    want: int,
    call_deadline: float | None,
) -> tuple[list[tuple[Structure, int, int, np.ndarray, list[str]]], str | None]:
    """Build up to ``want`` structures for one pair: ``(built, reason)`` with ``reason`` when none was built.

    ``built`` holds ``(structure, z, attempt, cell, notes)``.
    """
    sg = pair.space_group
    lat = pair.lattice
    plan = plan_cells(
        fu,
        sg,
        pair.bravais,
        lat.cell if lat is not None else None,
        pred.volume_per_atom,
        opts.max_atoms,
        lat.z_ranking_of(sg) if lat is not None and opts.z_rule == "prior" else (),
    )
    notes = [*pair.notes, *plan.notes]
    zs, z_est = plan.zs, plan.z_estimate
    if not zs:
        return [], (
            f"composition {fu.text} x Z does not fit the Wyckoff positions of the group for any Z <= "
            f"{opts.max_atoms // fu.n_atoms} (max_atoms={opts.max_atoms})"
        )
    now = time.monotonic()
    deadline = call_deadline
    if opts.timeout_per_group is not None:
        pair_deadline = now + opts.timeout_per_group
        deadline = pair_deadline if deadline is None else min(deadline, pair_deadline)
    # pyxtal keeps its own tolerance (0.5 x the covalent sum, t_factor 1) or a looser one: a stricter one slows
    # it down many times over (LLZO in P-1 at 0.6: 30-45 s instead of 0.7-2.4 s), and so does an anion-anion
    # tolerance. check_structure pushes atoms closer than min_distance_factor apart (symmetry kept) instead.
    t_factor = min(opts.min_distance_factor, _PYXTAL_TOL_BASE) / _PYXTAL_TOL_BASE
    built: list[tuple[Structure, int, int, np.ndarray, list[str]]] = []
    failures: list[str] = []
    attempt = 0
    cells = []
    for z in zs:
        cell = plan.cell(z, fu)
        problem = precheck(cell, sg, fu, z, opts.min_distance_factor)
        if problem:
            failures.append(f"Z={z}: {problem}")
        else:
            cells.append((z, cell))
    per_z = _ATTEMPTS_PER_Z + want - 1
    planned = per_z * len(cells)
    prior = opts.wyckoff_prior if opts.wyckoff != "random" else None
    for zi, (z, cell) in enumerate(cells):
        known_sites = prior.assignments(sg, fu, z) if prior is not None else []
        z_notes = list(notes)
        if z != zs[0]:
            z_notes.append(f"Z={z}: the smallest compatible Z={zs[0]} failed ({'; '.join(failures)})")
        if z_est is not None:
            z_notes.append(
                f"Z={z}, the smallest Z the Wyckoff positions allow (predicted cell: Z of {z_est:.2f})"
            )
        for j in range(per_z):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return built, _time_reason(built, failures, opts, call_deadline)
            # Run times are heavy-tailed: an attempt that is not the last one planned gets half of the time
            # left, so that a fresh seed (or the next Z) still has a chance.
            last = zi * per_z + j == planned - 1
            cap = left if left is None or last else left / 2
            sites = known_sites[j] if j < len(known_sites) else None
            job = PyxtalJob(
                space_group=sg,
                species=fu.species,
                num_ions=tuple(c * z for c in fu.counts),
                cell=tuple(float(x) for x in cell),
                entropy=(opts.seed, sg, attempt),
                t_factor=t_factor,
                sites=None if sites is None else tuple(tuple(site) for site in sites),
            )
            this = attempt
            attempt += 1
            try:
                structure = run_job(job, cap, opts.isolation)
            except TimeLimit:
                logger.info(
                    "%s: space group %d attempt %d hit its time limit (%.2g s)", fu.formula, sg, this, cap
                )
                failures.append(f"Z={z} attempt {this}: time limit ({cap:.2g} s) reached")
                continue
            except Exception as exc:  # pyxtal raises RuntimeError, ValueError, IndexError... on bad inputs
                failures.append(f"Z={z} attempt {this}: pyxtal failed ({type(exc).__name__}: {exc})")
                continue
            checked, note = check_structure(structure, sg, fu, opts.min_distance_factor)
            if checked is None:
                failures.append(f"Z={z} attempt {this}: {note}")
                continue
            structure = checked
            if want > 1 and _same_structure(structure, [b[0] for b in built]):
                failures.append(f"Z={z} attempt {this}: same structure as an earlier attempt")
                continue
            these = z_notes if sites is None else [*z_notes, f"Wyckoff sites of known crystals: {sites}"]
            if note is None:
                built.append((structure, z, this, cell, these))
            else:  # repaired: the cell may have been stretched
                built.append((structure, z, this, np.array(structure.lattice.parameters), [*these, note]))
            if len(built) >= want:
                return built, None
        if built:
            break
    if not built and deadline is not None and time.monotonic() >= deadline:
        return built, _time_reason(built, failures, opts, call_deadline)
    return built, None if built else "; ".join(failures)


def _time_reason(
    built: list[Any], failures: list[str], opts: GenerateOptions, call_deadline: float | None
) -> str | None:
    if built:
        return None
    if opts.timeout_per_group is None or (
        call_deadline is not None and time.monotonic() >= call_deadline - 1e-3
    ):
        what = f"time limit for the call (timeout={opts.timeout:g} s) reached"
    else:
        what = f"time limit for the group (timeout_per_group={opts.timeout_per_group:g} s) reached"
    return "; ".join([*failures, what])


def _walk(pred: Prediction, fu: FormulaUnit, pairs: list[_Pair], opts: GenerateOptions) -> CandidateList:
    start = time.monotonic()
    call_deadline = None if opts.timeout is None else start + opts.timeout
    out = CandidateList(formula=fu.formula)
    for i, pair in enumerate(pairs):
        if len(out) >= opts.k:
            break
        if call_deadline is not None and time.monotonic() >= call_deadline:
            out.stop_reason = f"time limit for the call (timeout={opts.timeout:g} s) reached after {i} of {len(pairs)} pairs"
            break
        want = min(opts.per_group, opts.k - len(out))
        built, reason = _try_pair(pair, pred, fu, opts, want, call_deadline)
        if reason is not None:
            skip = SkippedPair(pair.bravais, pair.space_group, reason, pair.probability)
            out.skipped.append(skip)
            log = logger.debug if reason.startswith("composition") else logger.info
            log("%s: skipped %s", fu.formula, skip)
        for structure, z, attempt, cell, notes in built:
            out.append(_candidate(pair, pred, fu, opts, len(out) + 1, structure, z, attempt, cell, notes))
    else:
        if len(out) < opts.k:
            out.stop_reason = f"all {len(pairs)} (lattice, space group) pairs were tried, {opts.per_group} structure(s) each"
    logger.info(
        "%s: %d candidate(s) in %.2f s (%d pairs skipped)",
        fu.formula,
        len(out),
        time.monotonic() - start,
        len(out.skipped),
    )
    return out


def _candidate(
    pair: _Pair,
    pred: Prediction,
    fu: FormulaUnit,
    opts: GenerateOptions,
    rank: int,
    structure: Structure,
    z: int,
    attempt: int,
    cell: np.ndarray,
    notes: list[str],
) -> Candidate:
    return Candidate(
        formula=fu.formula,
        rank=rank,
        bravais=pair.bravais,
        space_group=pair.space_group,
        space_group_symbol=space_group_symbol(pair.space_group),
        probability=pair.probability,
        bravais_probability=pair.bravais_probability,
        space_group_probability=pair.space_group_probability,
        structure=structure,
        z=z,
        formula_unit=fu.text,
        cell=[float(x) for x in cell],
        **prediction_fields(pred, pair.bravais),
        seed=opts.seed,
        attempt=attempt,
        pair_rank=pair.pair_rank,
        source=SOURCE,
        notes=list(notes),
    )


def failure_message(formula: str, found: CandidateList, k: int) -> str:
    # Pairs that were built and failed say more than pairs whose composition never fitted: list them first.
    ordered = sorted(found.skipped, key=lambda s: s.reason.startswith("composition"))
    reasons = [str(s) for s in ordered[:_MAX_REASONS_IN_MESSAGE]]
    more = len(found.skipped) - len(reasons)
    tail = f"; ... and {more} more (see .skipped)" if more > 0 else ""
    stop = f" ({found.stop_reason})" if found.stop_reason else ""
    head = (
        f"no candidate structure could be built for {formula!r}"
        if not found
        else f"only {len(found)} of {k} candidate structures could be built for {formula!r}"
    )
    if not reasons:
        return (
            head
            + (f" ({found.stop_reason})" if found.stop_reason else "")
            + (": no (lattice, space group) pair was tried" if not found else "")
        )
    return f"{head}{stop}: " + "; ".join(reasons) + tail


def cryspnet_candidates(fu: FormulaUnit, prediction: Prediction, options: GenerateOptions) -> CandidateList:
    """Up to ``options.k`` CRYSPNet candidates of a formula, most likely pair first.

    Raises
    ------
    ValueError
        When the formula could not be predicted (``prediction.error``).
    GenerationError
        When no pair gave a structure; ``.skipped`` lists each pair tried and why it failed.
    """
    if prediction.error is not None:
        raise ValueError(f"formula {fu.formula!r} cannot be predicted: {prediction.error}")
    pairs = ranked_pairs(prediction, options.space_groups, options.bravais)
    found = _walk(prediction, fu, pairs, options)
    if not found:
        raise GenerationError(
            failure_message(fu.formula, found, options.k), formula=fu.formula, skipped=found.skipped
        )
    return found
