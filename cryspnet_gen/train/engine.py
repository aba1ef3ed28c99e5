"""The ensemble training engine: losses, the one-network trainer and :func:`train_ensemble`.

Optimisation: AdamW (Adam, betas 0.9/0.999, with fastai's decoupled weight decay, which the paper's fastai
learners used) under PyTorch's ``OneCycleLR``, batch 256, early stopping on the validation rows (or the
out-of-bag rows of the bootstrap when a task has too few validation rows) with the best weights restored.

Randomness comes from one integer seed: every member derives its own numpy Generator and torch seed from
``(seed, task, lattice, member)``, so adding a task does not shift the others, and the global torch RNG is
left as it was.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cryspnet_gen.nn import Classifier, Ensemble, Regressor
from cryspnet_gen.runtime import torch_settings

if TYPE_CHECKING:
    from tqdm import tqdm

    from cryspnet_gen.train.config import TrainConfig

__all__ = [
    "LossFn",
    "Progress",
    "ce_loss",
    "class_weights",
    "log_mse_loss",
    "make_classifier",
    "make_regressor",
    "masked_ce_loss",
    "prefixed",
    "torch_settings_of",
    "train_ensemble",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------
# seeds, torch settings, progress
# ---------------------------------------------------------------------------------------------------------


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A Generator that depends only on ``seed`` and ``keys`` (stable across runs and task order)."""
    words = [int(seed) & 0xFFFFFFFF] + [
        zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF for k in keys
    ]
    return np.random.default_rng(np.random.SeedSequence(words))


def torch_settings_of(config: TrainConfig) -> contextlib.AbstractContextManager[None]:
    """:func:`cryspnet_gen.runtime.torch_settings` for ``config``'s threads and determinism (a context manager).

    ``num_threads`` of ``None`` or 0 leaves torch's thread setting alone.
    """
    return torch_settings(threads=config.num_threads or None, deterministic=config.deterministic)


class Progress:
    """One bar over all members to train; an inner bar over epochs.

    Parameters
    ----------
    total
        Number of networks (ensemble members) to train.
    quiet
        Hide the bars.
    """

    def __init__(self, total: int, *, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.bar: tqdm[Any] = tqdm(total=total, desc="training", unit="net", disable=quiet)

    def epochs(self, desc: str, total: int) -> tqdm[Any]:
        """A bar over the ``total`` epochs of one member."""
        return self._tqdm(total=total, desc=desc, unit="ep", leave=False, disable=self.quiet)

    def close(self) -> None:
        """Close the outer bar."""
        self.bar.close()


# ---------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------


def ce_loss(module: nn.Module, xb: torch.Tensor, ys: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the module's logits against the class indices ``ys[0]``."""
    return F.cross_entropy(module(xb), ys[0])


def log_mse_loss(module: nn.Module, xb: torch.Tensor, ys: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean squared error between the logs of the module's (positive) outputs and of the targets ``ys[0]``."""
    return F.mse_loss(torch.log(module(xb)), torch.log(ys[0]))


def masked_ce_loss(mask_bias: torch.Tensor) -> LossFn:
    """Cross-entropy with ``mask_bias[ys[1]]`` added to the logits (``ys[1]``: each row's head, e.g. lattice).

    Parameters
    ----------
    mask_bias
        ``(n_heads, n_classes)``: 0 for the classes of a head, a large negative number for the others, so the
        softmax is restricted to the row's head.
    """

    def loss(module: nn.Module, xb: torch.Tensor, ys: Sequence[torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(module(xb) + mask_bias[ys[1]], ys[0])

    return loss


# ---------------------------------------------------------------------------------------------------------
# the generic trainer
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _eval_loss(
    module: nn.Module, loss_fn: LossFn, X: torch.Tensor, Ys: Sequence[torch.Tensor], idx: torch.Tensor
) -> float:
    module.eval()
    total, count = 0.0, 0
    for start in range(0, len(idx), 8192):
        b = idx[start : start + 8192]
        total += float(loss_fn(module, X[b], [y[b] for y in Ys])) * len(b)
        count += len(b)
    return total / max(count, 1)


def _fit(
    module: nn.Module,
    loss_fn: LossFn,
    X: torch.Tensor,
    Ys: Sequence[torch.Tensor],
    fit_idx: np.ndarray,
    stop_idx: np.ndarray | None,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    progress: Progress | None,
    desc: str,
) -> dict[str, Any]:
    """Train ``module`` in place on rows ``fit_idx``; early-stop on ``stop_idx``; return a summary."""
    device = X.device
    fit_t = torch.as_tensor(fit_idx, dtype=torch.long, device=device)
    stop_t = (
        None
        if stop_idx is None or not len(stop_idx)
        else torch.as_tensor(stop_idx, dtype=torch.long, device=device)
    )
    n, bs = len(fit_t), int(config.batch_size)
    # BatchNorm cannot train on a batch of one: a lone last row waits for the next epoch's shuffle.
    steps = n // bs + (1 if n % bs > 1 else 0)
    if steps == 0:
        raise ValueError(f"{desc}: need at least 2 training rows, got {n}")
    opt = torch.optim.AdamW(
        module.parameters(), lr=config.max_lr, betas=(0.9, 0.999), weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.max_lr, epochs=config.max_epochs, steps_per_epoch=steps
    )
    best_loss, best_epoch, best_state, stale = math.inf, -1, None, 0
    last_train = math.nan
    bar = progress.epochs(desc, config.max_epochs) if progress else None
    for epoch in range(config.max_epochs):
        module.train()
        perm = fit_t[torch.randperm(n, generator=generator).to(device)]
        running = 0.0
        for step in range(steps):
            b = perm[step * bs : (step + 1) * bs]
            loss = loss_fn(module, X[b], [y[b] for y in Ys])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach())
        last_train = running / steps
        if stop_t is not None:
            stop_loss = _eval_loss(module, loss_fn, X, Ys, stop_t)
            if stop_loss < best_loss - 1e-6:
                best_loss, best_epoch, stale = stop_loss, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                stale += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{last_train:.4f}", stop=f"{best_loss:.4f}")
        if stop_t is not None and stale >= config.patience:
            break
    if bar is not None:
        bar.close()
    restored = best_state is not None and config.restore_best
    if restored:
        module.load_state_dict(best_state)  # type: ignore[arg-type]
    module.eval()
    return {
        "epochs": epoch + 1,
        "best_epoch": best_epoch + 1 if restored else epoch + 1,
        "stop_loss": None if best_state is None else best_loss,
        "train_loss": last_train,
    }


def train_ensemble(
    make: Callable[[], nn.Module],
    loss_fn: LossFn,
    X: torch.Tensor,
    Ys: Sequence[torch.Tensor],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    n_members: int,
    config: TrainConfig,
    seed_keys: Sequence[str | int],
    sample_weight: np.ndarray | None = None,
    progress: Progress | None = None,
    desc: str = "",
) -> tuple[Ensemble, list[dict[str, Any]]]:
    """Train ``n_members`` networks from ``make`` on (re)samples of ``train_idx``.

    Parameters
    ----------
    make
        Builds one untrained member (normalisers already set).
    loss_fn
        ``loss_fn(module, x_batch, [y_batch, ...])``.
    X, Ys
        All features and targets as tensors; rows are picked by index.
    train_idx, val_idx
        Rows to train on and rows of the validation split for early stopping.
    n_members
        Ensemble size.
    config
        Hyperparameters (bootstrap, stop_on, min_val_rows, ...).
    seed_keys
        Task keys mixed into ``config.seed`` for this ensemble's randomness.
    sample_weight
        Per-row weight (aligned with ``train_idx``) for drawing the resample (oversampling).
    progress
        Progress bars to advance (none by default).
    desc
        Label of the ensemble in the progress bars and the log.

    Returns
    -------
    tuple
        The ensemble (CPU, eval mode) and one training summary per member.
    """
    p = None
    if sample_weight is not None:
        p = np.asarray(sample_weight, dtype=np.float64)
        p = p / p.sum()
    devices = [] if torch.device(config.device).type != "cuda" else [torch.device(config.device)]
    members, infos = [], []
    with torch_settings_of(config):
        for m in range(n_members):
            rng = _rng(config.seed, *seed_keys, m)
            fit_idx, stop_idx, stop_set = _member_rows(train_idx, val_idx, p, config, rng)
            torch_seed = int(rng.integers(2**62))
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(torch_seed)
                module = make().to(config.device)
                gen = torch.Generator().manual_seed(torch_seed)
                info = _fit(
                    module,
                    loss_fn,
                    X,
                    Ys,
                    fit_idx,
                    stop_idx,
                    config=config,
                    generator=gen,
                    progress=progress,
                    desc=f"{desc} #{m}",
                )
            info["stop_set"] = stop_set
            logger.info("%s member %d: %s", desc, m, info)
            if progress is not None:
                progress.bar.update(1)
            members.append(module.to("cpu"))
            infos.append(info)
    return Ensemble(members).eval(), infos


def _member_rows(
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    p: np.ndarray | None,
    config: TrainConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """A member's rows to fit (a resample of ``train_idx`` drawn with probabilities ``p``), its rows to stop
    on and their name (``"val"``, ``"oob"`` or None)."""
    if config.bootstrap or p is not None:
        fit_idx = rng.choice(train_idx, size=len(train_idx), replace=True, p=p)
    else:
        fit_idx = np.asarray(train_idx)
    if config.stop_on == "val" and len(val_idx) >= config.min_val_rows:
        return fit_idx, np.asarray(val_idx), "val"
    oob = np.setdiff1d(train_idx, fit_idx)
    if len(oob) >= config.min_val_rows:
        return fit_idx, oob, "oob"
    return fit_idx, None, None


# ---------------------------------------------------------------------------------------------------------
# members, sampling weights, stored tensors
# ---------------------------------------------------------------------------------------------------------


def make_classifier(args: dict[str, Any], norm_state: dict[str, torch.Tensor]) -> Classifier:
    """A :class:`~cryspnet_gen.nn.Classifier` built from ``args`` with its standardizer set to ``norm_state``."""
    net = Classifier(**args)
    net.standardizer.load_state_dict(norm_state)
    return net


def make_regressor(
    args: dict[str, Any], norm_state: dict[str, torch.Tensor], lo: np.ndarray, hi: np.ndarray
) -> Regressor:
    """A :class:`~cryspnet_gen.nn.Regressor` built from ``args``, output range ``[lo, hi]``, standardizer set."""
    net = Regressor(**args).set_range(lo, hi)
    net.standardizer.load_state_dict(norm_state)
    return net


def class_weights(y: np.ndarray, power: float) -> np.ndarray | None:
    """Per-row sampling weight ``count(class) ** -power`` (None when power is 0)."""
    if power == 0:
        return None
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.float64) ** -power


def prefixed(ens: Ensemble, prefix: str) -> dict[str, torch.Tensor]:
    """The ensemble's state dict on the CPU with ``prefix`` before every tensor name."""
    return {f"{prefix}{k}": v.detach().cpu() for k, v in ens.state_dict().items()}
