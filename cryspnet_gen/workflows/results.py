"""Read the results of candidate-relaxation workflows: ranking tables, CIF files, failures.

The ranking comes from the collect job's output when it has run; before that (or when it cannot run), from the
relaxation jobs that finished, so partial results are shown as soon as there are any. FIZZLED Fireworks are
reported with the last line of their traceback (rerun them with ``cryspnet-gen run --rerun-fizzled``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryspnet_gen.records import RelaxedCandidate
from cryspnet_gen.relax import rank_by_energy

if TYPE_CHECKING:
    from cryspnet_gen.workflows.store import StoreHandle

__all__ = ["WorkflowResults", "format_results", "load_results", "write_results"]

logger = logging.getLogger(__name__)


@dataclass
class WorkflowResults:
    """Results of one submitted workflow.

    Attributes
    ----------
    metadata
        The workflow's ``metadata["cryspnet"]`` (formula, k, seed, model, relax, key, ...).
    state
        FireWorks state of the workflow.
    counts
        Number of Fireworks per state.
    relaxed
        Relaxed candidates, lowest energy per atom first; unfinished or failed ones last, with ``error`` set.
    complete
        Whether the collect job has run (otherwise ``relaxed`` is assembled from the finished relaxations).
    failures
        ``(Firework name, candidate rank or None, error)`` of every FIZZLED Firework.
    """

    metadata: dict[str, Any]
    state: str
    counts: dict[str, int]
    relaxed: list[RelaxedCandidate] = field(default_factory=list)
    complete: bool = False
    failures: list[tuple[str, int | None, str]] = field(default_factory=list)

    @property
    def formula(self) -> str:
        return str(self.metadata["formula"])

    @property
    def key(self) -> str:
        return str(self.metadata["key"])

    @property
    def label(self) -> str:
        """``formula-k2-seed0-chgnet``: a name for output folders."""
        m = self.metadata
        return f"{m['formula']}-k{m['k']}-seed{m['seed']}-{m['relax']}"

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per candidate (see :meth:`RelaxedCandidate.summary`)."""
        return [r.summary() for r in self.relaxed]


def _decode(obj: Any) -> Any:
    from monty.json import MontyDecoder

    return MontyDecoder().process_decoded(obj)


def _latest(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(docs, key=lambda d: (d.get("index", 0), str(d.get("completed_at", "")))) if docs else None


def load_results(handle: StoreHandle, wf: dict[str, Any], *, job_store: Any = None) -> WorkflowResults:
    """Results of one workflow document from :func:`~cryspnet_gen.workflows.manage.find_workflows`."""
    from cryspnet_gen.workflows.makers import relaxed_from_output
    from cryspnet_gen.workflows.manage import firework_error

    lpad = handle.launchpad
    meta = dict(wf["metadata"]["cryspnet"])
    key = meta["key"]
    states = {int(i): str(s) for i, s in wf.get("fw_states", {}).items()}
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    res = WorkflowResults(metadata=meta, state=str(wf["state"]), counts=counts)

    # Firework-level view: failures, and the state of each candidate's final relaxation.
    rank_state: dict[int, tuple[str, str | None]] = {}
    for fw in lpad.fireworks.find(
        {"fw_id": {"$in": list(states)}}, {"fw_id": 1, "name": 1, "state": 1, "spec.cryspnet": 1}
    ):
        cmeta = (fw.get("spec") or {}).get("cryspnet") or {}
        error = firework_error(lpad, fw["fw_id"]) if fw["state"] == "FIZZLED" else None
        if error is not None:
            res.failures.append((str(fw["name"]), cmeta.get("rank"), error))
        if cmeta.get("role") == "relax" and cmeta.get("rank") is not None:
            rank = int(cmeta["rank"])
            # A failed step explains the candidate; otherwise its final relaxation's state does.
            known = rank_state.get(rank)
            if known is None or (known[0] != "FIZZLED" and (fw["state"] == "FIZZLED" or cmeta.get("final"))):
                rank_state[rank] = (str(fw["state"]), error)

    store = job_store if job_store is not None else handle.job_store()
    base = {"metadata.cryspnet.key": key}
    collect = _latest(list(store.query({**base, "metadata.cryspnet.role": "collect"}, load=True)))
    if collect is not None and collect.get("output") is not None:
        res.relaxed = list(_decode(collect["output"]))
        res.complete = True
    else:
        gen = _latest(list(store.query({**base, "metadata.cryspnet.role": "generate"}, load=False)))
        candidates = _decode(gen["output"]) if gen is not None and gen.get("output") else []
        finals: dict[int, dict[str, Any]] = {}
        for doc in store.query({**base, "metadata.cryspnet.role": "relax", "metadata.cryspnet.final": True}):
            rank = int(doc["metadata"]["cryspnet"]["rank"])
            if rank not in finals or doc.get("index", 0) >= finals[rank].get("index", 0):
                finals[rank] = doc
        rows = []
        for cand in candidates:
            doc = finals.get(int(cand.rank))
            row = relaxed_from_output(
                cand, doc["output"] if doc else None, relaxer=str(meta.get("relaxer", meta.get("relax", "")))
            )
            rows.append(row)
        res.relaxed = rank_by_energy(rows)
    for row in res.relaxed:
        if row.ok:
            continue
        state, error = rank_state.get(int(row.candidate.rank), (None, None))
        if state == "FIZZLED":
            row.error = f"FIZZLED: {error}"
        elif state is not None and state != "COMPLETED":
            row.error = f"not run yet ({state})"
    return res


def _fmt(x: float | None, spec: str, missing: str = "-") -> str:
    return missing if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def format_results(res: WorkflowResults) -> str:
    """A text table: energy rank, predicted rank, predicted group and probability, energy per atom, energy
    above the best, space group after relaxation (symprec 0.1), volume change, convergence."""
    m = res.metadata
    done = res.counts.get("COMPLETED", 0)
    total = sum(res.counts.values())
    status = "complete" if res.complete else "partial: collect job has not run"
    lines = [
        f"{m['formula']}  k={m['k']} seed={m['seed']} relax={m.get('relaxer', m['relax'])} model={m['model']}",
        f"workflow {res.state}, {done}/{total} Fireworks completed ({status}); key {m['key']}",
    ]
    best = next((r.energy_per_atom for r in res.relaxed if r.ok), None)
    header = (
        f"{'E-rank':>6} {'pred':>4}  {'predicted group':<18} {'P':>6}  {'E (eV/atom)':>11} {'dE (meV/at)':>11}  "
        f"{'relaxed group':<18} {'dV':>7}  {'conv':>4} {'steps':>5} {'atoms':>5}"
    )
    lines += [header, "-" * len(header)]
    for r in res.relaxed:
        c = r.candidate
        pred = f"{getattr(c, 'space_group_symbol', None) or '?'} ({c.space_group})"
        prob = _fmt(getattr(c, "probability", None), ".3f")
        if not r.ok:
            lines.append(f"{'-':>6} {c.rank:>4}  {pred:<18} {prob:>6}  {r.error or 'failed'}")
            continue
        de = None if best is None or r.energy_per_atom is None else 1000 * (r.energy_per_atom - best)
        relaxed_sg = (
            f"{r.relaxed_space_group_symbol} ({r.relaxed_space_group})"
            if r.relaxed_space_group is not None
            else "?"
        )
        dv = _fmt(None if r.volume_change is None else 100 * r.volume_change, "+.1f") + "%"
        conv = "-" if r.converged is None else ("yes" if r.converged else "no")
        n_atoms = len(r.structure) if r.structure is not None else len(c.structure)
        lines.append(
            f"{r.energy_rank:>6} {c.rank:>4}  {pred:<18} {prob:>6}  {_fmt(r.energy_per_atom, '.4f'):>11} "
            f"{_fmt(de, '.1f'):>11}  {relaxed_sg:<18} {dv:>7}  {conv:>4} {_fmt(r.n_steps, 'd'):>5} {n_atoms:>5}"
        )
    if not res.relaxed and not res.failures:
        lines.append("(no candidates yet: run the workflow, e.g. `cryspnet-gen run`)")
    for name, rank, error in res.failures:
        where = f" (candidate #{rank})" if rank is not None else ""
        lines.append(f"FIZZLED {name}{where}: {error}")
    if res.failures:
        lines.append("rerun the FIZZLED jobs with: cryspnet-gen run --rerun-fizzled")
    return "\n".join(lines)


def write_results(res: WorkflowResults, out_dir: str | Path) -> list[Path]:
    """Write each relaxed structure as CIF, plus ``summary.csv`` and ``results.json``, into ``out_dir``.

    CIF names: ``<formula>-e<energy rank>-cand<predicted rank>-sg<relaxed space group>.cif``.
    """
    from pymatgen.io.cif import CifWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for r in res.relaxed:
        if r.structure is None or not r.ok:
            continue
        sg = r.relaxed_space_group if r.relaxed_space_group is not None else "unknown"
        path = out / f"{res.formula}-e{r.energy_rank}-cand{r.candidate.rank}-sg{sg}.cif"
        CifWriter(r.structure).write_file(str(path))
        written.append(path)
    rows = res.rows()
    if rows:
        path = out / "summary.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    path = out / "results.json"
    payload = {
        "metadata": res.metadata,
        "state": res.state,
        "counts": res.counts,
        "complete": res.complete,
        "failures": [list(f) for f in res.failures],
        "candidates": rows,
    }
    path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    written.append(path)
    logger.info("wrote %d files to %s", len(written), out)
    return written
