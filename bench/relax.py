"""Seconds per CHGNet relaxation against cell size (8-216 atoms), as cryspnet-gen's quick path runs it.

Structures are rock-salt NaCl supercells (8, 16, 32, 64, 128, 216 atoms), strained by 4% and rattled by 0.1 Å
with a fixed seed, so that every relaxation has real work to do and no trained cryspnet model is needed.
Each is relaxed twice with :func:`cryspnet_gen.workflows.relax.relax_structure` (CHGNet, FIRE, cell relaxed):
for a fixed number of steps, and to convergence (fmax 0.1 eV/Å) with a step cap. Prints a markdown table.

    python bench/relax.py                      # default sizes, 20 fixed steps, cap 300
    python bench/relax.py --sizes 8 64 --fixed-steps 10 --cap 100 --threads 2

Use ``--threads 1`` on a machine whose cores are busy: more torch threads than free cores slow CHGNet down
many times over (an 8-atom cell took 3.7 s per step with 2 threads on 2 busy cores, 0.09 s with 1).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np

SUPERCELLS = {8: (1, 1, 1), 16: (2, 1, 1), 32: (2, 2, 1), 64: (2, 2, 2), 128: (4, 2, 2), 216: (3, 3, 3)}


def nacl(n_atoms: int, seed: int = 0):
    """A strained, rattled rock-salt NaCl supercell of ``n_atoms`` atoms."""
    from pymatgen.core import Lattice, Structure

    if n_atoms not in SUPERCELLS:
        raise ValueError(f"sizes are {sorted(SUPERCELLS)}, got {n_atoms}")
    s = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64 * 1.04), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    s.make_supercell(SUPERCELLS[n_atoms])
    rng = np.random.default_rng(seed)
    disp = rng.normal(scale=0.1, size=(len(s), 3))
    for i, d in enumerate(disp):
        s.translate_sites([i], d, frac_coords=False, to_unit_cell=True)
    return s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SUPERCELLS))
    parser.add_argument("--fixed-steps", type=int, default=20, help="steps of the fixed-length relaxation")
    parser.add_argument("--cap", type=int, default=300, help="step cap of the relaxation to convergence")
    parser.add_argument("--fmax", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # numpy/torch chatter from CHGNet would break up the table

    import torch

    from cryspnet_gen.workflows.relax import load_chgnet_optimizer, relax_structure

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    optimizer = load_chgnet_optimizer()
    load_s = time.perf_counter() - t0
    # One tiny relaxation first, so that lazy initialisation is not charged to the first size.
    relax_structure(nacl(8), optimizer=optimizer, steps=1, fmax=args.fmax)

    print(
        f"CHGNet relaxation time (FIRE, cell relaxed) on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model load {load_s:.1f} s\n"
    )
    print(
        f"| atoms | {args.fixed_steps} steps: s | s/step | to fmax {args.fmax} (cap {args.cap}): s "
        "| steps | converged | E (eV/atom) |"
    )
    print("|---:|---:|---:|---:|---:|:---:|---:|")
    for n in args.sizes:
        s = nacl(n)
        fixed = relax_structure(s, optimizer=optimizer, steps=args.fixed_steps, fmax=1e-6)
        conv = relax_structure(s, optimizer=optimizer, steps=args.cap, fmax=args.fmax)
        per_step = fixed.seconds / max(fixed.n_steps, 1)
        print(
            f"| {n} | {fixed.seconds:.1f} | {per_step:.3f} | {conv.seconds:.1f} | {conv.n_steps} | "
            f"{'yes' if conv.converged else 'no'} | {conv.energy_per_atom:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
