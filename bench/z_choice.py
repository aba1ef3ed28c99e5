"""How CRYSPNet candidates should pick Z (formula units per conventional cell): rules scored on validation sets.

Usage (from the repository root)::

    python bench/z_choice.py --set mp20_val --n 500
    python bench/z_choice.py --set mpts52_val --n 500

For each reference structure (validation files only: they choose a setting, they are never reported as test
figures) the true space group and conventional-cell Z are found with spglib (symprec 0.1); the benchmark bundle
predicts the cell of the true Bravais lattice and the volume per atom; each rule then orders the Z values whose
Wyckoff multiplicities fit the composition. A rule scores the share of references whose true Z it tries first,
and within its first two. Rules: ``nearest`` (closest to Z_est = predicted cell volume / predicted volume of one
formula unit, log scale), ``smallest`` (smallest compatible Z), ``smallest, then the nearest`` (of the others),
and ``nearest + lambda log Z`` (a prior for small cells).
"""

from __future__ import annotations

import argparse
import math
import time

LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def order(zs: list[int], z_est: float | None, lam: float | str | None) -> list[int]:
    if lam is None or z_est is None:
        return sorted(zs)
    if lam == "hybrid":  # the smallest, then the nearest of the others
        return [zs[0], *order(zs[1:], z_est, 0.0)]
    assert isinstance(lam, float)
    return sorted(zs, key=lambda z: (abs(math.log(z / z_est)) + lam * math.log(z), z))


def main() -> None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from cryspnet_gen.csp.references import load_test_set, sample_references
    from cryspnet_gen.formula import formula_unit
    from cryspnet_gen.predict import load_predictor
    from cryspnet_gen.sources.cryspnet.cells import cell_shape, compatible, volume_per_atom
    from cryspnet_gen.symmetry import bravais_of, conventional_volume

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="mp20_val", choices=["mp20_val", "mpts52_val"], help="validation set")
    ap.add_argument("--n", type=int, default=500, help="formulas (default 500)")
    ap.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    ap.add_argument("--max-atoms", type=int, default=200, help="largest cell (default 200)")
    ap.add_argument("--model", default="cryspnet-bench", help="bundle (default cryspnet-bench)")
    args = ap.parse_args()
    start = time.perf_counter()
    refs = sample_references(load_test_set(args.set), args.n, args.seed)
    predictor = load_predictor(args.model)
    preds = predictor.predict([r.formula for r in refs], top_bravais=14, top_space_groups=1)
    rules: dict[str, float | str | None] = {
        "smallest": None,
        "smallest, then the nearest": "hybrid",
        **{f"nearest + {lam:g} log Z": lam for lam in LAMBDAS},
    }
    first = dict.fromkeys(rules, 0)
    two = dict.fromkeys(rules, 0)
    n = 0
    true_min = 0
    for ref, pred in zip(refs, preds, strict=True):
        if pred.error is not None:
            continue
        try:
            conv = SpacegroupAnalyzer(ref.structure, symprec=0.1).get_conventional_standard_structure()
            sg = SpacegroupAnalyzer(ref.structure, symprec=0.1).get_space_group_number()
        except Exception:
            continue
        fu = formula_unit(ref.formula, args.max_atoms)
        z_true = len(conv) / fu.n_atoms
        lat = next((la for la in pred.lattices if la.bravais == bravais_of(sg)), None)
        notes: list[str] = []
        shape, predicted = cell_shape(bravais_of(sg), lat.cell if lat is not None else None, notes)
        vpa = volume_per_atom(pred.volume_per_atom, fu, notes)
        z_est = float(conventional_volume(shape)) / (vpa * fu.n_atoms) if predicted else None
        zs = [
            z
            for z in range(1, args.max_atoms // fu.n_atoms + 1)
            if compatible(sg, tuple(c * z for c in fu.counts))
        ]
        if not zs:
            continue
        n += 1
        true_min += z_true == zs[0]
        for name, lam in rules.items():
            ordered = order(zs, z_est, lam)
            first[name] += ordered[0] == z_true
            two[name] += z_true in ordered[:2]
    print(f"{args.set}, {n} references with a readable group ({time.perf_counter() - start:.0f} s)")
    print(f"true Z is the smallest compatible Z: {true_min / n:.1%}")
    print("| rule | true Z tried first | within the first two |")
    print("|---|---:|---:|")
    for name in rules:
        print(f"| {name} | {first[name] / n:.1%} | {two[name] / n:.1%} |")


if __name__ == "__main__":
    main()
