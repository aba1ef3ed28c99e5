"""README.md's examples run as written, top to bottom, in one fresh folder (issue #22).

Every fenced ``python`` and ``bash`` block is extracted in order. Python blocks run in one namespace (as one
session would), bash blocks line by line with ``bash -e``, all in one temporary folder. What is not run is named
here and in the README itself:

- setup commands inside a line (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install``, ``python -m
  pytest``): the test runs inside the installed package;
- a command whose README comment gives it a duration in minutes or hours ("~25 min"): long steps, which the
  README must time (a long command without a stated time fails this test by running);
- the sections in :data:`NOT_RUN`, with the reason.

Relaxations get a small step cap (``relax_steps=3`` / ``--steps 3``); otherwise the text is what a user types.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: README sections whose examples this test does not run, and why.
NOT_RUN = {
    "Relaxation workflows (FireWorks, atomate2)": "the workflow commands are run by tests/test_workflows.py",
    "Development": "developer tools and benchmark scripts",
}
SETUP = ("python3 -m venv", ". .venv/bin/activate", "pip install", "python -m pytest")
LONG = re.compile(r"#.*?\d+(?:[.-]\d+)?\s*(?:min|h)\b")


def examples() -> list[tuple[str, str, str]]:
    """``(section, language, code)`` of every fenced python/bash block, in README order."""
    out, section, lang, lines = [], "", None, []
    for line in README.read_text(encoding="utf-8").splitlines():
        if lang is None and line.startswith("#") and not line.startswith("#!"):
            section = line.lstrip("#").strip()
        elif lang is None and line.startswith("```"):
            lang = line[3:].strip()
            lines = []
        elif lang is not None and line.startswith("```"):
            if lang in ("python", "bash"):
                out.append((section, lang, "\n".join(lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    return out


def commands(block: str) -> list[str]:
    """The commands of a bash block to run: setup steps and timed long steps left out."""
    out = []
    for line in block.splitlines():
        if not line.strip() or LONG.search(line):
            continue
        parts = [p.strip() for p in line.split(" && ")]
        kept = [p for p in parts if not p.startswith(SETUP)]
        if kept:
            out.append(" && ".join(kept))
    return out


def capped(code: str) -> str:
    """Relaxations with a small step cap."""
    code = code.replace('relax="chgnet"', 'relax="chgnet", relax_steps=3')
    return re.sub(r"--relax chgnet", "--relax chgnet --steps 3", code)


def test_readme_has_runnable_examples_and_times_its_long_steps():
    blocks = examples()
    run = [b for b in blocks if b[0] not in NOT_RUN]
    assert sum(lang == "python" for _, lang, _ in run) >= 5
    assert sum(len(commands(code)) for _, lang, code in run if lang == "bash") >= 6
    long = [
        line for _, lang, code in blocks if lang == "bash" for line in code.splitlines() if LONG.search(line)
    ]
    assert any("train" in line for line in long) and any("templates build" in line for line in long)
    assert all(section in {s for s, _, _ in blocks} for section in NOT_RUN), "a skipped section was renamed"


@pytest.mark.slow
def test_readme_examples_run_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "__readme__"}
    ran = []
    for section, lang, code in examples():
        if section in NOT_RUN:
            continue
        if lang == "python":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(capped(code), f"README.md ({section})", "exec"), namespace)
            ran.append(f"python: {section}")
            continue
        for command in commands(code):
            proc = subprocess.run(
                ["bash", "-e", "-c", capped(command)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            assert "Traceback" not in proc.stderr, command
            ran.append(command)
    # each example wrote where it says, and nothing collided
    for folder in ("out", "lifepo4", "batch", "relaxed", "srtio3"):
        assert any((tmp_path / folder).glob("*_candidates.json")), folder
    assert (tmp_path / "predictions.csv").is_file()
    assert any(
        shlex.split(c)[:2] == ["cryspnet-gen", "generate"] for c in ran if c.startswith("cryspnet-gen")
    )
