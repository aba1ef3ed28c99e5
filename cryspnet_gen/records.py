"""Result types: what a prediction, a candidate and a relaxation return (like atomate2's ``schemas.py``).

Every record is a dataclass that is also monty ``MSONable`` (``as_dict``/``from_dict`` round-trip, JSON, jobflow
stores). They sit at the bottom of the package so that every layer, from the predictor to the workflows, speaks
the same types without importing the code that makes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from monty.json import MSONable

from cryspnet_gen.symmetry import CELL_PARAMETERS, space_group_symbol

if TYPE_CHECKING:
    import pandas as pd
    from pymatgen.core import Structure

__all__ = [
    "Candidate",
    "CandidateList",
    "CandidateWarning",
    "GenerationError",
    "GenerationResult",
    "LatticePrediction",
    "Prediction",
    "RankedGroup",
    "RelaxedCandidate",
    "SkippedPair",
    "prediction_fields",
    "predictions_to_dataframe",
]


# ---------------------------------------------------------------------------------------------------------
# predictions
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LatticePrediction(MSONable):
    """What a bundle says about one Bravais lattice for one formula.

    Attributes
    ----------
    bravais
        Pearson symbol of the lattice, e.g. ``"cF"``.
    probability, probability_std
        Ensemble mean and std of P(lattice).
    space_groups
        The most likely space groups of this lattice, most likely first.
    space_group_probabilities, space_group_std
        P(group | lattice), ensemble mean and std, aligned with ``space_groups``.
    parameters, parameters_std
        Lattice parameters named as in ``symmetry.PARAMETER_NAMES[bravais]`` (Å, degrees), ensemble mean
        and std; ``None`` values when the bundle has no regressor for this lattice.
    cell, cell_std
        Full conventional cell ``[a, b, c, alpha, beta, gamma]`` (hR in hexagonal axes) from
        ``symmetry.from_parameters``, and its std across ensemble members; ``None`` when unknown.
    z_ranking
        Per space group (aligned with ``space_groups``): the formula units per conventional cell that known
        crystals of that group and formula type have, most frequent first (:mod:`cryspnet_gen.zprior`); empty
        when the bundle has no Z prior.
    """

    bravais: str
    probability: float
    probability_std: float = 0.0
    space_groups: list[int] = field(default_factory=list)
    space_group_probabilities: list[float] = field(default_factory=list)
    space_group_std: list[float] = field(default_factory=list)
    parameters: dict[str, float | None] = field(default_factory=dict)
    parameters_std: dict[str, float | None] = field(default_factory=dict)
    cell: list[float] | None = None
    cell_std: list[float] | None = None
    z_ranking: list[list[int]] = field(default_factory=list)

    def z_ranking_of(self, space_group: int) -> list[int]:
        """The Z ranking of one of this lattice's groups (empty when unknown)."""
        if space_group in self.space_groups and len(self.z_ranking) == len(self.space_groups):
            return list(self.z_ranking[self.space_groups.index(space_group)])
        return []


@dataclass
class RankedGroup(MSONable):
    """One (Bravais lattice, space group) hypothesis with its joint probability and cell."""

    bravais: str
    space_group: int
    probability: float
    bravais_probability: float
    space_group_probability: float
    cell: list[float] | None = None
    cell_std: list[float] | None = None


@dataclass
class Prediction(MSONable):
    """Predictions of one bundle for one formula (ensemble mean and std throughout).

    Attributes
    ----------
    formula
        The input formula as given.
    model
        The Bravais model used: ``"master"``, ``"metal"`` or ``"oxide"``.
    bundle, bundle_version
        Name and version of the bundle.
    bravais_probabilities, bravais_std
        P(lattice) for all 14 lattices, keyed in ``symmetry.BRAVAIS_LATTICES`` order.
    lattices
        Details for the ``top_bravais`` most likely lattices, most likely first.
    volume_per_atom, volume_per_atom_std
        Predicted volume per atom (Å^3).
    error
        Why the formula could not be predicted; ``None`` for a good input.
    """

    formula: str
    model: str = "master"
    bundle: str = ""
    bundle_version: str = ""
    bravais_probabilities: dict[str, float] = field(default_factory=dict)
    bravais_std: dict[str, float] = field(default_factory=dict)
    lattices: list[LatticePrediction] = field(default_factory=list)
    volume_per_atom: float | None = None
    volume_per_atom_std: float | None = None
    error: str | None = None

    def bravais_ranking(self) -> list[tuple[str, float]]:
        """All Bravais lattices with P(lattice), most likely first (empty for an error row)."""
        return sorted(self.bravais_probabilities.items(), key=lambda kv: -kv[1])

    def ranked_groups(self) -> list[RankedGroup]:
        """The predicted (lattice, space group) pairs with joint probability and cell, most likely first."""
        out = [
            RankedGroup(
                bravais=lat.bravais,
                space_group=int(sg),
                probability=lat.probability * p,
                bravais_probability=lat.probability,
                space_group_probability=p,
                cell=None if lat.cell is None else list(lat.cell),
                cell_std=None if lat.cell_std is None else list(lat.cell_std),
            )
            for lat in self.lattices
            for sg, p in zip(lat.space_groups, lat.space_group_probabilities, strict=True)
        ]
        return sorted(out, key=lambda g: -g.probability)

    def space_group_ranking(self) -> list[tuple[int, float]]:
        """Joint P(lattice) x P(group | lattice) over the predicted pairs, most likely first.

        With ``predict(..., top_bravais=14, top_space_groups=230)`` every pair is present and the
        probabilities sum to about 1.
        """
        return [(g.space_group, g.probability) for g in self.ranked_groups()]

    def lattice(self, bravais: str) -> LatticePrediction:
        """The details predicted for ``bravais``.

        Raises
        ------
        KeyError
            If ``bravais`` was not among the lattices predicted (raise ``top_bravais``).
        """
        for lat in self.lattices:
            if lat.bravais == bravais:
                return lat
        have = [lat.bravais for lat in self.lattices]
        raise KeyError(f"{bravais!r} not predicted for {self.formula!r} (have {have}); raise top_bravais")

    def lattice_parameters(self, bravais: str, *, std: bool = False) -> dict[str, float | None]:
        """Lattice parameters (or their std) predicted for ``bravais``, named per ``PARAMETER_NAMES``."""
        lat = self.lattice(bravais)
        return dict(lat.parameters_std if std else lat.parameters)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per predicted (lattice, space group) pair; see :func:`predictions_to_dataframe`."""
        return predictions_to_dataframe([self])


def predictions_to_dataframe(preds: Sequence[Prediction]) -> pd.DataFrame:
    """Flatten predictions: one row per (formula, lattice, space group), most likely first per formula.

    Columns: ``index`` (position of the formula in ``preds``), ``formula``, ``model``, ``bravais``,
    ``bravais_probability``, ``space_group``, ``space_group_probability`` (given the lattice),
    ``probability`` (joint), ``rank``, the cell ``a b c alpha beta gamma`` and ``*_std``,
    ``volume_per_atom`` and its std, ``error``. An error row keeps its place with NaN values.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for i, p in enumerate(preds):
        base = {"index": i, "formula": p.formula, "model": p.model}
        vol = {
            "volume_per_atom": np.nan if p.volume_per_atom is None else p.volume_per_atom,
            "volume_per_atom_std": np.nan if p.volume_per_atom_std is None else p.volume_per_atom_std,
            "error": p.error,
        }
        groups = p.ranked_groups()
        if not groups:
            rows.append({**base, "bravais": None, "space_group": pd.NA, "rank": pd.NA, **vol})
            continue
        for rank, g in enumerate(groups, start=1):
            cell = g.cell if g.cell is not None else [np.nan] * 6
            cell_std = g.cell_std if g.cell_std is not None else [np.nan] * 6
            rows.append(
                {
                    **base,
                    "bravais": g.bravais,
                    "bravais_probability": g.bravais_probability,
                    "space_group": g.space_group,
                    "space_group_probability": g.space_group_probability,
                    "probability": g.probability,
                    "rank": rank,
                    **dict(zip(CELL_PARAMETERS, cell, strict=True)),
                    **{f"{k}_std": v for k, v in zip(CELL_PARAMETERS, cell_std, strict=True)},
                    **vol,
                }
            )
    columns = [
        "index",
        "formula",
        "model",
        "bravais",
        "bravais_probability",
        "space_group",
        "space_group_probability",
        "probability",
        "rank",
        *CELL_PARAMETERS,
        *(f"{k}_std" for k in CELL_PARAMETERS),
        "volume_per_atom",
        "volume_per_atom_std",
        "error",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["space_group"] = frame["space_group"].astype("Int64")
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


# ---------------------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SkippedPair(MSONable):
    """A (Bravais lattice, space group) pair that gave no candidate, and why.

    Attributes
    ----------
    bravais, space_group
        The pair.
    reason
        Why it gave nothing (incompatible composition, failed checks, pyxtal errors, a time limit...).
    probability
        Its joint probability P(lattice) x P(group | lattice).
    """

    bravais: str
    space_group: int
    reason: str
    probability: float = 0.0

    def __str__(self) -> str:
        return f"{self.bravais} {space_group_symbol(self.space_group)} ({self.space_group}): {self.reason}"


@dataclass
class Candidate(MSONable):
    """One candidate structure for a formula.

    Attributes
    ----------
    formula
        The input formula as given.
    rank
        1 for the most likely candidate of this formula, then 2, 3...
    bravais, space_group, space_group_symbol
        The lattice and group the structure was built in (the structure's symmetry was checked).
    probability, bravais_probability, space_group_probability
        P(lattice) x P(group | lattice), P(lattice) and P(group | lattice) from the model (0 for a forced group
        the model does not know).
    structure
        The conventional cell, as built by pyxtal (pymatgen ``Structure``).
    z
        Formula units (of ``formula_unit``) in ``structure``.
    formula_unit
        The integer formula unit that ``z`` counts (the input, reduced; for a non-integer input its smallest
        integer multiple).
    lattice_parameters, lattice_parameters_std
        Predicted lattice parameters of ``bravais`` (named as in ``symmetry.PARAMETER_NAMES``), ensemble mean
        and std; ``None`` values when the model has none.
    predicted_cell, predicted_cell_std
        The predicted full conventional cell ``[a, b, c, alpha, beta, gamma]`` and its spread, or ``None``.
    cell
        The cell actually built: the predicted shape (or a fallback, see ``notes``) scaled to ``z``.
    volume_per_atom, volume_per_atom_std
        Predicted volume per atom (Å^3) and its spread.
    model, bundle, bundle_version
        Bravais model (``master``, ``metal`` or ``oxide``), model bundle name and version.
    seed, attempt
        ``generate_candidates(..., seed=seed)`` with the same predictor and options rebuilds this candidate;
        ``attempt`` numbers the pyxtal attempt within its space group.
    pair_rank
        Position of the (lattice, group) pair in the model's ranking (1 = most likely; 0 when not ranked).
    source, template_id, score
        ``"cryspnet"`` for structures built from the network predictions, ``"template"`` for a substituted known
        structure (``template_id`` names it in the template store, see :mod:`cryspnet_gen.templates`);
        ``score`` is the log-scale ranking score of a list that mixes both sources (``None`` otherwise).
    notes
        Anything adjusted on the way (clamped cell, fallback volume, a second Z, a cell stretched apart...).
    min_contact, charge_balanced
        Set by the validity gate (:mod:`cryspnet_gen.validity`): the shortest interatomic distance as a
        fraction of the two atoms' covalent-radius sum (at least 0.7 by default), and whether common oxidation
        states balance the formula (``None``: not applicable, e.g. an intermetallic).
    energy_per_atom, relaxed_by, predicted_rank, relaxed_space_group
        Set by ``relax=``: energy per atom (eV/atom) of the relaxed ``structure``, what relaxed it, the rank the
        model gave before re-ranking by energy, and the space group after relaxation (symprec 0.1). ``None``
        for unrelaxed candidates.
    """

    formula: str
    rank: int
    bravais: str
    space_group: int
    space_group_symbol: str
    probability: float
    bravais_probability: float
    space_group_probability: float
    structure: Structure
    z: int
    formula_unit: str
    lattice_parameters: dict[str, float | None] = field(default_factory=dict)
    lattice_parameters_std: dict[str, float | None] = field(default_factory=dict)
    predicted_cell: list[float] | None = None
    predicted_cell_std: list[float] | None = None
    cell: list[float] = field(default_factory=list)
    volume_per_atom: float | None = None
    volume_per_atom_std: float | None = None
    model: str = "master"
    bundle: str = ""
    bundle_version: str = ""
    seed: int = 0
    attempt: int = 0
    pair_rank: int = 0
    source: str = "cryspnet"
    template_id: str | None = None
    score: float | None = None
    notes: list[str] = field(default_factory=list)
    min_contact: float | None = None
    charge_balanced: bool | None = None
    energy_per_atom: float | None = None
    relaxed_by: str | None = None
    predicted_rank: int | None = None
    relaxed_space_group: int | None = None

    def __post_init__(self) -> None:
        self.rank = int(self.rank)
        self.space_group = int(self.space_group)
        self.z = int(self.z)
        self.seed = int(self.seed)
        self.attempt = int(self.attempt)
        self.pair_rank = int(self.pair_rank)

    @property
    def nsites(self) -> int:
        """Number of atoms in ``structure``."""
        return len(self.structure)

    def __repr__(self) -> str:
        return (
            f"Candidate({self.formula!r}, rank={self.rank}, {self.bravais} {self.space_group_symbol} "
            f"({self.space_group}), p={self.probability:.3g}, z={self.z}, {self.nsites} sites, seed={self.seed})"
        )


def prediction_fields(prediction: Prediction | None, bravais: str | None = None) -> dict[str, Any]:
    """The :class:`Candidate` fields that a source takes from the formula's prediction: the lattice parameters
    and predicted cell of ``bravais`` (when predicted), the volume per atom, the model and the bundle."""
    lat = None
    if prediction is not None and prediction.error is None and bravais is not None:
        lat = next((la for la in prediction.lattices if la.bravais == bravais), None)
    out: dict[str, Any] = {
        "lattice_parameters": dict(lat.parameters) if lat is not None else {},
        "lattice_parameters_std": dict(lat.parameters_std) if lat is not None else {},
        "predicted_cell": list(lat.cell) if lat is not None and lat.cell is not None else None,
        "predicted_cell_std": list(lat.cell_std) if lat is not None and lat.cell_std is not None else None,
    }
    if prediction is not None:
        out.update(
            volume_per_atom=prediction.volume_per_atom,
            volume_per_atom_std=prediction.volume_per_atom_std,
            model=prediction.model,
            bundle=prediction.bundle,
            bundle_version=prediction.bundle_version,
        )
    return out


class CandidateList(list["Candidate"]):
    """The candidates of one formula, most likely first, and the pairs that gave none.

    A plain ``list`` of :class:`Candidate` with three extra attributes: ``formula``, ``skipped`` (a list of
    :class:`SkippedPair`, in the order tried) and ``stop_reason`` (why the walk ended before ``k`` candidates:
    ``None`` when it found them all).
    """

    def __init__(
        self,
        candidates: Iterable[Candidate] = (),
        *,
        formula: str = "",
        skipped: Iterable[SkippedPair] = (),
        stop_reason: str | None = None,
    ) -> None:
        super().__init__(candidates)
        self.formula = formula
        self.skipped: list[SkippedPair] = list(skipped)
        self.stop_reason = stop_reason


class CandidateWarning(UserWarning):
    """Fewer candidates than asked for could be built."""


class GenerationError(RuntimeError):
    """No candidate structure could be built for a formula.

    Attributes
    ----------
    formula
        The input formula.
    skipped
        Every pair tried, with the reason it gave nothing.
    """

    def __init__(self, message: str, *, formula: str = "", skipped: Sequence[SkippedPair] = ()) -> None:
        super().__init__(message)
        self.formula = formula
        self.skipped = list(skipped)


@dataclass
class GenerationResult(MSONable):
    """The outcome of one formula in :func:`generate_many`.

    Attributes
    ----------
    formula
        The input formula.
    candidates
        The candidates built (possibly fewer than ``k``; empty on error).
    skipped
        Pairs that gave no candidate, with reasons.
    error, error_type
        Why nothing was built (``"ValueError"`` for bad input, ``"GenerationError"`` when no pair worked);
        ``None`` on success.
    warning
        Why fewer than ``k`` candidates were built, else ``None``.
    """

    formula: str
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[SkippedPair] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        """Whether at least one candidate was built."""
        return self.error is None


# ---------------------------------------------------------------------------------------------------------
# relaxations
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RelaxedCandidate(MSONable):
    """A candidate structure after relaxation.

    Attributes
    ----------
    candidate
        The candidate as generated (its ``structure`` is the unrelaxed one; its ``rank`` is the predicted rank).
    structure
        Relaxed structure, ``None`` when the relaxation failed.
    energy, energy_per_atom
        Final energy (eV) and energy per atom (eV/atom) from the relaxer.
    relaxed_space_group, relaxed_space_group_symbol
        Space group of the relaxed structure (spglib through pymatgen, ``symprec`` 0.1).
    volume_change
        Relative volume change, ``V_relaxed / V_initial - 1``.
    converged
        Whether the optimizer met its criterion before the step cap (forces, and stress when the cell
        relaxes; for atomate2 outputs, the task state), ``None`` when unknown.
    n_steps
        Ionic steps taken (``None`` when unknown).
    relaxer
        What relaxed it, e.g. ``"CHGNet"`` or ``"MP GGA double relax"``.
    energy_rank
        1 for the lowest energy per atom among the successful relaxations of the same formula, ``None`` on failure.
    seconds
        Wall time of the relaxation (in-process path only).
    error
        Why the relaxation failed, ``None`` on success.
    """

    candidate: Candidate
    structure: Structure | None = None
    energy: float | None = None
    energy_per_atom: float | None = None
    relaxed_space_group: int | None = None
    relaxed_space_group_symbol: str | None = None
    volume_change: float | None = None
    converged: bool | None = None
    n_steps: int | None = None
    relaxer: str = ""
    energy_rank: int | None = None
    seconds: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the relaxation succeeded with a finite energy."""
        return self.error is None and self.energy_per_atom is not None and math.isfinite(self.energy_per_atom)

    @property
    def formula(self) -> str:
        return str(self.candidate.formula)

    def summary(self) -> dict[str, Any]:
        """One flat row (for tables, CSV and JSON output)."""
        cand = self.candidate
        return {
            "formula": cand.formula,
            "energy_rank": self.energy_rank,
            "predicted_rank": cand.rank,
            "bravais": getattr(cand, "bravais", None),
            "space_group": cand.space_group,
            "space_group_symbol": getattr(cand, "space_group_symbol", None),
            "probability": getattr(cand, "probability", None),
            "energy_per_atom": self.energy_per_atom,
            "relaxed_space_group": self.relaxed_space_group,
            "relaxed_space_group_symbol": self.relaxed_space_group_symbol,
            "volume_change": self.volume_change,
            "converged": self.converged,
            "n_steps": self.n_steps,
            "n_atoms": len(self.structure) if self.structure is not None else len(cand.structure),
            "relaxer": self.relaxer,
            "error": self.error,
        }
