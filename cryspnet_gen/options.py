"""Options of candidate generation: one validated dataclass that every caller passes on.

:class:`GenerateOptions` holds what :func:`cryspnet_gen.generate.generate_candidates`,
:func:`~cryspnet_gen.generate.generate_many`, the candidate sources, the CSP benchmark, the CLI and the workflow
Makers share, so none of them repeats the keyword list. Values are checked once, when the options are made::

    opts = GenerateOptions(k=5, seed=1, source="templates")
    opts = opts.replace(timeout=None)
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from cryspnet_gen.formula import BravaisModel

__all__ = [
    "DEFAULT_MAX_ATOMS",
    "DEFAULT_MIN_DISTANCE_FACTOR",
    "DEFAULT_PRERELAX_STEPS",
    "DEFAULT_PRERELAX_TIMEOUT",
    "DEFAULT_RELAX_STEPS",
    "DEFAULT_THREADS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_PER_GROUP",
    "BravaisModel",
    "GenerateOptions",
    "Isolation",
    "Relax",
    "Source",
    "TemplateRanking",
    "WyckoffRule",
    "ZRule",
    "can_use_alarm",
]

#: Largest conventional cell built (atoms); Li7La3Zr2O12 in Ia-3d needs 192.
DEFAULT_MAX_ATOMS = 200
#: Seconds for the whole of one ``generate_candidates`` call.
DEFAULT_TIMEOUT = 60.0
#: Seconds for all attempts at one (lattice, space group) pair.
DEFAULT_TIMEOUT_PER_GROUP = 10.0
#: Smallest allowed distance as a fraction of the covalent-radius sum of the two atoms (the validity gate of
#: every candidate, :mod:`cryspnet_gen.validity`; 1 % of Materials Project structures fall below 0.7).
DEFAULT_MIN_DISTANCE_FACTOR = 0.7
#: Most optimizer steps of an in-process relaxation (``relax="chgnet"``).
DEFAULT_RELAX_STEPS = 300
#: Most optimizer steps of one pre-relaxation (``prerelax="chgnet"``: symmetry kept, a cheap clean-up).
DEFAULT_PRERELAX_STEPS = 50
#: Seconds for all pre-relaxations of one formula's CRYSPNet pool.
DEFAULT_PRERELAX_TIMEOUT = 60.0
#: torch (and BLAS) threads of an in-process relaxation. Measured (docs/benchmarks.md, "Threads"): LiFePO4 k=3
#: relaxed in 44 s with 1 thread and 190 s with 2 on the shared 2-core machine; more threads than free cores
#: slow CHGNet down many times over.
DEFAULT_THREADS = 1

Isolation = Literal["auto", "signal", "process"]
Source = Literal["cryspnet", "templates", "both"]
ZRule = Literal["smallest", "prior"]
WyckoffRule = Literal["auto", "random", "prior"]
TemplateRanking = Literal["auto", "learned", "score"]
Relax = Literal["chgnet"]


def can_use_alarm() -> bool:
    """Whether a SIGALRM interval timer can stop work in this thread (POSIX, main thread)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _positive_int(name: str, value: Any) -> int:
    import numpy as np

    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class GenerateOptions:
    """How candidates are made for a formula (validated on creation; ``ValueError`` names a bad value).

    Attributes
    ----------
    k
        Number of candidates wanted.
    seed
        Base seed: the same seed, predictor and options give the same structures.
    model
        Bravais model: ``"master"``, ``"metal"`` or ``"oxide"``.
    per_group
        Structures built per (lattice, space group) pair before moving to the next pair.
    max_atoms
        Largest conventional cell built.
    space_groups
        Try only these groups (ranked by the model's probability); ``None`` walks the model's ranking.
    bravais
        Try only these Bravais lattices.
    timeout, timeout_per_group
        Seconds for the whole call and for one pair (all its attempts); ``None`` for no limit.
    min_distance_factor
        Smallest allowed interatomic distance as a fraction of the covalent-radius sum (and, between anions, of
        the ionic-radius sum): every candidate of every source is checked; one a little short is stretched
        apart, one far short is re-sampled or dropped (:mod:`cryspnet_gen.validity`).
    z_rule
        Which formula units per cell (Z) CRYSPNet candidates try first, of those the group's Wyckoff positions
        allow: ``"smallest"`` (the default) or ``"prior"`` (the bundle's Z prior: what known crystals of the group
        and formula type have most often; :mod:`cryspnet_gen.zprior`). The prior finds the true Z more often
        (86.9% vs 74.8% of validation formulas in their true group) but, with random Wyckoff placement, did not
        build more true structures (MP-20 validation, 300 formulas, k=1/20: 32.3/45.3% vs 32.3/48.0%;
        docs/benchmarks.md), so it is opt-in.
    wyckoff, wyckoff_prior
        Which Wyckoff orbits CRYSPNet candidates put the atoms on: ``"prior"``: the assignments known crystals of
        the group and formula type use, most frequent first (:mod:`cryspnet_gen.wyckoffprior`), then random
        orbits; ``"random"``: pyxtal's random choice (the paper's approach); ``"auto"`` (the default): the prior
        when the bundle has one. ``wyckoff_prior`` is that table, filled from the bundle by
        :func:`cryspnet_gen.generate.generate_candidates` when left ``None``.
    isolation
        How a pyxtal attempt is stopped at its time limit: ``"signal"`` (SIGALRM, main thread only),
        ``"process"`` (a child process that is killed) or ``"auto"`` (signal where possible).
    relax, relax_steps
        ``"chgnet"``: relax the candidates in this process (at most ``relax_steps`` steps each) and re-rank
        them by energy per atom (:func:`cryspnet_gen.relax.relax_and_rerank`).
    prerelax, prerelax_pool, prerelax_steps, prerelax_timeout
        ``"chgnet"``: build ``prerelax_pool`` CRYSPNet structures (default 4 x ``k``), relax each with CHGNet for at
        most ``prerelax_steps`` steps with its space group kept (ASE ``FixSymmetry``), all of them within
        ``prerelax_timeout`` seconds per formula, and keep the ``k`` of lowest energy per atom
        (:func:`cryspnet_gen.relax.prerelax_pool`). Off by default: it costs seconds to minutes per formula
        (docs/benchmarks.md, "Pre-relaxation"). Template candidates are not pre-relaxed.
    threads
        torch threads for the relaxation (default :data:`DEFAULT_THREADS` = 1); ``None`` leaves torch's own
        setting (one per core).
    source
        ``"cryspnet"`` (structures built in the predicted groups), ``"templates"`` (known structures of the same
        anonymous formula, substituted and scaled) or ``"both"`` (one list ranked by score). ``None``:
        ``"both"`` when a template store is given or set in ``$CRYSPNET_GEN_TEMPLATES``, else ``"cryspnet"``.
    templates
        A template store or prototype library (:class:`~cryspnet_gen.sources.templates.TemplateStore` or its
        folder); ``None`` reads ``$CRYSPNET_GEN_TEMPLATES``, else uses the prototype library shipped in the
        package.
    known
        When the formula is itself a compound of the store (a known compound), its own structures come first,
        marked ``source="known"``; ``False`` leaves them out (for benchmarks).
    template_ranking, template_ranker
        How template options are ranked: ``"learned"``: by the bundle's learned ranker (the calibrated
        probability that the substituted structure is the true one; :mod:`cryspnet_gen.sources.templates.ranker`),
        CRYSPNet candidates placed on the same scale; ``"score"``: by the hand-weighted score
        (:class:`~cryspnet_gen.sources.templates.TemplateScoring`); ``"auto"`` (the default): the learned ranker
        when the bundle has one. ``template_ranker`` is that model, filled from the bundle by
        :func:`cryspnet_gen.generate.generate_candidates` when left ``None``.
    """

    k: int = 3
    seed: int = 0
    model: BravaisModel = "master"
    per_group: int = 1
    max_atoms: int = DEFAULT_MAX_ATOMS
    space_groups: tuple[int, ...] | None = None
    bravais: tuple[str, ...] | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    timeout_per_group: float | None = DEFAULT_TIMEOUT_PER_GROUP
    min_distance_factor: float = DEFAULT_MIN_DISTANCE_FACTOR
    z_rule: ZRule = "smallest"
    wyckoff: WyckoffRule = "auto"
    wyckoff_prior: Any = dataclasses.field(default=None, compare=False, repr=False)
    isolation: Isolation = "auto"
    relax: Relax | None = None
    relax_steps: int = DEFAULT_RELAX_STEPS
    prerelax: Relax | None = None
    prerelax_pool: int | None = None
    prerelax_steps: int = DEFAULT_PRERELAX_STEPS
    prerelax_timeout: float | None = DEFAULT_PRERELAX_TIMEOUT
    threads: int | None = DEFAULT_THREADS
    source: Source | None = None
    templates: Any = None
    known: bool = True
    template_ranking: TemplateRanking = "auto"
    template_ranker: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        from cryspnet_gen.symmetry import BRAVAIS_LATTICES, bravais_of

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in ("k", "per_group", "max_atoms", "relax_steps", "prerelax_steps"):
            put(name, _positive_int(name, getattr(self, name)))
        for name in ("threads", "prerelax_pool"):
            if getattr(self, name) is not None:
                put(name, _positive_int(name, getattr(self, name)))
        seed = self.seed
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        put("seed", int(seed))
        for name in ("timeout", "timeout_per_group", "prerelax_timeout"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            ):
                raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
            put(name, None if value is None else float(value))
        if not 0 < float(self.min_distance_factor) <= 1.5:
            raise ValueError(f"min_distance_factor must be in (0, 1.5], got {self.min_distance_factor!r}")
        put("min_distance_factor", float(self.min_distance_factor))
        for name, literal in (
            ("isolation", Isolation),
            ("model", BravaisModel),
            ("z_rule", ZRule),
            ("wyckoff", WyckoffRule),
            ("template_ranking", TemplateRanking),
        ):
            value = getattr(self, name)
            if value not in get_args(literal):
                raise ValueError(f"Unknown {name}={value!r}; choose from {get_args(literal)}")
        if self.isolation == "signal" and not can_use_alarm():
            raise ValueError("isolation='signal' needs SIGALRM and the main thread; use 'auto' or 'process'")
        for name in ("relax", "prerelax"):
            value = getattr(self, name)
            if value is not None and value not in get_args(Relax):
                raise ValueError(f"Unknown {name}={value!r}; choose from {get_args(Relax)}")
        if self.source is not None and self.source not in get_args(Source):
            raise ValueError(f"Unknown source={self.source!r}; choose from {get_args(Source)}")
        if self.space_groups is not None:
            groups = []
            for sg in self._sequence("space_groups", self.space_groups):
                bravais_of(sg)  # ValueError for anything but an integer in 1..230
                groups.append(int(sg))
            if not groups:
                raise ValueError("space_groups is empty; give at least one space-group number or None")
            put("space_groups", tuple(dict.fromkeys(groups)))
        if self.bravais is not None:
            lattices = list(self._sequence("bravais", self.bravais))
            bad = [b for b in lattices if b not in BRAVAIS_LATTICES]
            if bad or not lattices:
                raise ValueError(f"Unknown bravais {bad or lattices}; choose from {BRAVAIS_LATTICES}")
            if self.space_groups is not None and not any(
                bravais_of(sg) in lattices for sg in self.space_groups
            ):
                raise ValueError(
                    f"none of space_groups={list(self.space_groups)} belongs to bravais={lattices}"
                )
            put("bravais", tuple(lattices))
        if self.wyckoff_prior is not None and not hasattr(self.wyckoff_prior, "assignments"):
            raise ValueError(
                f"wyckoff_prior must be a WyckoffPrior or None, got {type(self.wyckoff_prior).__name__}"
            )
        if self.template_ranker is not None and not hasattr(self.template_ranker, "match_probability"):
            raise ValueError(
                f"template_ranker must be a TemplateRankerModel or None, got {type(self.template_ranker).__name__}"
            )
        if not isinstance(self.known, (bool, np.bool_)):
            raise ValueError(f"known must be True or False, got {self.known!r}")
        if isinstance(self.templates, os.PathLike):
            put("templates", os.fspath(self.templates))

    @staticmethod
    def _sequence(name: str, value: Any) -> Sequence[Any]:
        import numpy as np

        if isinstance(value, (str, bytes)) and name == "bravais":
            return [value]
        if isinstance(value, (int, np.integer)) and name == "space_groups":
            return [value]
        try:
            return list(value)
        except TypeError:
            raise ValueError(f"{name} must be a list, got {value!r}") from None

    @property
    def pool_size(self) -> int:
        """How many CRYSPNet structures are built: ``k``, or the pre-relaxation pool (default 4 x ``k``)."""
        if self.prerelax is None:
            return self.k
        return max(self.k, self.prerelax_pool if self.prerelax_pool is not None else 4 * self.k)

    def replace(self, **changes: Any) -> GenerateOptions:
        """A copy with ``changes`` applied (validated again); unknown names raise ``TypeError``."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every option."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_keywords(cls, base: GenerateOptions | None = None, **keywords: Any) -> GenerateOptions:
        """``base`` (default options when ``None``) with the given keywords applied; ``None`` values of ``k``
        are ignored. Unknown keywords raise ``TypeError`` naming them and the valid ones."""
        unknown = sorted(set(keywords) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; valid options: {list(cls.field_names())}")
        if keywords.get("k", 0) is None:
            keywords.pop("k")
        base = base if base is not None else cls()
        if not isinstance(base, GenerateOptions):
            raise TypeError(f"options must be a GenerateOptions, got {type(base).__name__}")
        return base.replace(**keywords) if keywords else base
