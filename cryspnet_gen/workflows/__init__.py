"""FireWorks/jobflow workflows: formula -> candidates -> relaxations -> ranking (optional extra ``[workflows]``).

Public API (imported lazily: nothing heavy happens when this package is imported)::

    from cryspnet_gen.workflows import CandidateRelaxMaker, chgnet_relax_maker, vasp_relax_maker
    flow = CandidateRelaxMaker(k=3, relax_maker=chgnet_relax_maker(steps=200)).make("Li7La3Zr2O12")

    from cryspnet_gen.workflows import open_store, submit, run_local, workflow_status, find_workflows
    with open_store() as store:                 # the embedded store (no server), locked while open
        submit(["NaCl", "LiMnO2"], maker=CandidateRelaxMaker(k=2), handle=store)
        run_local(store)                        # one torch thread per job; Ctrl-C leaves the job READY

    from cryspnet_gen.workflows import StoreCorruptError, restore_store
    restore_store()                             # put back the last good copy of damaged store files

    from cryspnet_gen.workflows import relax_candidates   # in-process CHGNet, no FireWorks
    ranked = relax_candidates(cands, steps=200)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AtomicJSONStore",
    "CandidateRelaxMaker",
    "RelaxedCandidate",
    "StoreCorruptError",
    "StoreError",
    "StoreHandle",
    "StoreLockedError",
    "WorkflowResults",
    "chgnet_relax_maker",
    "find_workflows",
    "format_results",
    "load_results",
    "lost_runs",
    "open_store",
    "relax_candidates",
    "relax_maker_for",
    "relaxation_flow",
    "rerun_fizzled",
    "restore_store",
    "run_local",
    "store_notes",
    "submit",
    "vasp_relax_maker",
    "workflow_status",
    "write_results",
    "write_vasp_inputs",
]

_LAZY = {
    "AtomicJSONStore": "cryspnet_gen.workflows.storefiles",
    "StoreCorruptError": "cryspnet_gen.workflows.errors",
    "StoreError": "cryspnet_gen.workflows.errors",
    "StoreHandle": "cryspnet_gen.workflows.store",
    "StoreLockedError": "cryspnet_gen.workflows.errors",
    "open_store": "cryspnet_gen.workflows.store",
    "restore_store": "cryspnet_gen.workflows.store",
    "CandidateRelaxMaker": "cryspnet_gen.workflows.makers",
    "chgnet_relax_maker": "cryspnet_gen.workflows.makers",
    "relax_maker_for": "cryspnet_gen.workflows.makers",
    "relaxation_flow": "cryspnet_gen.workflows.makers",
    "vasp_relax_maker": "cryspnet_gen.workflows.makers",
    "RelaxedCandidate": "cryspnet_gen.records",
    "relax_candidates": "cryspnet_gen.relax",
    "find_workflows": "cryspnet_gen.workflows.manage",
    "lost_runs": "cryspnet_gen.workflows.manage",
    "store_notes": "cryspnet_gen.workflows.manage",
    "rerun_fizzled": "cryspnet_gen.workflows.manage",
    "run_local": "cryspnet_gen.workflows.manage",
    "submit": "cryspnet_gen.workflows.manage",
    "workflow_status": "cryspnet_gen.workflows.manage",
    "WorkflowResults": "cryspnet_gen.workflows.results",
    "format_results": "cryspnet_gen.workflows.results",
    "load_results": "cryspnet_gen.workflows.results",
    "write_results": "cryspnet_gen.workflows.results",
    "write_vasp_inputs": "cryspnet_gen.workflows.vasp",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cryspnet_gen.workflows' has no attribute {name!r}")
