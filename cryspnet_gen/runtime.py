"""Process settings: torch threads and determinism (one place for every layer that runs torch), and the
forwarding of names that moved to other modules (:func:`forward_moved`)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["forward_moved", "torch_settings", "torch_threads"]


def forward_moved(
    module: str, homes: Sequence[str] | Mapping[str, Collection[str]], hint: str = ""
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``module`` that finds the names that moved out of it in ``homes``.

    Parameters
    ----------
    module
        The old module's name (for the error message).
    homes
        Modules searched in turn for a name in their ``__all__``, or a mapping from each module to the names
        that moved there. A home is imported on first use.
    hint
        Appended to the ``AttributeError`` message of a name found nowhere, e.g. where the code went.
    """

    def moved_to(home: str) -> Collection[str]:
        if isinstance(homes, Mapping):
            return homes[home]
        return getattr(importlib.import_module(home), "__all__", ())

    def __getattr__(name: str) -> Any:
        for home in homes:
            if name in moved_to(home):
                return getattr(importlib.import_module(home), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}{hint}")

    return __getattr__


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (``None``: leave torch's setting), then restore.

    Small models and CHGNet on small cells gain little from threads, and on a machine whose cores are busy more
    threads than free cores slows torch down many times over (measured 40x for an 8-atom cell on 2 busy cores:
    bench/relax.py).
    """
    with torch_settings(threads=n):
        yield


@contextlib.contextmanager
def torch_settings(*, threads: int | None = None, deterministic: bool = False) -> Iterator[None]:
    """Set torch's intra-op threads (``None``: leave them) and deterministic algorithms inside the block."""
    if threads is None and not deterministic:
        yield
        return
    import torch

    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    try:
        if deterministic:
            torch.use_deterministic_algorithms(True)
        if threads is not None:
            torch.set_num_threads(max(int(threads), 1))
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
