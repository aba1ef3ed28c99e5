"""Candidate structures of a few formulas with the shipped model, written as POSCAR + CIF.

python examples/quickstart.py            # writes examples_out/quickstart/
"""

from __future__ import annotations

from cryspnet_gen import generate_candidates, load_predictor, write_candidates

predictor = load_predictor()  # the shipped default bundle, loaded once
for formula in ("Li7La3Zr2O12", "LiFePO4", "NaCl"):
    candidates = generate_candidates(formula, k=3, predictor=predictor, seed=0)
    for c in candidates:
        print(f"{formula:>14} #{c.rank} {c.bravais} {c.space_group_symbol:<10} p={c.probability:.3f} Z={c.z}")
    write_candidates(candidates, "examples_out/quickstart", overwrite=True)
