"""jobflow Makers: formula -> candidate structures -> one relaxation per candidate -> ranking by energy.

:class:`CandidateRelaxMaker` ``.make(formula)`` returns a :class:`~jobflow.Flow`::

    generate (list[Candidate])  ->  fan-out  ==replaced at run time by==>  relax #1 ... relax #k  ->  collect

The number of candidates is known only once the generation job has run, so the fan-out job returns
``Response(replace=Flow([...]))``; the Flow's output (the fan-out's output) then resolves to the collect job's
ranking, a ``list[RelaxedCandidate]`` sorted by energy per atom. Each relaxation is any atomate2 Maker whose
``make(structure)`` gives a Job or Flow whose output has ``structure`` and ``output.energy_per_atom``:
:func:`chgnet_relax_maker` (default; CPU is fine) or :func:`vasp_relax_maker` (``MPGGADoubleRelaxMaker``).

Every job carries ``metadata["cryspnet"]`` (formula, k, seed, model, relaxer, the submission ``key`` and the
job's ``role``; relaxations add the candidate's rank, Bravais lattice, space group, probability, model version
and seed). ``flow_to_workflow`` copies job metadata into each Firework's spec, so ``lpad`` queries such as
``{"spec.cryspnet.formula": "NaCl", "spec.cryspnet.role": "relax"}`` find them; the FireWorks workflow carries
the same under ``metadata.cryspnet``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from jobflow import Flow, Job, Maker, Response, job

from cryspnet_gen.formula import canonical_formula
from cryspnet_gen.options import GenerateOptions
from cryspnet_gen.records import RelaxedCandidate
from cryspnet_gen.relax import rank_by_energy, relaxed_candidate
from cryspnet_gen.symmetry import SYMPREC

if TYPE_CHECKING:
    from cryspnet_gen.records import Candidate

__all__ = [
    "CandidateRelaxMaker",
    "RelaxKind",
    "canonical_formula",
    "chgnet_relax_maker",
    "collect_relaxations",
    "generate_candidates_job",
    "generate_options",
    "relax_fanout",
    "relax_kind",
    "relax_maker_for",
    "relaxation_flow",
    "vasp_relax_maker",
]

logger = logging.getLogger(__name__)

RelaxKind = Literal["chgnet", "vasp"]
METADATA_KEY = "cryspnet"


# ----------------------------------------------------------------------------------------------------------
# relaxation makers


def chgnet_relax_maker(*, steps: int = 500, fmax: float = 0.1, relax_cell: bool = True) -> Maker:
    """atomate2's ``ForceFieldRelaxMaker`` with CHGNet (pretrained weights ship in the chgnet wheel).

    Parameters
    ----------
    steps
        Ionic step cap (atomate2's ``steps`` field).
    fmax
        Force criterion in eV/Å (``relax_kwargs={"fmax": fmax}``, passed to atomate2's ``AseRelaxer.relax``).
    relax_cell
        Relax the cell as well as the positions.
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    return ForceFieldRelaxMaker(
        force_field_name="CHGNet", steps=steps, relax_cell=relax_cell, relax_kwargs={"fmax": fmax}
    )


def vasp_relax_maker(*, steps: int | None = None, fmax: float | None = None) -> Maker:
    """atomate2's ``MPGGADoubleRelaxMaker`` (Materials Project GGA(+U) settings, two relaxations).

    Parameters
    ----------
    steps
        If given, ``NSW`` (ionic step cap) of both relaxations; MP's default otherwise.
    fmax
        If given, ``EDIFFG = -fmax`` (force criterion, eV/Å); MP's default otherwise.
    """
    from atomate2.vasp.flows.mp import MPGGADoubleRelaxMaker
    from atomate2.vasp.powerups import update_user_incar_settings

    maker: Maker = MPGGADoubleRelaxMaker()
    incar: dict[str, Any] = {}
    if steps is not None:
        incar["NSW"] = int(steps)
    if fmax is not None:
        incar["EDIFFG"] = -abs(float(fmax))
    if incar:
        maker = update_user_incar_settings(maker, incar)
    return maker


def relax_maker_for(kind: RelaxKind, *, steps: int | None = None, fmax: float | None = None) -> Maker:
    """The relaxation Maker for ``--relax chgnet|vasp`` (``None`` keeps each Maker's default)."""
    if kind == "chgnet":
        kwargs = {k: v for k, v in (("steps", steps), ("fmax", fmax)) if v is not None}
        return chgnet_relax_maker(**kwargs)  # type: ignore[arg-type]
    if kind == "vasp":
        return vasp_relax_maker(steps=steps, fmax=fmax)
    raise ValueError(f"Unknown {kind=}; choose from {get_args(RelaxKind)}")


def relax_kind(maker: Maker) -> str:
    """Short label of a relaxation Maker: ``"chgnet"``, ``"vasp"``, another force field's name, or its class."""
    ff = getattr(maker, "force_field_name", None)
    if ff is not None:
        name = ff.value if isinstance(ff, Enum) else str(ff)
        return name.split(".")[-1].lower()
    if type(maker).__module__.startswith("atomate2.vasp"):
        return "vasp"
    return type(maker).__name__


def relaxer_label(maker: Maker) -> str:
    """Human-readable name of the relaxer for tables (``"CHGNet"``, ``"MP GGA double relax"``, ...)."""
    ff = getattr(maker, "force_field_name", None)
    if ff is not None:
        return (ff.value if isinstance(ff, Enum) else str(ff)).split(".")[-1]
    return str(getattr(maker, "name", type(maker).__name__))


# ----------------------------------------------------------------------------------------------------------
# helpers


def generate_options(
    *,
    k: int,
    seed: int,
    max_atoms: int | None = None,
    space_groups: Sequence[int] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
) -> GenerateOptions:
    """The :class:`~cryspnet_gen.options.GenerateOptions` of a generation job.

    ``generate_kwargs`` (any option fields) with ``k`` and ``seed``, and ``max_atoms`` and ``space_groups`` when
    set; the Maker keeps these as separate fields so that stored workflows and submission keys stay as they were.

    Raises
    ------
    ValueError
        For a bad value; ``TypeError`` for an unknown option name.
    """
    extra: dict[str, Any] = dict(generate_kwargs or {})
    if max_atoms is not None:
        extra["max_atoms"] = max_atoms
    if space_groups:
        extra["space_groups"] = list(space_groups)
    return GenerateOptions.from_keywords(k=k, seed=seed, **extra)


def _strip_versions(obj: Any) -> Any:
    # "@version" fields change with package upgrades; they must not change a submission key.
    if isinstance(obj, dict):
        return {k: _strip_versions(v) for k, v in obj.items() if k != "@version"}
    if isinstance(obj, list):
        return [_strip_versions(v) for v in obj]
    return obj


def _jobs_of(obj: Job | Flow) -> list[Job]:
    if isinstance(obj, Job):
        return [obj]
    return [j for j, _ in obj.iterflow()]


def candidate_metadata(cand: Candidate) -> dict[str, Any]:
    """The candidate's fields that go into job metadata and Firework specs."""
    return {
        "rank": int(cand.rank),
        "bravais": getattr(cand, "bravais", None),
        "space_group": int(cand.space_group),
        "space_group_symbol": getattr(cand, "space_group_symbol", None),
        "probability": None if getattr(cand, "probability", None) is None else float(cand.probability),
        "z": getattr(cand, "z", None),
        "n_atoms": len(cand.structure),
        "bundle": getattr(cand, "bundle", None),
        "model_version": getattr(cand, "bundle_version", None),
        "bravais_model": getattr(cand, "model", None),
        "candidate_seed": getattr(cand, "seed", None),
    }


def _get(doc: Any, *path: str) -> Any:
    """``doc.a.b`` or ``doc["a"]["b"]`` (job outputs arrive as objects or as dicts), ``None`` when missing."""
    for name in path:
        if doc is None:
            return None
        doc = doc.get(name) if isinstance(doc, dict) else getattr(doc, name, None)
    return doc


def relaxed_from_output(
    candidate: Candidate, output: Any, *, relaxer: str, symprec: float = SYMPREC
) -> RelaxedCandidate:
    """A :class:`RelaxedCandidate` from a relaxation job's output (atomate2 task document, object or dict).

    ``None`` (a relaxation whose job failed) gives a row with ``error`` set.
    """
    from pymatgen.core import Structure

    if output is None:
        return relaxed_candidate(
            candidate, None, relaxer=relaxer, error="relaxation job failed or did not run"
        )
    structure = _get(output, "structure") or _get(output, "output", "structure")
    if structure is None:
        structure = _get(output, "output", "mol_or_struct")
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    if structure is None:
        return relaxed_candidate(candidate, None, relaxer=relaxer, error="relaxation output has no structure")
    # atomate2 records the optimizer's own verdict (forces and, with a cell filter, stress) as the task state;
    # is_force_converged looks at forces only, which symmetry can make zero in a cell that is still changing.
    state = _get(output, "state")
    state = getattr(state, "value", state)
    converged = (state == "successful") if state is not None else _get(output, "is_force_converged")
    n_steps = _get(output, "output", "n_steps")
    if n_steps is not None and _get(output, "forcefield_name") is not None:
        # atomate2 counts trajectory frames: the start, one per step, and the end again.
        n_steps = max(int(n_steps) - 2, 0)
    return relaxed_candidate(
        candidate,
        structure,
        energy=_get(output, "output", "energy"),
        energy_per_atom=_get(output, "output", "energy_per_atom"),
        converged=converged,
        n_steps=n_steps,
        relaxer=relaxer,
        symprec=symprec,
    )


# ----------------------------------------------------------------------------------------------------------
# jobs


@job
def generate_candidates_job(
    formula: str,
    *,
    k: int,
    seed: int,
    model: str | None = None,
    model_path: str | None = None,
    max_atoms: int | None = None,
    space_groups: list[int] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
) -> list[Candidate]:
    """Generate candidate structures for ``formula`` (the model is loaded here, by name or path).

    The keyword arguments are those stored in submitted workflows; they become one
    :class:`~cryspnet_gen.options.GenerateOptions` (:func:`generate_options`).
    """
    from cryspnet_gen.generate import generate_candidates
    from cryspnet_gen.predict import load_predictor

    predictor = load_predictor(path=model_path) if model_path else load_predictor(model)
    options = generate_options(
        k=k, seed=seed, max_atoms=max_atoms, space_groups=space_groups, generate_kwargs=generate_kwargs
    )
    candidates = generate_candidates(formula, options=options, predictor=predictor)
    if not candidates:
        raise RuntimeError(f"no candidate structure could be generated for {formula} with {k=}, {seed=}")
    logger.info("generated %d candidates for %s", len(candidates), formula)
    return list(candidates)


@job
def collect_relaxations(
    candidates: list[Candidate],
    outputs: list[Any],
    *,
    relaxer: str,
    symprec: float = SYMPREC,
) -> list[RelaxedCandidate]:
    """Rank the relaxed candidates by energy per atom (a failed relaxation arrives as ``None``, ranked last)."""
    rows = [
        relaxed_from_output(c, out, relaxer=relaxer, symprec=symprec)
        for c, out in zip(candidates, outputs, strict=True)
    ]
    return rank_by_energy(rows)


def relaxation_flow(
    candidates: Sequence[Candidate],
    relax_maker: Maker,
    *,
    metadata: dict[str, Any] | None = None,
    relax_category: str | None = None,
    symprec: float = SYMPREC,
) -> Flow:
    """One relaxation per candidate and a collect job ranking them; the Flow's output is the ranking.

    Parameters
    ----------
    candidates
        Candidates of one formula.
    relax_maker
        atomate2 Maker whose ``make(structure)`` relaxes a structure.
    metadata
        Submission metadata (``metadata["cryspnet"]`` of the parent jobs) extended per job.
    relax_category
        FireWorks ``_category`` for the relaxation Fireworks (so that only matching workers run them).
    symprec
        Tolerance for the space group after relaxation.
    """
    from jobflow.core.reference import OnMissing

    base = dict(metadata or {})
    formula = base.get("formula") or (candidates[0].formula if candidates else "")
    relax_jobs: list[Job | Flow] = []
    for cand in candidates:
        relax = relax_maker.make(cand.structure)
        symbol = getattr(cand, "space_group_symbol", None) or cand.space_group
        relax.append_name(f" {formula} #{cand.rank} {symbol}", dynamic=False)
        final_uuid = relax.output.uuid if relax.output is not None else None
        for j in _jobs_of(relax):
            meta = {**base, **candidate_metadata(cand), "role": "relax", "final": j.uuid == final_uuid}
            j.metadata[METADATA_KEY] = meta
            if relax_category:
                j.config.manager_config = {**j.config.manager_config, "_category": relax_category}
        relax_jobs.append(relax)
    collect = collect_relaxations(
        list(candidates), [r.output for r in relax_jobs], relaxer=relaxer_label(relax_maker), symprec=symprec
    )
    collect.name = f"cryspnet collect {formula}"
    collect.metadata[METADATA_KEY] = {**base, "role": "collect"}
    # Rank what succeeded even when a relaxation fizzled (FireWorks: _allow_fizzled_parents).
    collect.config.on_missing_references = OnMissing.NONE
    return Flow([*relax_jobs, collect], output=collect.output, name=f"cryspnet relax {formula}")


@job
def relax_fanout(candidates: list[Candidate], **flow_options: Any) -> Response:
    """Replace itself by :func:`relaxation_flow` of the generated candidates (dynamic fan-out).

    ``flow_options``: ``relax_maker`` and the keyword options of :func:`relaxation_flow`.
    """
    return Response(replace=relaxation_flow(candidates, **flow_options))


# ----------------------------------------------------------------------------------------------------------
# the Maker


@dataclass
class CandidateRelaxMaker(Maker):
    """Formula -> candidate structures (cryspnet-gen) -> relaxation of each -> ranking by energy per atom.

    Parameters
    ----------
    name
        Name of the Flows made.
    k
        Number of candidates to generate.
    seed
        Seed of the structure generation.
    model
        Shipped model bundle name (default: the shipped default); ignored when ``model_path`` is set.
    model_path
        Model bundle folder; stored as an absolute path (jobs run in their own launch folders), so it must
        exist at that path on the machine that runs the generation job.
    max_atoms
        Largest candidate cell to generate (``None``: the generator's default).
    space_groups
        Generate candidates in these space groups instead of the predicted ones (for tests and for trying
        given groups).
    generate_kwargs
        Further fields of :class:`~cryspnet_gen.options.GenerateOptions` (``source``, ``templates``, ...);
        :meth:`generate_options` gives all of them as one object.
    relax_maker
        atomate2 Maker relaxing one structure: ``chgnet_relax_maker()`` (default), ``vasp_relax_maker()``, or
        any Maker whose output has ``structure`` and ``output.energy_per_atom``.
    relax_category
        FireWorks ``_category`` of the relaxation Fireworks (e.g. ``"vasp"`` for cluster workers).
    symprec
        Tolerance for the space group after relaxation.

    Examples
    --------
    >>> from jobflow import run_locally
    >>> flow = CandidateRelaxMaker(k=2, relax_maker=chgnet_relax_maker(steps=50)).make("NaCl")
    >>> ranking = run_locally(flow, ensure_success=True)  # doctest: +SKIP
    """

    name: str = "cryspnet candidates"
    k: int = 3
    seed: int = 0
    model: str | None = None
    model_path: str | None = None
    max_atoms: int | None = None
    space_groups: list[int] | None = None
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    relax_maker: Maker = field(default_factory=chgnet_relax_maker)
    relax_category: str | None = None
    symprec: float = SYMPREC

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.model_path is not None:
            self.model_path = str(Path(self.model_path).expanduser().absolute())
        if self.space_groups is not None:
            self.space_groups = [int(g) for g in self.space_groups]

    def model_id(self) -> str:
        """The model as the jobs will load it: an absolute bundle path, or a shipped bundle name."""
        if self.model_path is not None:
            return self.model_path
        if self.model is not None:
            return self.model
        from cryspnet_gen.bundle import DEFAULT_BUNDLE

        return DEFAULT_BUNDLE

    def generate_options(self) -> GenerateOptions:
        """The options the generation job will use (validated; ``ValueError`` names a bad value)."""
        return generate_options(**self._settings(), generate_kwargs=self.generate_kwargs)

    def _settings(self, **model: str | None) -> dict[str, Any]:
        """``k``, ``seed``, the ``model`` keywords (the model as the receiver names it), ``max_atoms`` and
        ``space_groups``: the generation settings as the job, the submission key and the metadata take them."""
        return {
            "k": self.k,
            "seed": self.seed,
            **model,
            "max_atoms": self.max_atoms,
            "space_groups": self.space_groups,
        }

    def key(self, formula: str) -> str:
        """Submission key: equal for the same formula, generation options and relaxation settings.

        Used to recognise a workflow that was already submitted.
        """
        from monty.json import jsanitize

        payload = {
            "formula": canonical_formula(formula),
            **self._settings(model=self.model_id()),
            "generate_kwargs": jsanitize(self.generate_kwargs, strict=True, enum_values=True),
            "relax_maker": _strip_versions(jsanitize(self.relax_maker, strict=True, enum_values=True)),
            "relax_category": self.relax_category,
            "symprec": self.symprec,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def workflow_metadata(self, formula: str) -> dict[str, Any]:
        """``metadata["cryspnet"]`` of the workflow and of every job in it (jobs add their ``role``)."""
        from cryspnet_gen import __version__

        return {
            "formula": canonical_formula(formula),
            "formula_input": formula,
            **self._settings(model=self.model_id()),
            "relax": relax_kind(self.relax_maker),
            "relaxer": relaxer_label(self.relax_maker),
            "key": self.key(formula),
            "cryspnet_gen_version": __version__,
        }

    def make(self, formula: str) -> Flow:
        """Flow for one formula: generate -> fan-out (relax each candidate -> collect).

        Raises
        ------
        ValueError
            If the formula cannot be parsed.
        """
        meta = self.workflow_metadata(formula)
        canon = meta["formula"]
        settings = self._settings(model=self.model, model_path=self.model_path)
        gen = generate_candidates_job(canon, **settings, generate_kwargs=self.generate_kwargs or None)
        gen.name = f"cryspnet generate {canon}"
        gen.metadata[METADATA_KEY] = {**meta, "role": "generate"}
        fan = relax_fanout(
            gen.output,
            relax_maker=self.relax_maker,
            metadata=meta,
            relax_category=self.relax_category,
            symprec=self.symprec,
        )
        fan.name = f"cryspnet relax fan-out {canon}"
        fan.metadata[METADATA_KEY] = {**meta, "role": "fanout"}
        # The relaxations get their own manager config (category), not the fan-out's.
        fan.config.pass_manager_config = False
        return Flow([gen, fan], output=fan.output, name=f"{self.name} {canon}")

    def make_many(self, formulas: Iterable[str]) -> list[Flow]:
        """One Flow per formula (see :meth:`make`)."""
        return [self.make(f) for f in formulas]
