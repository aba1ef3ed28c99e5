"""Shared fixtures.

Tests that read the real open data use the ``shared_data`` fixture: it skips on a developer machine without the
data, but fails under CI (``CI=true``), where the data is always beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cryspnet_gen.config import DATA_DIR_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _templates_off_unless_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run with the shipped prototype library off (``CRYSPNET_GEN_TEMPLATES=none``), so that tests of the
    CRYSPNet source see CRYSPNet candidates; the README examples run as a user would, with it on, and the tests
    of the default source unset it themselves (tests/test_prototypes.py)."""
    if request.module.__name__.endswith("test_readme"):
        return
    if "CRYSPNET_GEN_TEMPLATES" not in os.environ:
        monkeypatch.setenv("CRYSPNET_GEN_TEMPLATES", "none")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``$CRYSPNET_GEN_DATA_DIR`` or ``../shared/data`` beside the repo)."""
    env = os.environ.get(DATA_DIR_ENV)
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not (path / "mp2025_topology" / "lattice.csv.gz").is_file():
        msg = f"shared data not found at {path} (set {DATA_DIR_ENV})"
        if _in_ci():
            pytest.fail(msg + ": required in CI")
        pytest.skip(msg)
    return path
