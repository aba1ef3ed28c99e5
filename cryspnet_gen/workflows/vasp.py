"""VASP inputs for candidates, as atomate2's VASP relaxation would write them.

Useful to check what a ``--relax vasp`` workflow will run before sending it to a cluster, or to hand the inputs
to another tool. With ``potcar_spec=True`` only the POTCAR symbols are written (``POTCAR.spec``), so no
pseudopotentials are needed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobflow import Maker
    from pymatgen.core import Structure

    from cryspnet_gen.records import Candidate

__all__ = ["VaspSetupError", "input_set_generator_of", "write_vasp_inputs", "write_vasp_inputs_for"]

logger = logging.getLogger(__name__)


class VaspSetupError(ValueError):
    """VASP inputs cannot be written on this machine (no POTCAR folder configured)."""


def input_set_generator_of(maker: Maker) -> Any:
    """The ``VaspInputGenerator`` of a VASP Maker's first calculation (a double relax's first relax)."""
    for attr in ("relax_maker1", "relax_maker2"):
        sub = getattr(maker, attr, None)
        if sub is not None:
            return input_set_generator_of(sub)
    gen = getattr(maker, "input_set_generator", None)
    if gen is None:
        raise TypeError(f"{type(maker).__name__} is not an atomate2 VASP Maker (no input_set_generator)")
    return gen


def write_vasp_inputs(
    structure: Structure | Candidate,
    directory: str | os.PathLike[str],
    *,
    maker: Maker | None = None,
    potcar_spec: bool = False,
) -> Path:
    """Write INCAR, KPOINTS, POSCAR and POTCAR (or POTCAR.spec) of the first VASP relaxation.

    Parameters
    ----------
    structure
        A structure, or a candidate (its ``structure`` is used).
    directory
        Folder to write into (created).
    maker
        atomate2 VASP Maker (default: :func:`~cryspnet_gen.workflows.makers.vasp_relax_maker`).
    potcar_spec
        Write ``POTCAR.spec`` (the POTCAR symbols) instead of POTCAR; needs no pseudopotentials.

    Raises
    ------
    VaspSetupError
        When POTCARs are needed but pymatgen does not know where they are.
    """
    from atomate2.vasp.files import write_vasp_input_set
    from pymatgen.io.vasp.inputs import PmgVaspPspDirError

    from cryspnet_gen.workflows.makers import vasp_relax_maker

    struct: Structure = structure.structure if hasattr(structure, "structure") else structure
    if maker is None:
        maker = vasp_relax_maker()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_vasp_input_set(struct, input_set_generator_of(maker), out, potcar_spec=potcar_spec)
    except PmgVaspPspDirError as exc:
        raise VaspSetupError(
            "writing VASP inputs needs the VASP pseudopotentials (POTCARs): set PMG_VASP_PSP_DIR to their "
            "folder (`export PMG_VASP_PSP_DIR=/path/to/potcars`, or `pmg config --add PMG_VASP_PSP_DIR "
            "/path/to/potcars` for ~/.config/.pmgrc.yaml), or write POTCAR.spec instead with potcar_spec=True"
        ) from exc
    return out


def write_vasp_inputs_for(
    candidates: Sequence[Candidate],
    out_dir: str | os.PathLike[str],
    *,
    maker: Maker | None = None,
    potcar_spec: bool = False,
) -> list[Path]:
    """:func:`write_vasp_inputs` for each candidate, into ``out_dir/<formula>-cand<rank>-sg<group>/``."""
    out = Path(out_dir)
    paths = []
    for cand in candidates:
        folder = out / f"{cand.formula}-cand{cand.rank}-sg{cand.space_group}"
        paths.append(write_vasp_inputs(cand, folder, maker=maker, potcar_spec=potcar_spec))
    return paths
