"""In-process relaxation (no FireWorks, no database): CHGNet through ASE, used by ``generate_candidates(relax=)``
and by the workflows.

:func:`relax_candidates` relaxes :class:`~cryspnet_gen.records.Candidate` structures with CHGNet's
``StructOptimizer`` (FIRE, cell relaxed with ASE's ``FrechetCellFilter``) and re-ranks them by energy per atom.
:class:`RelaxedCandidate` is the result type shared with the FireWorks/jobflow path (the collect job of
:class:`~cryspnet_gen.workflows.makers.CandidateRelaxMaker` returns a list of them), so both paths report the
same numbers in the same shape.

Only numpy, monty and pymatgen are imported at module level; CHGNet (and torch) load on the first relaxation.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from cryspnet_gen.records import Candidate, CandidateList, RelaxedCandidate
from cryspnet_gen.runtime import quiet_dependencies, torch_threads
from cryspnet_gen.symmetry import SYMPREC

if TYPE_CHECKING:
    from chgnet.model import StructOptimizer
    from pymatgen.core import Structure

__all__ = [
    "DEFAULT_FMAX",
    "DEFAULT_STEPS",
    "SYMPREC",
    "RelaxedCandidate",
    "StructureRelaxation",
    "load_chgnet_optimizer",
    "prerelax_pool",
    "rank_by_energy",
    "relax_and_rerank",
    "relax_candidates",
    "relax_structure",
    "relax_symmetric",
    "relaxed_candidate",
    "torch_threads",
]

logger = logging.getLogger(__name__)

Relaxer = Literal["chgnet"]

DEFAULT_STEPS = 500
DEFAULT_FMAX = 0.1  # eV/Å, atomate2's and CHGNet's default


@dataclass
class StructureRelaxation:
    """Result of :func:`relax_structure`."""

    structure: Structure
    energy: float
    energy_per_atom: float
    n_steps: int
    converged: bool
    seconds: float


def space_group_of(structure: Structure, symprec: float = SYMPREC) -> tuple[int | None, str | None]:
    """Space group number and symbol of ``structure``, ``(None, None)`` when spglib cannot tell."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        return int(sga.get_space_group_number()), str(sga.get_space_group_symbol())
    except ValueError as exc:  # pymatgen's SymmetryUndeterminedError is a ValueError
        logger.warning("no space group for a relaxed %s: %s", structure.reduced_formula, exc)
        return None, None


def relaxed_candidate(
    candidate: Candidate,
    structure: Structure | None,
    *,
    energy: float | None = None,
    energy_per_atom: float | None = None,
    converged: bool | None = None,
    n_steps: int | None = None,
    relaxer: str = "",
    seconds: float | None = None,
    error: str | None = None,
    symprec: float = SYMPREC,
) -> RelaxedCandidate:
    """Build a :class:`RelaxedCandidate`, deriving the space group and volume change from the structures."""
    if structure is None or error is not None:
        return RelaxedCandidate(
            candidate=candidate,
            relaxer=relaxer,
            seconds=seconds,
            error=error or "relaxation gave no structure",
        )
    if energy_per_atom is None and energy is not None:
        energy_per_atom = energy / len(structure)
    if energy is None and energy_per_atom is not None:
        energy = energy_per_atom * len(structure)
    sg, symbol = space_group_of(structure, symprec)
    v0 = candidate.structure.volume / len(candidate.structure)
    v1 = structure.volume / len(structure)
    error = None
    if energy_per_atom is None or not math.isfinite(energy_per_atom):
        error = f"relaxation gave no finite energy ({energy_per_atom})"
    return RelaxedCandidate(
        candidate=candidate,
        structure=structure,
        energy=None if energy is None else float(energy),
        energy_per_atom=None if energy_per_atom is None else float(energy_per_atom),
        relaxed_space_group=sg,
        relaxed_space_group_symbol=symbol,
        volume_change=float(v1 / v0 - 1.0),
        converged=None if converged is None else bool(converged),
        n_steps=None if n_steps is None else int(n_steps),
        relaxer=relaxer,
        seconds=seconds,
        error=error,
    )


def rank_by_energy(relaxed: Sequence[RelaxedCandidate]) -> list[RelaxedCandidate]:
    """Sort by energy per atom (lowest first), failures last in predicted order; set ``energy_rank``."""
    good = sorted((r for r in relaxed if r.ok), key=lambda r: (r.energy_per_atom, r.candidate.rank))
    bad = sorted((r for r in relaxed if not r.ok), key=lambda r: r.candidate.rank)
    for i, r in enumerate(good, start=1):
        r.energy_rank = i
    for r in bad:
        r.energy_rank = None
    return [*good, *bad]


def load_chgnet_optimizer(*, optimizer: str = "FIRE", use_device: str | None = None) -> StructOptimizer:
    """CHGNet's ``StructOptimizer`` with the pretrained model shipped in the chgnet wheel (loads offline)."""
    from chgnet.model import StructOptimizer

    return StructOptimizer(optimizer_class=optimizer, use_device=use_device)


def relax_structure(
    structure: Structure,
    *,
    optimizer: StructOptimizer | None = None,
    steps: int = DEFAULT_STEPS,
    fmax: float = DEFAULT_FMAX,
    relax_cell: bool = True,
) -> StructureRelaxation:
    """Relax one structure with CHGNet.

    Parameters
    ----------
    structure
        Structure to relax (not modified).
    optimizer
        A loaded :func:`load_chgnet_optimizer`; loaded here when ``None`` (a few seconds, so pass one for batches).
    steps, fmax
        At most ``steps`` ionic steps; converged when every force is below ``fmax`` (eV/Å) (and the stress,
        through the cell filter, when ``relax_cell``).
    relax_cell
        Relax the cell shape and volume as well as the positions.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    opt = optimizer if optimizer is not None else load_chgnet_optimizer()
    start = time.perf_counter()
    result = opt.relax(structure.copy(), fmax=fmax, steps=steps, relax_cell=relax_cell, verbose=False)
    seconds = time.perf_counter() - start
    final: Structure = result["final_structure"]  # type: ignore[assignment]
    traj: Any = result["trajectory"]
    # The observer records the start, every step, and the end again.
    n_steps = max(len(traj.energies) - 2, 0)
    energy = float(traj.energies[-1])  # total energy (eV): CHGNet's calculator returns per-atom x atoms
    # ASE stops before the cap only when its criterion (forces and, through the cell filter, stress) is met.
    # The forces alone would not do: symmetry can make them zero in a cell that is still changing.
    converged = n_steps < steps
    return StructureRelaxation(
        structure=final,
        energy=energy,
        energy_per_atom=energy / len(final),
        n_steps=n_steps,
        converged=bool(converged),
        seconds=seconds,
    )


@functools.lru_cache(maxsize=1)
def _shared_optimizer() -> StructOptimizer:
    """One CHGNet model per process for the pre-relaxations (loading it takes seconds)."""
    return load_chgnet_optimizer()


def relax_symmetric(
    structure: Structure,
    *,
    optimizer: StructOptimizer | None = None,
    steps: int = 50,
    fmax: float = DEFAULT_FMAX,
    deadline: float | None = None,
    symprec: float = 0.01,
) -> StructureRelaxation:
    """Relax positions and cell with CHGNet, keeping the structure's space group (ASE ``FixSymmetry``).

    At most ``steps`` FIRE steps (cell through ``FrechetCellFilter``); stops early at ``fmax`` (eV/Å, forces and
    stress) or when ``time.monotonic()`` passes ``deadline``. The result's ``converged`` says whether ``fmax``
    was reached; its energy is that of the final structure.
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    opt = optimizer if optimizer is not None else _shared_optimizer()
    start = time.perf_counter()
    atoms = AseAtomsAdaptor().get_atoms(structure)
    atoms.calc = opt.calculator
    atoms.set_constraint(FixSymmetry(atoms, symprec=symprec))
    fire = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = False
    with warnings.catch_warnings():
        # CHGNet converts the atoms to a pymatgen Structure at every call and warns that FixSymmetry cannot go
        # with them: harmless, the constraint stays on the ASE atoms that are moved
        warnings.filterwarnings("ignore", message="Only FixAtoms and FixCartesian", category=UserWarning)
        for converged in fire.irun(fmax=fmax, steps=steps):
            if converged or (deadline is not None and time.monotonic() > deadline):
                break
        energy = float(atoms.get_potential_energy())
    # the input's species and site properties on the relaxed cell and positions (the calculator's per-atom
    # results, float32 magnetic moments among them, are not carried over)
    final = Structure(
        atoms.cell[:],
        structure.species,
        atoms.get_scaled_positions(wrap=True),
        site_properties=structure.site_properties or None,
    )
    return StructureRelaxation(
        structure=final,
        energy=energy,
        energy_per_atom=energy / len(final),
        n_steps=int(fire.nsteps),
        converged=bool(converged),
        seconds=time.perf_counter() - start,
    )


def prerelax_pool(
    found: CandidateList,
    k: int,
    *,
    steps: int = 50,
    fmax: float = DEFAULT_FMAX,
    timeout: float | None = 60.0,
    threads: int | None = 1,
) -> CandidateList:
    """The ``k`` candidates of lowest energy per atom after a short CHGNet relaxation with symmetry kept.

    Each candidate of ``found`` (most likely first) is relaxed by :func:`relax_symmetric` until ``timeout``
    seconds have passed for the whole pool; relaxed ones replace their structure and get ``energy_per_atom``,
    ``relaxed_by`` and ``predicted_rank`` and a note. Ranking: relaxed candidates by energy per atom, then the
    ones not reached in time or whose relaxation failed, in the model's order. Relaxed candidates that became the
    same structure (``StructureMatcher`` defaults, whatever group they were built in: a rock salt built in R-3m
    relaxes to the cubic one) keep the one of lower energy.
    """
    import dataclasses

    from pymatgen.analysis.structure_matcher import StructureMatcher

    deadline = None if timeout is None else time.monotonic() + timeout
    relaxed: list[Candidate] = []
    rest: list[Candidate] = []
    with torch_threads(threads, blas=True), quiet_dependencies():
        for c in found:
            if deadline is not None and time.monotonic() > deadline:
                rest.append(dataclasses.replace(c, notes=[*c.notes, "not pre-relaxed: pool time limit"]))
                continue
            try:
                res = relax_symmetric(c.structure, steps=steps, fmax=fmax, deadline=deadline)
            except Exception as exc:  # one bad structure must not stop the pool; the note says why
                logger.warning("pre-relaxation of %s #%s failed: %s", c.formula, c.rank, exc)
                rest.append(dataclasses.replace(c, notes=[*c.notes, f"pre-relaxation failed: {exc}"]))
                continue
            if not math.isfinite(res.energy_per_atom):
                rest.append(dataclasses.replace(c, notes=[*c.notes, "pre-relaxation gave no finite energy"]))
                continue
            relaxed.append(
                dataclasses.replace(
                    c,
                    structure=res.structure,
                    energy_per_atom=res.energy_per_atom,
                    relaxed_by="CHGNet (symmetry kept)",
                    predicted_rank=c.rank,
                    relaxed_space_group=c.space_group,
                    notes=[
                        *c.notes,
                        f"pre-relaxed with CHGNet, symmetry kept: {res.n_steps} steps"
                        f"{'' if res.converged else ' (not converged)'}, {res.energy_per_atom:.4f} eV/atom",
                    ],
                )
            )
    relaxed.sort(key=lambda c: (c.energy_per_atom, c.rank))
    matcher = StructureMatcher()
    kept: list[Candidate] = []
    for c in [*relaxed, *rest]:
        if len(kept) >= k:
            break
        if c.energy_per_atom is not None and any(
            o.energy_per_atom is not None and matcher.fit(o.structure, c.structure) for o in kept
        ):
            continue
        kept.append(c)
    for rank, c in enumerate(kept, 1):
        c.rank = rank
    stop = found.stop_reason if len(kept) < k else None
    return CandidateList(kept, formula=found.formula, skipped=found.skipped, stop_reason=stop)


def relax_candidates(
    candidates: Sequence[Candidate],
    *,
    relaxer: Relaxer = "chgnet",
    steps: int = DEFAULT_STEPS,
    fmax: float = DEFAULT_FMAX,
    relax_cell: bool = True,
    progress: bool = True,
    symprec: float = SYMPREC,
    threads: int | None = None,
) -> list[RelaxedCandidate]:
    """Relax candidates in this process and re-rank them by energy per atom.

    Parameters
    ----------
    candidates
        Candidates, e.g. from :func:`cryspnet_gen.generate_candidates` (any mix of formulas; energies are
        compared per atom, so rank one formula at a time to compare polymorphs).
    relaxer
        ``"chgnet"`` (the pretrained CHGNet shipped with the chgnet package; CPU is fine).
    steps, fmax
        Ionic step cap and force criterion (eV/Å) per relaxation.
    relax_cell
        Relax the cell as well as the positions.
    progress
        Show a progress bar.
    symprec
        Tolerance for the space group of the relaxed structures.
    threads
        torch threads for the relaxations (``None``: torch's default, one per core); 1 is best for small cells
        or on a busy machine.

    Dependencies stay quiet (:func:`cryspnet_gen.runtime.quiet_dependencies`): no scipy ``logm`` warnings, no
    CHGNet banner on stdout.

    Returns
    -------
    list[RelaxedCandidate]
        Lowest energy per atom first; a candidate whose relaxation failed comes last with its ``error`` set
        (one bad structure never stops the batch).
    """
    if relaxer not in get_args(Relaxer):
        raise ValueError(f"Unknown {relaxer=}; choose from {get_args(Relaxer)}")
    if not candidates:
        return []
    with torch_threads(threads, blas=True), quiet_dependencies():
        out = _relax_all(
            candidates, steps=steps, fmax=fmax, relax_cell=relax_cell, progress=progress, symprec=symprec
        )
    return rank_by_energy(out)


def _relax_all(
    candidates: Sequence[Candidate],
    *,
    steps: int,
    fmax: float,
    relax_cell: bool,
    progress: bool,
    symprec: float,
) -> list[RelaxedCandidate]:
    from tqdm.auto import tqdm

    optimizer = load_chgnet_optimizer()
    out: list[RelaxedCandidate] = []
    bar = tqdm(candidates, desc="relaxing (CHGNet)", unit="structure", disable=not progress)
    for cand in bar:
        bar.set_postfix_str(f"{cand.formula} #{cand.rank} ({len(cand.structure)} atoms)")
        start = time.perf_counter()
        try:
            res = relax_structure(
                cand.structure, optimizer=optimizer, steps=steps, fmax=fmax, relax_cell=relax_cell
            )
        except Exception as exc:  # one bad structure must not stop the batch; the error is kept on its row
            logger.warning("relaxation of %s #%s failed", cand.formula, cand.rank, exc_info=True)
            out.append(
                relaxed_candidate(
                    cand,
                    None,
                    relaxer="CHGNet",
                    seconds=time.perf_counter() - start,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
            continue
        out.append(
            relaxed_candidate(
                cand,
                res.structure,
                energy=res.energy,
                energy_per_atom=res.energy_per_atom,
                converged=res.converged,
                n_steps=res.n_steps,
                relaxer="CHGNet",
                seconds=res.seconds,
                symprec=symprec,
            )
        )
    return out


def relax_and_rerank(
    found: CandidateList,
    relax: str = "chgnet",
    *,
    steps: int = 300,
    fmax: float = DEFAULT_FMAX,
    progress: bool = False,
    threads: int | None = None,
) -> CandidateList:
    """Relax candidates in this process and re-rank them by energy per atom (lowest first).

    Each returned candidate holds the relaxed structure, ``energy_per_atom``, ``relaxed_by``,
    ``relaxed_space_group`` and its model rank in ``predicted_rank``; a candidate whose relaxation failed keeps
    its unrelaxed structure, goes last and says why in ``notes``. Needs CHGNet (the ``[workflows]`` extra).
    """
    import dataclasses

    if relax != "chgnet":
        raise ValueError(f"Unknown {relax=}; choose from ('chgnet',)")
    try:
        import chgnet  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            f"relax={relax!r} needs CHGNet: pip install 'cryspnet-gen[workflows]' ({exc})"
        ) from exc
    relaxed = relax_candidates(
        list(found), relaxer="chgnet", steps=steps, fmax=fmax, progress=progress, threads=threads
    )
    done, failed = [], []
    for r in relaxed:
        c = r.candidate
        if r.structure is None or r.energy_per_atom is None:
            failed.append(
                dataclasses.replace(
                    c, predicted_rank=c.rank, notes=[*c.notes, f"relaxation failed: {r.error}"]
                )
            )
        else:
            done.append(
                dataclasses.replace(
                    c,
                    structure=r.structure,
                    energy_per_atom=float(r.energy_per_atom),
                    relaxed_by=r.relaxer,
                    predicted_rank=c.rank,
                    relaxed_space_group=r.relaxed_space_group,
                )
            )
    done.sort(key=lambda c: c.energy_per_atom)  # type: ignore[arg-type, return-value]
    ranked = [*done, *failed]
    for rank, c in enumerate(ranked, 1):
        c.rank = rank
    return CandidateList(ranked, formula=found.formula, skipped=found.skipped, stop_reason=found.stop_reason)
