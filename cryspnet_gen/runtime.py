"""Process settings: torch threads and determinism (one place for every layer that runs torch)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["torch_settings", "torch_threads"]


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
