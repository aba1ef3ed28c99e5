"""Torch modules for cryspnet-gen: fully connected networks over composition features, and an attention
network over the elements of a formula (:class:`ElementAttention`).

Every module keeps the keyword arguments it was built with in ``model_args`` (a JSON-serialisable dict), so a
bundle stores ``{model_args, state_dict}`` per network and rebuilds it without pickles (the chgnet checkpoint
shape). Input standardisation and output ranges are buffers, so the state dict alone makes a network usable.

The architecture follows CRYSPNet (Liang et al., Phys. Rev. Materials 4, 123802, 2020), which used fastai
tabular learners: repeated ``Linear -> BatchNorm1d -> ReLU -> Dropout`` blocks, a linear classification head,
and for regression a ``sigmoid x scale`` output squashed into a range taken from the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "MLP",
    "RANGE_MARGIN",
    "Classifier",
    "ElementAttention",
    "Ensemble",
    "Regressor",
    "Standardizer",
    "build_module",
    "output_range",
]

# Fraction of the training span added on each side of a regressor's output range: targets at the training
# extremes then sit inside the sigmoid rather than at its saturated ends (fastai's ``y_range`` habit), and
# test values a little outside the training range stay reachable.
RANGE_MARGIN = 0.1
#: Rows of the element embedding table: padding (0) and atomic numbers 1-119.
N_ELEMENT_EMBEDDINGS = 120


class Standardizer(nn.Module):
    """``(x - mean) / std`` with the statistics stored as buffers; NaN inputs become 0 (the mean).

    Parameters
    ----------
    n_features
        Width of the input.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, *, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    @torch.no_grad()
    def fit(self, x: np.ndarray | torch.Tensor) -> Standardizer:
        """Set the statistics from ``x`` (rows x features), ignoring NaN; constant columns get std 1."""
        arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected an array of shape (n, {self.mean.shape[0]}), got {arr.shape}")
        finite = np.isfinite(arr)
        count = finite.sum(axis=0)
        filled = np.where(finite, arr, 0.0)
        mean = np.divide(filled.sum(axis=0), count, out=np.zeros(arr.shape[1]), where=count > 0)
        sq = np.where(finite, (arr - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(np.divide(sq, count, out=np.zeros(arr.shape[1]), where=count > 0))
        std[~(std > 1e-12)] = 1.0
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inputs may carry the element encoding after the features (:class:`ElementAttention`): ignore it.
        x = x[..., : self.mean.shape[0]]
        return torch.nan_to_num((x - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)


class MLP(nn.Module):
    """Repeated ``Linear -> BatchNorm1d -> ReLU -> Dropout`` blocks.

    Parameters
    ----------
    n_in
        Input width.
    hidden
        Width of each block; its length is the depth.
    dropout
        Dropout probability after each block.
    """

    def __init__(self, *, n_in: int, hidden: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.BatchNorm1d(int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        self.layers = nn.Sequential(*layers)
        self.n_out = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Classifier(nn.Module):
    """Standardizer, MLP trunk and a linear head giving logits over ``n_classes``.

    Parameters
    ----------
    n_features
        Number of input features.
    n_classes
        Number of classes (logits).
    hidden
        Hidden widths of the trunk.
    dropout
        Dropout probability in the trunk.
    """

    def __init__(
        self, *, n_features: int, n_classes: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.model_args: dict[str, Any] = {
            "n_features": int(n_features),
            "n_classes": int(n_classes),
            "hidden": [int(h) for h in hidden],
            "dropout": float(dropout),
        }
        self.standardizer = Standardizer(n_features=n_features)
        self.trunk = MLP(n_in=n_features, hidden=hidden, dropout=dropout)
        self.head = nn.Linear(self.trunk.n_out, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits, shape ``(n, n_classes)``."""
        return self.head(self.trunk(self.standardizer(x)))


class Regressor(nn.Module):
    """Standardizer, MLP trunk and a sigmoid-scaled output per target, strictly inside ``(lo, hi)``.

    ``scale="linear"`` is the paper's ``sigmoid(z) * (hi - lo) + lo``. ``scale="log"`` (the default) applies
    the same map to the logarithms, ``exp(sigmoid(z) * (log hi - log lo) + log lo)``: lattice lengths and
    volumes are right-skewed (a few 30-100 Å cells among thousands of 3-10 Å ones), so in linear scale the
    typical target would sit in the sigmoid's flat lower tail, while in log scale it sits near the middle,
    and the log scale matches the log-MSE loss. ``lo`` and ``hi`` are buffers in target units, set from the
    training targets with :func:`output_range`.

    Parameters
    ----------
    n_features
        Number of input features.
    n_outputs
        Number of regression targets.
    hidden
        Hidden widths of the trunk.
    dropout
        Dropout probability in the trunk.
    scale
        ``"log"`` or ``"linear"``, see above (``"log"`` needs ``lo > 0``).
    """

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(
        self,
        *,
        n_features: int,
        n_outputs: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        scale: Literal["log", "linear"] = "log",
    ) -> None:
        super().__init__()
        if scale not in ("log", "linear"):
            raise ValueError(f"Unknown {scale=}; choose from ('log', 'linear')")
        self.scale = scale
        self.model_args: dict[str, Any] = {
            "n_features": int(n_features),
            "n_outputs": int(n_outputs),
            "hidden": [int(h) for h in hidden],
            "dropout": float(dropout),
            "scale": scale,
        }
        self.standardizer = Standardizer(n_features=n_features)
        self.trunk = MLP(n_in=n_features, hidden=hidden, dropout=dropout)
        self.head = nn.Linear(self.trunk.n_out, n_outputs)
        self.register_buffer("lo", torch.zeros(n_outputs))
        self.register_buffer("hi", torch.ones(n_outputs))

    @torch.no_grad()
    def set_range(self, lo: Sequence[float] | np.ndarray, hi: Sequence[float] | np.ndarray) -> Regressor:
        """Set the output range (one ``lo`` and ``hi`` per target)."""
        lo_t = torch.as_tensor(np.asarray(lo, dtype=np.float64), dtype=self.lo.dtype).reshape(self.lo.shape)
        hi_t = torch.as_tensor(np.asarray(hi, dtype=np.float64), dtype=self.hi.dtype).reshape(self.hi.shape)
        if not bool(torch.all(hi_t > lo_t)):
            raise ValueError(f"every hi must exceed its lo, got lo={lo_t.tolist()} hi={hi_t.tolist()}")
        if self.scale == "log" and not bool(torch.all(lo_t > 0)):
            raise ValueError(f"a log-scale range needs lo > 0, got lo={lo_t.tolist()}")
        self.lo.copy_(lo_t)
        self.hi.copy_(hi_t)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return predictions in target units, shape ``(n, n_outputs)``."""
        z = torch.sigmoid(self.head(self.trunk(self.standardizer(x))))
        if self.scale == "log":
            log_lo = torch.log(self.lo)
            # exp(log(hi)) can round just above hi: clamp so that the range is a guarantee.
            return torch.clamp(
                torch.exp(z * (torch.log(self.hi) - log_lo) + log_lo), min=self.lo, max=self.hi
            )
        return z * (self.hi - self.lo) + self.lo


class ElementAttention(nn.Module):
    """A classifier that learns from the composition itself: the weighted set of elements (Roost-style).

    Each element is a learned embedding (trained with the model, nothing downloaded); ``rounds`` rounds of
    attention between the elements of a formula, each element attending to the others weighted by their atomic
    fractions, update the embeddings (Roost's message passing, simplified); fraction-weighted attention pooling
    and an MLP head give the logits. It reads the element encoding that follows the ``n_features`` composition
    statistics in its input (:func:`cryspnet_gen.formula.element_encoding`: ``max_elements`` atomic numbers,
    then their fractions) and ignores the statistics.

    Parameters
    ----------
    n_features
        Number of composition statistics before the encoding in the input.
    n_classes
        Number of classes (logits).
    max_elements
        Elements per formula in the encoding.
    dim
        Width of the element embeddings.
    rounds
        Rounds of attention.
    hidden
        Hidden width of the head.
    dropout
        Dropout in the head.
    """

    def __init__(
        self,
        *,
        n_features: int,
        n_classes: int,
        max_elements: int = 12,
        dim: int = 96,
        rounds: int = 3,
        hidden: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.model_args: dict[str, Any] = {
            "n_features": int(n_features),
            "n_classes": int(n_classes),
            "max_elements": int(max_elements),
            "dim": int(dim),
            "rounds": int(rounds),
            "hidden": int(hidden),
            "dropout": float(dropout),
        }
        self.embed = nn.Embedding(N_ELEMENT_EMBEDDINGS, dim, padding_idx=0)
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, 1)) for _ in range(rounds)
        )
        self.messages = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim)) for _ in range(rounds)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(rounds))
        self.pool_gate = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))
        self.head = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits, shape ``(n, n_classes)``; ``x`` is ``(n, n_features + 2 * max_elements)``."""
        f, m = self.model_args["n_features"], self.model_args["max_elements"]
        if x.shape[-1] != f + 2 * m:
            raise ValueError(
                f"the element-attention model needs the element encoding after the {f} features "
                f"({f + 2 * m} columns), got {x.shape[-1]}"
            )
        z = torch.nan_to_num(x[:, f : f + m]).round().long().clamp(0, N_ELEMENT_EMBEDDINGS - 1)
        w = torch.nan_to_num(x[:, f + m :]).clamp_min(0.0)
        width = max(int((z > 0).sum(1).max()) if len(z) else 1, 1)  # trim the padding to the largest formula
        z, w = z[:, :width], w[:, :width]
        mask = z > 0
        logw = torch.where(mask, torch.log(w.clamp_min(1e-6)), torch.full_like(w, -1e9))
        h = self.embed(z) + 0.1 * torch.log(w.clamp_min(1e-6)).unsqueeze(-1)
        n = z.shape[1]
        for gate, message, norm in zip(self.gates, self.messages, self.norms, strict=True):
            pair = torch.cat([h.unsqueeze(2).expand(-1, -1, n, -1), h.unsqueeze(1).expand(-1, n, -1, -1)], -1)
            att = torch.softmax(gate(pair).squeeze(-1) + logw.unsqueeze(1), dim=-1)  # i attends to j, by w_j
            h = norm(h + (att.unsqueeze(-1) * message(pair)).sum(2))
        pool = torch.softmax(self.pool_gate(h).squeeze(-1) + logw, dim=-1)
        return self.head((pool.unsqueeze(-1) * h).sum(1))


class Ensemble(nn.Module):
    """Independently trained members of one architecture; ``forward`` stacks their outputs.

    Parameters
    ----------
    members
        The trained networks (all built from the same ``model_args``).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return member outputs stacked along a new first axis, shape ``(n_members, n, k)``."""
        return torch.stack([m(x) for m in self.members])


_MODULES: dict[str, type[nn.Module]] = {
    "Classifier": Classifier,
    "Regressor": Regressor,
    "ElementAttention": ElementAttention,
}


def build_module(model_class: str, model_args: dict[str, Any]) -> nn.Module:
    """Rebuild an (untrained) network from its class name and ``model_args``.

    Raises
    ------
    ValueError
        For an unknown class name.
    """
    if model_class not in _MODULES:
        raise ValueError(f"Unknown {model_class=}; available: {sorted(_MODULES)}")
    return _MODULES[model_class](**model_args)


def output_range(
    targets: np.ndarray,
    *,
    margin: float = RANGE_MARGIN,
    scale: Literal["log", "linear"] = "log",
    floor: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column output range for a :class:`Regressor`: the finite min/max widened by ``margin`` x span.

    With ``scale="log"`` the span and margin are taken on the logarithms (each end moves by the factor
    ``(max / min) ** margin``); with ``"linear"`` on the values, the lower end kept at or above
    ``max(floor, min / 2)`` so that predictions stay positive for the log loss. A constant column gets
    +-``margin`` of its value.

    Parameters
    ----------
    targets
        Array ``(n, k)`` (or ``(n,)``) of positive training targets; NaN ignored.
    margin
        Fraction of the span added on each side.
    scale
        The :class:`Regressor` scale the range is for.
    floor
        Smallest allowed lower bound.
    """
    arr = np.asarray(targets, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if not np.isfinite(arr).any(axis=0).all():
        raise ValueError("every target column needs at least one finite value to set a range")
    lo = np.maximum(np.nanmin(arr, axis=0), floor)
    hi = np.maximum(np.nanmax(arr, axis=0), lo)
    if scale == "log":
        log_lo, log_hi = np.log(lo), np.log(hi)
        span = np.where(log_hi - log_lo > 0, log_hi - log_lo, np.log1p(margin) / max(margin, 1e-12))
        return np.exp(log_lo - margin * span), np.exp(log_hi + margin * span)
    span = np.where(hi - lo > 0, hi - lo, np.abs(hi))
    return np.maximum(lo - margin * span, np.maximum(lo / 2, floor)), hi + margin * span
