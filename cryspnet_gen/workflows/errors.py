"""The errors of the workflow store: each message is one line that names the store or file, what is wrong and
what to do (the command-line tools print it as it is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["StoreCorruptError", "StoreError", "StoreLockedError", "describe_holder"]


class StoreError(RuntimeError):
    """The workflow store is missing, misconfigured or unusable."""


def describe_holder(holder: dict[str, Any]) -> str:
    """``process 123 (cryspnet-gen run) on host since 2026-11-25T10:00:00``, or ``another process``."""
    if not holder.get("pid"):
        return "another process"
    since = f" since {holder['since']}" if holder.get("since") else ""
    command = str(holder.get("command", "?"))
    if len(command) > 80:
        command = command[:77] + "..."
    return f"process {holder['pid']} ({command}) on {holder.get('host', '?')}{since}"


class StoreLockedError(StoreError):
    """Another process kept the embedded store for longer than we were willing to wait.

    Attributes
    ----------
    folder
        The store folder.
    holder
        The holder's details (``pid``, ``command``, ``host``, ``since``), empty when unknown.
    waited
        Seconds waited.
    """

    def __init__(self, folder: Path, holder: dict[str, Any], waited: float = 0.0) -> None:
        self.folder = folder
        self.holder = holder
        self.waited = waited
        how = f"after waiting {waited:.0f} s" if waited >= 1 else "and --wait 0 was given"
        super().__init__(
            f"the workflow store {folder} is still in use by {describe_holder(holder)} {how}; try again "
            f"when it has finished, give --wait SECONDS to wait longer, or use another --store DIR"
        )


class StoreCorruptError(StoreError):
    """A store file cannot be read, or has the wrong shape; nothing was changed.

    Attributes
    ----------
    path
        The file.
    problem
        What is wrong with it.
    remedy
        What to do about it.
    """

    def __init__(self, path: Path, problem: str, remedy: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"{path}: {problem}; it was left as it is. {remedy}")
