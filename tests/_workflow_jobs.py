"""Cheap workflows for the store tests: pure-Python jobs, run by the real runner (no model, no CHGNet).

Each workflow looks like a cryspnet one to the store and the runner (``metadata["cryspnet"]`` with formula,
key, k, seed and relax), so ``status``, ``run`` and ``find_workflows`` treat it as such. The module must be
importable by name in a runner subprocess: put ``tests/`` on its ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from jobflow import Flow, job


@job
def pause(value: int, seconds: float = 0.0, marker: str | None = None) -> int:
    """Return ``2 * value``; the first time (no ``marker`` file yet) write the marker and sleep ``seconds``."""
    if marker is not None and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        time.sleep(seconds)
    return 2 * value


def add_pause_workflow(
    handle: Any, formula: str, *, n: int = 2, seconds: float = 0.0, marker: str | None = None
) -> list[int]:
    """Add a chain of ``n`` pause jobs (outputs 2, 4, 8, ...; the first one pauses) under ``formula``; its
    Firework ids."""
    from jobflow.managers.fireworks import flow_to_workflow

    meta = {"formula": formula, "key": f"pause-{formula}", "k": n, "seed": 0, "relax": "none"}
    jobs = [pause(1, seconds, marker)]  # a chain: the pausing job runs first
    for _ in range(n - 1):
        jobs.append(pause(jobs[-1].output))
    for rank, j in enumerate(jobs, 1):
        j.metadata["cryspnet"] = {**meta, "role": "relax", "rank": rank}
    wf = flow_to_workflow(Flow(jobs), store=handle.spec_store, name=formula, metadata={"cryspnet": meta})
    ids = sorted(handle.launchpad.add_wf(wf).values())
    handle.flush()
    return ids


def outputs(folder: Path) -> dict[tuple[str, int], Any]:
    """``{(job uuid, index): output}`` of an embedded store's ``jobs.json``; duplicates raise."""
    import json

    docs = json.loads((Path(folder) / "jobs.json").read_text())
    found: dict[tuple[str, int], Any] = {}
    for d in docs:
        key = (d["uuid"], d["index"])
        assert key not in found, f"duplicate output {key}"
        found[key] = d["output"]
    return found


def make_fake_model(tmp_path: Path) -> Path:
    """A folder that passes `submit`'s model check (the jobs that would load it fail at once, or never run)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "manifest.json").write_text("{}")
    return path
