"""Template candidates: build a small store from structure files and rank templates with CRYSPNet candidates.

    python examples/template_store.py

The store here is made of three hand-built prototypes (rock salt, CsCl, cubic perovskite) written as CIF files;
for real use build one from a data folder or the Materials Project:

    cryspnet-gen templates build --from ../shared/data --out ~/cryspnet-templates
    export CRYSPNET_GEN_TEMPLATES=~/cryspnet-templates
"""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Lattice, Structure

from cryspnet_gen import generate_candidates
from cryspnet_gen.templates import build_store, load_store, records_from_folder

folder = Path("examples_out/prototypes")
folder.mkdir(parents=True, exist_ok=True)
cubic = Lattice.cubic
Structure.from_spacegroup("Fm-3m", cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
    filename=str(folder / "NaCl.cif")
)
Structure.from_spacegroup("Pm-3m", cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
    filename=str(folder / "CsCl.cif")
)
Structure.from_spacegroup(
    "Pm-3m", cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]
).to(filename=str(folder / "SrTiO3.cif"))

print(build_store(records_from_folder(folder), "examples_out/store", overwrite=True, progress=False))
store = load_store("examples_out/store")
for formula in ("KBr", "BaZrO3"):
    for c in generate_candidates(formula, k=4, templates=store, source="both"):
        origin = f"template {c.template_id}" if c.source == "template" else "CRYSPNet"
        print(f"{formula:>7} #{c.rank} {c.space_group_symbol:<8} score={c.score:7.2f} {origin}")
