"""The CRYSPNet candidate source: predictions -> candidate crystal structures built by pyxtal.

The public entry is :func:`cryspnet_gen.generate.generate_candidates`; this source is asked by it::

    cands = generate_candidates("Li7La3Zr2O12", k=3, seed=0)
    cands[0].structure            # pymatgen Structure, conventional cell, in the predicted space group

How a candidate is made
-----------------------
1. **Ranking.** The predictor is asked for every Bravais lattice and every modelled space group
   (``top_bravais=14, top_space_groups=230``); the (lattice, group) pairs are ranked by
   P(lattice) x P(group | lattice) and walked from the top until ``k`` candidates exist. ``space_groups=``
   forces the pairs tried (ranked among themselves by the same probability, 0 for a group the model does not
   know) and ``bravais=`` restricts the lattices.
2. **Formula unit.** The formula is reduced to its smallest integer formula unit. A non-integer formula
   (``La1.8Sr0.2CuO4``) uses the smallest integer multiple of it (``La9SrCu5O20``); an amount counts as an
   integer when it is within :data:`INTEGER_RTOL` (1e-6, relative) of one. Nothing is rounded silently: a
   formula without such a multiple of at most ``max_atoms`` atoms raises ``ValueError``.
3. **Cell and Z.** The shape is the predicted conventional cell of the lattice (``RankedGroup.cell``: pyxtal's
   setting, R groups in hexagonal axes). Z is the smallest *compatible* value, where compatible means the
   group's Wyckoff multiplicities can hold ``Z x counts`` atoms (the same rule as pyxtal's
   ``Group.check_compatible``, solved exactly here in microseconds: pyxtal's own check enumerates products and can
   run for minutes on large counts) and ``Z x n_fu <= max_atoms`` (default :data:`DEFAULT_MAX_ATOMS` = 200:
   enough for garnet Li7La3Zr2O12 in Ia-3d, Z = 8, 192 atoms): SrTiO3 in Pm-3m gets Z = 1, LiFePO4 in Pnma
   Z = 4, as their known structures. (The smallest Z is the true one for 89 % of MP-20 and 72 % of MPTS-52
   validation structures; the Z nearest the predicted cell's volume for 73 % / 70 %: ``bench/z_choice.py``.)
   The cell is then scaled, keeping its shape, to ``Z x n_fu x v_atom`` (the predicted volume per atom); these
   are the cell parameters ``cryspnet-gen predict`` prints. If every attempt at that Z fails, the next
   compatible Z is tried (recorded in the notes).
4. **Robustness to poor predictions.** A missing or unusable predicted cell (NaN, non-positive lengths, an hR
   alpha that does not close) is replaced by a generic cell of the lattice system; lengths whose ratio exceeds :data:`MAX_LENGTH_RATIO` are pulled together (volume kept);
   a monoclinic beta < 90 is folded to 180 - beta and capped at :data:`MAX_MONOCLINIC_BETA`; triclinic angles
   are clamped to [60, 120] degrees. The predicted volume per atom is clamped so that the atoms' covalent
   spheres fill between 5 % and 100 % of it (98 % of Materials Project structures lie inside); a missing or
   non-positive prediction is replaced by the covalent-sphere volume at a packing fraction of 0.5. Every such
   change is recorded in ``Candidate.notes``.
5. **Sanity before pyxtal.** Spheres of ``min_distance_factor`` x covalent radius must fit in the cell
   (packing <= 0.74) and the shortest lattice translation (centring included) must be at least
   ``min_distance_factor`` x twice the smallest radius: a cramped cell can keep pyxtal busy for minutes or come
   back with 0.8 Å contacts.
6. **Build.** ``pyxtal().from_random(3, group, species, num_ions, lattice=Lattice.from_para(..., ltype=...),
   random_state=rng, t_factor=1)``: ``num_ions`` counts the conventional cell; pyxtal keeps its own distance
   tolerance (0.5 x the covalent-radius sum; stricter values slow pyxtal down many times over).
7. **Checks.** The reduced formula equals the formula unit's; no two atoms (periodic images included) are closer
   than ``min_distance_factor`` (default :data:`DEFAULT_MIN_DISTANCE_FACTOR` = 0.7) x the sum of their covalent
   radii, nor two anions closer than 0.7 x their ionic radii (:mod:`cryspnet_gen.validity`): atoms too close
   are pushed apart inside the cell with the symmetry kept, or failing that the cell is stretched (at most
   1.15 x in length), and the change is noted; a structure that cannot be repaired is rejected. pymatgen's
   ``SpacegroupAnalyzer(symprec=`` :data:`SYMPREC` ``= 0.1)`` finds the requested group. A failed attempt is
   retried with the next attempt number (a new random placement): 3 attempts per Z
   (plus one per extra structure wanted with ``per_group``), at most 2 values of Z per pair. With
   ``per_group > 1``, a structure that pymatgen's ``StructureMatcher`` matches to one already built is dropped.

Time limits
-----------
Each pyxtal call runs under a hard limit: half the time left of ``timeout_per_group`` (default 10 s for all
attempts at one pair; the last planned attempt gets all that is left) and at most what is left of ``timeout``
(default 60 s for the whole call). An attempt that hits its limit counts as a failed attempt; a pair whose
time is spent is skipped with a "time limit" reason, and the walk stops when the call's time is spent. On the
main thread of a POSIX process the limit is a ``SIGALRM`` interval timer whose handler raises a private
``BaseException`` subclass inside pyxtal's Python loops (re-raised every second in case pyxtal swallows it; a
previous handler and timer are restored afterwards). Elsewhere (other threads, no ``SIGALRM``) each attempt
runs in a child process (``fork`` where available) that is killed at the limit; ``isolation="process"``
forces that.

Determinism
-----------
Attempt ``n`` of space group ``sg`` draws from ``numpy.random.default_rng(SeedSequence([seed, sg, n]))``; that
Generator is given to both ``Lattice.from_para`` and ``from_random`` and no global random state is used. The
same seed, predictor and options rebuild the same candidates exactly (unless a time limit cut an attempt
short: time is the only input that can differ between runs; ``Candidate.attempt`` records which attempt
made each structure).
"""

from cryspnet_gen.sources.cryspnet.cells import CellPlan, plan_cells
from cryspnet_gen.sources.cryspnet.walk import SOURCE, cryspnet_candidates, failure_message, ranked_pairs

__all__ = ["SOURCE", "CellPlan", "cryspnet_candidates", "failure_message", "plan_cells", "ranked_pairs"]
