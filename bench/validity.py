"""How close atoms come in real structures: the figures behind cryspnet_gen.validity's thresholds.

Usage (from the repository root)::

    python bench/validity.py --n 3000           # a seeded sample of Materials Project structures (no test formula)
    python bench/validity.py --candidates runs/csp/mp20-k20-seed0   # saved CSP-benchmark candidates instead

For each structure: the shortest contact as a fraction of the two atoms' covalent-radius sum, and (where
oxidation states can be guessed) the shortest anion-anion contact as a fraction of their ionic-radius sum.
Prints quantiles and the share of structures below each threshold.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def mp_sample(n: int, seed: int, data_dir: str | None) -> list:
    from pymatgen.core import Lattice, Structure

    from cryspnet_gen.config import resolve_data_dir
    from cryspnet_gen.data import (
        MP_STRUCTURES,
        read_cif_cell,
        read_csv_checked,
        read_test_formulas,
        require_file,
    )
    from cryspnet_gen.formula import reduced_formula_of_numbers

    root = resolve_data_dir(data_dir)
    tests = set().union(*read_test_formulas(root).values())
    rng = np.random.default_rng(seed)
    per_file = -(-n // len(MP_STRUCTURES))
    out = []
    for rel in MP_STRUCTURES:
        frame = read_csv_checked(require_file(root, rel), ["material_id", "cif"])
        rows = rng.permutation(len(frame))
        taken = 0
        for i in rows:
            if taken >= per_file:
                break
            try:
                lat, frac, numbers = read_cif_cell(frame["cif"].iloc[i])
            except ValueError:
                continue
            if reduced_formula_of_numbers(numbers)[0] in tests:
                continue
            out.append(Structure(Lattice(lat), [int(z) for z in numbers], frac))
            taken += 1
    return out[:n]


def saved_candidates(folder: str) -> list:
    from cryspnet_gen.records import Candidate

    out = []
    for path in sorted(Path(folder).glob("candidates*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for c in row.get("candidates", [row]):
                out.append(Candidate.from_dict(c).structure)
    return out


def main() -> None:
    from cryspnet_gen.validity import MIN_ANION_FACTOR, MIN_CONTACT_FACTOR, contact_problem, contacts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="structures sampled (default 3000)")
    ap.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    ap.add_argument("--data-dir", default=None, help="data folder (default ../shared/data)")
    ap.add_argument("--candidates", default=None, help="a CSP-benchmark output folder instead of MP")
    args = ap.parse_args()
    start = time.perf_counter()
    structures = (
        saved_candidates(args.candidates) if args.candidates else mp_sample(args.n, args.seed, args.data_dir)
    )
    covalent, ionic = [], []
    failing = 0
    for s in structures:
        cov, ion = contacts(s)
        if cov is not None:
            covalent.append(cov.ratio)
        if ion is not None:
            ionic.append(ion.ratio)
        failing += contact_problem(s) is not None
    for name, values, limit in (
        ("covalent", np.array(covalent), MIN_CONTACT_FACTOR),
        ("anion-anion ionic", np.array(ionic), MIN_ANION_FACTOR),
    ):
        if not len(values):
            continue
        qs = np.quantile(values, [0.0, 0.001, 0.01, 0.05, 0.5])
        print(
            f"{name}: {len(values)} structures; min {qs[0]:.3f}, 0.1% {qs[1]:.3f}, 1% {qs[2]:.3f}, 5% {qs[3]:.3f}, "
            f"median {qs[4]:.3f}"
        )
        for t in sorted({0.5, 0.6, 0.64, limit, 0.8}):
            print(f"  below {t:.2f}: {np.mean(values < t):.2%} ({int(np.sum(values < t))})")
    print(f"failing the validity rules (what the gate repairs or drops): {failing} of {len(structures)}")
    print(f"{len(structures)} structures in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
