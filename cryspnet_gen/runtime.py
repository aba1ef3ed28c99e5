"""Process settings: torch threads and determinism (one place for every layer that runs torch), quiet
third-party libraries (:func:`quiet_dependencies`, :func:`configure_logging`), and the forwarding of names that
moved to other modules (:func:`forward_moved`)."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "NOISY_LOGGERS",
    "NOISY_WARNINGS",
    "configure_logging",
    "forward_moved",
    "quiet_dependencies",
    "torch_settings",
    "torch_threads",
]

logger = logging.getLogger(__name__)

#: Warnings of dependencies that say nothing a user can act on: (category, message regex). scipy's ``logm``
#: warns at almost every step of ASE's ``FrechetCellFilter`` (798 lines for one LiFePO4 relaxation).
NOISY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (RuntimeWarning, r"logm result may be inaccurate"),
    (UserWarning, r"Converting a tensor with requires_grad=True to a scalar"),  # torch, inside CHGNet
    (UserWarning, r"No ionic radius for"),
    (UserWarning, r"Issues encountered while parsing CIF"),
    (UserWarning, r"No Pauling electronegativity"),
)
#: Loggers of dependencies that log at INFO by default (FireWorks, jobflow); kept at WARNING unless verbose.
NOISY_LOGGERS = ("launchpad", "rocket.launcher", "fireworks", "jobflow", "maggma", "pymatgen", "chgnet")


class _LogWriter(io.TextIOBase):
    """A text stream whose lines go to a logger at DEBUG (for libraries that ``print``)."""

    def __init__(self, target: logging.Logger) -> None:
        self.target = target
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.target.debug("%s", line.rstrip())
        return len(text)


@contextlib.contextmanager
def quiet_dependencies() -> Iterator[None]:
    """Keep dependencies' noise off the terminal inside the block, so that stdout carries results only.

    - the warnings in :data:`NOISY_WARNINGS` are ignored;
    - spglib's C-level messages ("spglib: ssm_get_exact_positions failed.") are switched off through
      ``SPGLIB_WARNING=OFF`` (unless the user set that variable), which spglib reads on every message;
    - what libraries ``print`` to stdout (CHGNet's "CHGNet v0.3.0 initialized ...", "CHGNet will run on cpu")
      goes to this module's logger at DEBUG.
    """
    previous = os.environ.get("SPGLIB_WARNING")
    if previous is None:
        os.environ["SPGLIB_WARNING"] = "OFF"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_LogWriter(logger)):
            for category, pattern in NOISY_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            yield
    finally:
        if previous is None:
            os.environ.pop("SPGLIB_WARNING", None)


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """Logging for a command-line run: messages on stderr; cryspnet-gen at INFO with ``verbose``, WARNING by
    default, ERROR with ``quiet``; dependencies' loggers (:data:`NOISY_LOGGERS`) at WARNING and Python warnings
    hidden unless ``verbose`` (then they are logged)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cryspnet_gen").setLevel(
        logging.INFO if verbose else (logging.ERROR if quiet else logging.WARNING)
    )
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.CRITICAL)


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
def torch_threads(n: int | None, *, blas: bool = False) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (``None``: leave torch's setting), then restore;
    ``blas=True`` limits the BLAS libraries too (relaxations: see :func:`torch_settings`).

    Small models and CHGNet on small cells gain little from threads, and on a machine whose cores are busy more
    threads than free cores slows torch down many times over (measured 40x for an 8-atom cell on 2 busy cores:
    bench/relax.py).
    """
    with torch_settings(threads=n, blas=blas):
        yield


def _blas_threads(n: int | None) -> contextlib.AbstractContextManager[Any]:
    """At most ``n`` threads in the BLAS / OpenMP libraries numpy and scipy use (threadpoolctl, when installed)."""
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the workflows and train extras
        return contextlib.nullcontext()
    return threadpool_limits(limits=max(int(n), 1))


@contextlib.contextmanager
def torch_settings(
    *, threads: int | None = None, deterministic: bool = False, blas: bool = False
) -> Iterator[None]:
    """Set torch's intra-op threads (``None``: leave them), with ``blas=True`` the BLAS libraries' threads too,
    and deterministic algorithms inside the block. The BLAS limit matters for relaxations: ASE's cell filter
    solves small systems with scipy at every CHGNet step, and on a busy machine multithreaded BLAS doubled the
    time of a relaxation. It is not the default: threadpoolctl takes about 2 ms per block, a fifth of a batched
    prediction's time."""
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
        with _blas_threads(threads) if blas else contextlib.nullcontext():
            yield
    finally:
        # only touch the determinism flag when asked: use_deterministic_algorithms() imports torch._inductor,
        # seconds on a busy machine, on every prediction
        if deterministic:
            torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
