"""Training engine: a labelled table + composition features -> a model bundle.

:func:`train_bundle` trains, following CRYSPNet (Liang et al., Phys. Rev. Materials 4, 123802, 2020):

- a Bravais-lattice classifier (14 classes) as an ensemble of members, each trained on a bootstrap resample of
  the training rows with minority-class oversampling ("vertical voting"; here the members' softmax
  probabilities are averaged), plus the paper's Metal and Oxide Bravais models trained on those subsets;
- per Bravais lattice, a space-group classifier over the groups of that lattice seen in training (a constant
  when only one group is seen, a frequency prior when too few rows) and a lattice-parameter regressor over
  ``symmetry.PARAMETER_NAMES[bravais]`` trained with log-MSE;
- beyond the paper, a volume-per-atom regressor; every task is an ensemble whose member spread is reported.

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
import functools
import logging
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from monty.json import MSONable
from torch import nn

from cryspnet_gen.nn import Classifier, Ensemble, Regressor, Standardizer, output_range
from cryspnet_gen.bundle import WeightsDtype, save_bundle, storage_tensors
from cryspnet_gen.formula import subset_mask
from cryspnet_gen.predict import Predictor

if TYPE_CHECKING:
    import os

    import pandas as pd
    from tqdm import tqdm

__all__ = [
    "REQUIRED_COLUMNS",
    "TrainConfig",
    "frame_and_features",
    "train_bundle",
    "train_ensemble",
    "train_from_data",
]

logger = logging.getLogger(__name__)

StopOn = Literal["val", "oob"]
SpaceGroupArch = Literal["per_lattice", "shared_trunk"]
SubsetModel = Literal["metal", "oxide"]
RegressorScale = Literal["log", "linear"]

REQUIRED_COLUMNS = (
    "formula",
    "split",
    "bravais",
    "space_group",
    "a",
    "b",
    "c",
    "alpha",
    "beta",
    "gamma",
    "volume_per_atom",
)
_CELL = ("a", "b", "c", "alpha", "beta", "gamma")
# Added to the logits of groups outside a row's lattice in the shared-trunk space-group model.
_MASKED = -1e4


@dataclass
class TrainConfig(MSONable):
    """Hyperparameters of :func:`train_bundle` (stored in the bundle manifest).

    Attributes
    ----------
    bravais_hidden, space_group_hidden, lattice_hidden, volume_hidden
        Hidden widths of each task's MLP (their length is the depth).
    dropout
        Dropout after every hidden block (the paper's 0.1).
    max_epochs, batch_size, max_lr, weight_decay, patience
        AdamW + OneCycleLR over at most ``max_epochs``; early stopping after ``patience`` epochs without a
        lower stopping loss, restoring the best weights.
    n_members, n_members_space_group, n_members_lattice, n_members_volume
        Ensemble sizes (Bravais models use ``n_members``).
    bootstrap
        Train each member on a bootstrap resample of the training rows (bagging).
    oversample_power, space_group_oversample_power
        Minority-class oversampling: a row of a class with ``n_c`` training rows is drawn with weight
        ``n_c ** -power``, so class shares become proportional to ``n_c ** (1 - power)``. The default 0.5
        (inverse-sqrt weights) lifts rare lattices/groups (e.g. oF, aP-like tails) well above their natural
        share without the heavy duplication and prior distortion of full balancing (power 1); 0 disables it.
    regressor_scale
        ``"log"``: regressors squash their output into the training range on a log scale (default, suits
        right-skewed lengths and volumes); ``"linear"``: the paper's linear ``sigmoid x scale``. See
        :class:`cryspnet_gen.nn.Regressor`.
    min_rows
        Lattices with fewer training rows get no network: the space-group model becomes the training
        frequency (a constant with one group) and the lattice model the stored training parameters.
    min_val_rows
        Fewest validation rows for early stopping on them; else out-of-bag rows are used.
    stop_on
        ``"val"``: early stopping on the validation split (the paper's setting; the reported validation
        metrics are then mildly optimistic); ``"oob"``: on each member's out-of-bag rows, leaving the
        validation split untouched.
    space_group_arch
        ``"per_lattice"``: one network per lattice (the paper); ``"shared_trunk"``: one network over all
        training rows whose output layer holds per-lattice heads (the logits of a lattice's groups), trained
        with the softmax restricted to the row's lattice.
    subset_models
        The paper's subset Bravais models to train besides the master model.
    seed
        Base seed (``train_bundle(seed=...)`` overrides it).
    device
        torch device for training (prediction runs on CPU).
    num_threads
        torch intra-op threads during training, restored afterwards (``None`` leaves the setting alone). The
        default 1 is deliberate: at these network sizes a second thread gains little on an idle machine,
        and on a busy 2-core machine it made a training step 10-25x slower (threads waiting for each other).
    deterministic
        Turn on ``torch.use_deterministic_algorithms`` while training.
    quiet
        Hide the progress bars.
    restore_best
        Keep the weights of the epoch with the lowest stopping loss (default). ``False`` keeps the weights at
        the end of training, i.e. at the end of the one-cycle schedule: classifiers' cross-entropy on held-out
        rows bottoms out early (over-confidence) while their accuracy keeps rising through the annealing phase,
        so with ``patience >= max_epochs`` this trains the whole cycle (on the bench split: Bravais validation
        top-1 0.47 restoring the best loss vs 0.53 at the end of the cycle, single network).
    """

    bravais_hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    space_group_hidden: list[int] = field(default_factory=lambda: [256, 128])
    lattice_hidden: list[int] = field(default_factory=lambda: [256, 128])
    volume_hidden: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.1
    max_epochs: int = 60
    batch_size: int = 256
    max_lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 8
    n_members: int = 5
    n_members_space_group: int = 3
    n_members_lattice: int = 3
    n_members_volume: int = 3
    bootstrap: bool = True
    oversample_power: float = 0.5
    space_group_oversample_power: float = 0.5
    min_rows: int = 50
    min_val_rows: int = 20
    regressor_scale: RegressorScale = "log"
    stop_on: StopOn = "val"
    space_group_arch: SpaceGroupArch = "per_lattice"
    subset_models: list[str] = field(default_factory=lambda: ["metal", "oxide"])
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = 1
    deterministic: bool = True
    quiet: bool = False
    restore_best: bool = True

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named configuration, optionally with fields overridden.

        ``"shipped"``: the recipe of the bundles in ``models/``. ``"default"``: the dataclass defaults (the paper's
        5-member ensembles, larger; not trained here). ``"fast"``: half-width networks and smaller
        ensembles, for a bench-split run in a fraction of the time on a few CPU cores. ``"tiny"``: a smoke-test
        configuration that trains a whole bundle in seconds (useless predictions).

        Raises
        ------
        ValueError
            For an unknown name.
        """
        presets: dict[str, dict[str, Any]] = {
            "default": {},
            "fast": {
                "bravais_hidden": [256, 128],
                "space_group_hidden": [128, 64],
                "lattice_hidden": [128, 64],
                "volume_hidden": [128, 64],
                "max_epochs": 30,
                "patience": 5,
                "n_members": 3,
                "n_members_space_group": 2,
                "n_members_lattice": 2,
                "n_members_volume": 2,
            },
            # the recipe of the shipped bundles (validation-chosen, see docs/evaluation.md): ~25 min per split
            # on 2 busy cores
            "shipped": {
                "bravais_hidden": [512, 256, 128],
                "space_group_hidden": [256, 128],
                "lattice_hidden": [256, 128],
                "volume_hidden": [256, 128],
                "max_epochs": 30,
                "patience": 30,
                "n_members": 3,
                "n_members_space_group": 2,
                "n_members_lattice": 2,
                "n_members_volume": 2,
                "oversample_power": 0.25,
                "space_group_oversample_power": 0.25,
                "restore_best": False,
            },
            "tiny": {
                "bravais_hidden": [48, 24],
                "space_group_hidden": [24],
                "lattice_hidden": [24],
                "volume_hidden": [24],
                "max_epochs": 3,
                "patience": 2,
                "n_members": 1,
                "n_members_space_group": 1,
                "n_members_lattice": 1,
                "n_members_volume": 1,
            },
        }
        if name not in presets:
            raise ValueError(f"Unknown {name=}; available: {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def __post_init__(self) -> None:
        for name in ("bravais_hidden", "space_group_hidden", "lattice_hidden", "volume_hidden"):
            widths = [int(w) for w in getattr(self, name)]
            if not widths or min(widths) < 1:
                raise ValueError(f"{name} must be a non-empty list of positive widths, got {widths}")
            setattr(self, name, widths)
        self.subset_models = list(self.subset_models)
        if self.stop_on not in get_args(StopOn):
            raise ValueError(f"Unknown stop_on={self.stop_on!r}; choose from {get_args(StopOn)}")
        if self.regressor_scale not in get_args(RegressorScale):
            raise ValueError(
                f"Unknown regressor_scale={self.regressor_scale!r}; choose from {get_args(RegressorScale)}"
            )
        if self.space_group_arch not in get_args(SpaceGroupArch):
            raise ValueError(
                f"Unknown space_group_arch={self.space_group_arch!r}; choose from {get_args(SpaceGroupArch)}"
            )
        bad = [m for m in self.subset_models if m not in get_args(SubsetModel)]
        if bad:
            raise ValueError(f"Unknown subset_models {bad}; choose from {get_args(SubsetModel)}")
        for name in (
            "max_epochs",
            "batch_size",
            "n_members",
            "n_members_space_group",
            "n_members_lattice",
            "n_members_volume",
            "min_rows",
            "patience",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_lr <= 0 or self.weight_decay < 0:
            raise ValueError("max_lr must be > 0 and weight_decay >= 0")
        if self.oversample_power < 0 or self.space_group_oversample_power < 0:
            raise ValueError("oversampling powers must be >= 0")


# ---------------------------------------------------------------------------------------------------------
# seeds, torch settings, progress
# ---------------------------------------------------------------------------------------------------------


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A Generator that depends only on ``seed`` and ``keys`` (stable across runs and task order)."""
    words = [int(seed) & 0xFFFFFFFF] + [
        zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF for k in keys
    ]
    return np.random.default_rng(np.random.SeedSequence(words))


@contextlib.contextmanager
def _torch_settings(config: TrainConfig) -> Iterator[None]:
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    try:
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        if config.num_threads:
            torch.set_num_threads(int(config.num_threads))
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


class _Progress:
    """One bar over all members to train; an inner bar over epochs."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.bar: tqdm[Any] = tqdm(total=total, desc="training", unit="net", disable=quiet)

    def epochs(self, desc: str, total: int) -> tqdm[Any]:
        return self._tqdm(total=total, desc=desc, unit="ep", leave=False, disable=self.quiet)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------------------------
# the generic trainer
# ---------------------------------------------------------------------------------------------------------

LossFn = Callable[[nn.Module, torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]


def _ce_loss(module: nn.Module, xb: torch.Tensor, ys: Sequence[torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(module(xb), ys[0])


def _log_mse_loss(module: nn.Module, xb: torch.Tensor, ys: Sequence[torch.Tensor]) -> torch.Tensor:
    return F.mse_loss(torch.log(module(xb)), torch.log(ys[0]))


def _masked_ce_loss(mask_bias: torch.Tensor) -> LossFn:
    def loss(module: nn.Module, xb: torch.Tensor, ys: Sequence[torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(module(xb) + mask_bias[ys[1]], ys[0])

    return loss


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
    progress: _Progress | None,
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
    progress: _Progress | None = None,
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

    Returns
    -------
    tuple
        The ensemble (CPU, eval mode) and one training summary per member.
    """
    p = None
    if sample_weight is not None:
        p = np.asarray(sample_weight, dtype=np.float64)
        p = p / p.sum()
    members, infos = [], []
    with _torch_settings(config):
        for m in range(n_members):
            module, info = _train_member(
                make, loss_fn, X, Ys, train_idx, val_idx, p, config, seed_keys, m, progress, desc
            )
            members.append(module)
            infos.append(info)
    return Ensemble(members).eval(), infos


def _train_member(
    make: Callable[[], nn.Module],
    loss_fn: LossFn,
    X: torch.Tensor,
    Ys: Sequence[torch.Tensor],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    p: np.ndarray | None,
    config: TrainConfig,
    seed_keys: Sequence[str | int],
    m: int,
    progress: _Progress | None,
    desc: str,
) -> tuple[nn.Module, dict[str, Any]]:
    devices = [] if torch.device(config.device).type != "cuda" else [torch.device(config.device)]
    rng = _rng(config.seed, *seed_keys, m)
    if config.bootstrap or p is not None:
        fit_idx = rng.choice(train_idx, size=len(train_idx), replace=True, p=p)
    else:
        fit_idx = np.asarray(train_idx)
    stop_idx: np.ndarray | None = None
    stop_set: str | None = None
    if config.stop_on == "val" and len(val_idx) >= config.min_val_rows:
        stop_idx, stop_set = np.asarray(val_idx), "val"
    else:
        oob = np.setdiff1d(train_idx, fit_idx)
        if len(oob) >= config.min_val_rows:
            stop_idx, stop_set = oob, "oob"
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
    return module.to("cpu"), info


def _make_classifier(args: dict[str, Any], norm_state: dict[str, torch.Tensor]) -> Classifier:
    net = Classifier(**args)
    net.standardizer.load_state_dict(norm_state)
    return net


def _make_regressor(
    args: dict[str, Any], norm_state: dict[str, torch.Tensor], lo: np.ndarray, hi: np.ndarray
) -> Regressor:
    net = Regressor(**args).set_range(lo, hi)
    net.standardizer.load_state_dict(norm_state)
    return net


def _class_weights(y: np.ndarray, power: float) -> np.ndarray | None:
    """Per-row sampling weight ``count(class) ** -power`` (None when power is 0)."""
    if power == 0:
        return None
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.float64) ** -power


def _prefixed(ens: Ensemble, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().cpu() for k, v in ens.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------
# the bundle
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Rows:
    """Row masks and labels derived once from the training table."""

    train: np.ndarray
    val: np.ndarray
    bravais_idx: np.ndarray  # -1 when unknown
    space_group: np.ndarray  # 0 when unknown or inconsistent with the lattice
    cell: np.ndarray  # (n, 6), NaN when unknown
    cell_ok: np.ndarray
    volume: np.ndarray
    volume_ok: np.ndarray
    formulas: list[str]


def _prepare(frame: pd.DataFrame, X: np.ndarray) -> _Rows:
    from cryspnet_gen.symmetry import BRAVAIS_LATTICES, space_groups_of

    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"training table lacks columns {missing}; expected {list(REQUIRED_COLUMNS)}")
    if X.ndim != 2 or len(X) != len(frame):
        raise ValueError(f"X must be (len(frame), n_features) = ({len(frame)}, F), got {X.shape}")
    feat_ok = np.isfinite(X).any(axis=1)
    split = frame["split"].astype(str).to_numpy()
    lattice_index = {b: i for i, b in enumerate(BRAVAIS_LATTICES)}
    bravais_idx = np.asarray([lattice_index.get(b, -1) for b in frame["bravais"].astype(str)], dtype=np.int64)
    sg = _int_column(frame["space_group"])
    allowed = {i: set(space_groups_of(b)) for i, b in enumerate(BRAVAIS_LATTICES)}
    consistent = np.asarray(
        [b >= 0 and g in allowed[b] for b, g in zip(bravais_idx, sg, strict=True)], dtype=bool
    )
    n_bad = int(((sg > 0) & (bravais_idx >= 0) & ~consistent).sum())
    if n_bad:
        logger.warning(
            "%d rows have a space group outside their Bravais lattice; ignored for space groups", n_bad
        )
    sg = np.where(consistent, sg, 0)
    cell = frame[list(_CELL)].to_numpy(dtype=np.float64)
    cell_ok = np.isfinite(cell).all(axis=1) & (cell > 0).all(axis=1)
    vol = frame["volume_per_atom"].to_numpy(dtype=np.float64)
    vol_ok = np.isfinite(vol) & (vol > 0)
    n_unknown = int((bravais_idx < 0).sum())
    if n_unknown:
        logger.warning("%d rows have an unknown Bravais lattice; ignored", n_unknown)
    return _Rows(
        train=(split == "train") & feat_ok,
        val=(split == "val") & feat_ok,
        bravais_idx=bravais_idx,
        space_group=sg,
        cell=cell,
        cell_ok=cell_ok,
        volume=vol,
        volume_ok=vol_ok,
        formulas=[str(f) for f in frame["formula"]],
    )


def _int_column(series: pd.Series) -> np.ndarray:
    """Integer column with missing/invalid values as 0."""
    values = np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.where(np.isfinite(values), values, 0).astype(np.int64)


def train_bundle(
    frame: pd.DataFrame,
    X: np.ndarray,
    *,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike[str],
    name: str,
    version: str,
    split_name: str,
    feature_labels: Sequence[str],
    featurizer_settings: dict[str, Any],
    seed: int | None = None,
    labels: str = "mp",
    weights_dtype: WeightsDtype = "float16",
    overwrite: bool = False,
) -> Path:
    """Train every network of a bundle, compute validation metrics and write the bundle.

    Parameters
    ----------
    frame
        Training table with the columns in :data:`REQUIRED_COLUMNS` (``split`` in ``train``/``val``/test
        names; only ``train`` rows are fitted, ``val`` rows drive early stopping and the metrics).
    X
        Composition features aligned with ``frame`` (float32 ``(n, F)``, NaN rows for bad formulas).
    config
        Hyperparameters; defaults to ``TrainConfig()``.
    out_dir
        The bundle is written to ``out_dir / name``.
    name, version
        Bundle name and version.
    split_name
        Name of the data split recorded in the manifest (e.g. ``"bench"``).
    feature_labels, featurizer_settings
        ``featurize.feature_labels()`` and ``featurize.FEATURIZER_SETTINGS`` used to build ``X``.
    seed
        Overrides ``config.seed``.
    labels
        Which labels trained the bundle (e.g. ``"mp"`` or ``"mp+cod"``), recorded in the manifest.
    weights_dtype
        Storage precision of the weight matrices (see :func:`cryspnet_gen.predict.save_bundle`).
    overwrite
        Replace an existing bundle.

    Returns
    -------
    Path
        The bundle folder.
    """
    from cryspnet_gen.symmetry import BRAVAIS_LATTICES, PARAMETER_NAMES, space_groups_of, to_parameters

    config = copy.deepcopy(config) if config is not None else TrainConfig()
    if seed is not None:
        config.seed = int(seed)
    X = np.ascontiguousarray(X, dtype=np.float32)
    labels_list = [str(s) for s in feature_labels]
    if X.ndim != 2 or X.shape[1] != len(labels_list):
        raise ValueError(f"X has {X.shape[-1]} columns but {len(labels_list)} feature labels were given")
    rows = _prepare(frame, X)
    n_feat = X.shape[1]
    X_t = torch.from_numpy(X).to(config.device)
    train_all = np.flatnonzero(rows.train)
    if not len(train_all):
        raise ValueError("no training rows (split == 'train' with finite features)")
    stats = Standardizer(n_features=n_feat).fit(X[train_all])
    norm_state = stats.state_dict()

    # ---- plan: which networks to train ---------------------------------------------------------------
    lat_ok = rows.bravais_idx >= 0
    subsets: dict[str, np.ndarray] = {"master": np.ones(len(frame), dtype=bool)}
    for sub in config.subset_models:
        subsets[sub] = subset_mask(rows.formulas, sub)  # type: ignore[arg-type]
    bravais_plan = {}
    for model, mask in subsets.items():
        tr = np.flatnonzero(rows.train & lat_ok & mask)
        if len(np.unique(rows.bravais_idx[tr])) < 2 or len(tr) < config.min_rows:
            if model == "master":
                raise ValueError(f"the master Bravais model needs >= {config.min_rows} rows of >= 2 lattices")
            logger.warning("skipping the %s Bravais model: %d training rows", model, len(tr))
            continue
        bravais_plan[model] = (tr, np.flatnonzero(rows.val & lat_ok & mask))

    sg_ok = rows.space_group > 0
    sg_plan: dict[str, tuple[np.ndarray, np.ndarray, list[int]]] = {}
    for j, lat in enumerate(BRAVAIS_LATTICES):
        tr = np.flatnonzero(rows.train & sg_ok & (rows.bravais_idx == j))
        va = np.flatnonzero(rows.val & sg_ok & (rows.bravais_idx == j))
        sg_plan[lat] = (tr, va, sorted(int(g) for g in np.unique(rows.space_group[tr])))

    lattice_plan: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    params_all: dict[str, np.ndarray] = {}
    for j, lat in enumerate(BRAVAIS_LATTICES):
        sel = np.flatnonzero(rows.cell_ok & (rows.bravais_idx == j) & (rows.train | rows.val))
        params = np.full((len(frame), len(PARAMETER_NAMES[lat])), np.nan)
        if len(sel):
            params[sel] = np.asarray(to_parameters(lat, rows.cell[sel]), dtype=np.float64).reshape(
                len(sel), -1
            )
        good = np.isfinite(params).all(axis=1) & (params > 0).all(axis=1)
        params_all[lat] = params
        lattice_plan[lat] = (
            np.flatnonzero(good & rows.train),
            np.flatnonzero(good & rows.val),
            params,
        )
    vol_tr = np.flatnonzero(rows.train & rows.volume_ok)
    vol_va = np.flatnonzero(rows.val & rows.volume_ok)
    if len(vol_tr) < 2:
        raise ValueError("the volume regressor needs training rows with volume_per_atom")

    per_lattice_sg = config.space_group_arch == "per_lattice"
    n_nets = len(bravais_plan) * config.n_members + config.n_members_volume
    n_nets += sum(
        config.n_members_lattice for tr, _, _ in lattice_plan.values() if len(tr) >= config.min_rows
    )
    if per_lattice_sg:
        n_nets += sum(
            config.n_members_space_group
            for tr, _, groups in sg_plan.values()
            if len(groups) > 1 and len(tr) >= config.min_rows
        )
    else:
        n_nets += config.n_members_space_group

    tasks: dict[str, Any] = {}
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    counts: dict[str, int] = {"train": len(train_all), "val": int(rows.val.sum())}
    progress = _Progress(n_nets, quiet=config.quiet)
    try:
        with _torch_settings(config):
            # ---- Bravais ---------------------------------------------------------------------------
            tasks["bravais"] = {}
            y_brav = torch.as_tensor(np.maximum(rows.bravais_idx, 0), device=config.device)
            for model, (tr, va) in bravais_plan.items():
                args: dict[str, Any] = {
                    "n_features": n_feat,
                    "n_classes": len(BRAVAIS_LATTICES),
                    "hidden": config.bravais_hidden,
                    "dropout": config.dropout,
                }
                ens, infos = train_ensemble(
                    functools.partial(_make_classifier, args, norm_state),
                    _ce_loss,
                    X_t,
                    [y_brav],
                    tr,
                    va,
                    n_members=config.n_members,
                    config=config,
                    seed_keys=("bravais", model),
                    sample_weight=_class_weights(rows.bravais_idx[tr], config.oversample_power),
                    progress=progress,
                    desc=f"bravais/{model}",
                )
                file = f"bravais_{model}.safetensors"
                tensors[file] = _prefixed(ens, "")
                tasks["bravais"][model] = {
                    "file": file,
                    "model_class": "Classifier",
                    "model_args": ens.members[0].model_args,
                    "n_members": config.n_members,
                    "classes": list(BRAVAIS_LATTICES),
                    "n_train": len(tr),
                    "oversample_power": config.oversample_power,
                    "members": infos,
                }
                counts[f"bravais_{model}"] = len(tr)

            # ---- space groups ----------------------------------------------------------------------
            sg_file = "space_group.safetensors"
            tensors[sg_file] = {}
            sg_entries: dict[str, Any] = {}
            shared_entry = None
            y_sg_all = rows.space_group
            if per_lattice_sg:
                for lat, (tr, va, groups) in sg_plan.items():
                    if len(groups) <= 1 or len(tr) < config.min_rows:
                        sg_entries[lat] = _sg_prior(lat, groups, rows.space_group[tr], space_groups_of)
                        continue
                    index = {g: i for i, g in enumerate(groups)}
                    y_local = torch.as_tensor(
                        np.asarray([index.get(int(g), 0) for g in y_sg_all]), device=config.device
                    )
                    # Validation rows of groups unseen in training cannot be scored by the loss.
                    va_in = va[np.isin(rows.space_group[va], groups)]
                    args = {
                        "n_features": n_feat,
                        "n_classes": len(groups),
                        "hidden": config.space_group_hidden,
                        "dropout": config.dropout,
                    }
                    ens, infos = train_ensemble(
                        functools.partial(_make_classifier, args, norm_state),
                        _ce_loss,
                        X_t,
                        [y_local],
                        tr,
                        va_in,
                        n_members=config.n_members_space_group,
                        config=config,
                        seed_keys=("space_group", lat),
                        sample_weight=_class_weights(
                            rows.space_group[tr], config.space_group_oversample_power
                        ),
                        progress=progress,
                        desc=f"space_group/{lat}",
                    )
                    tensors[sg_file].update(_prefixed(ens, f"{lat}."))
                    sg_entries[lat] = {
                        "kind": "network",
                        "classes": groups,
                        "model_class": "Classifier",
                        "model_args": ens.members[0].model_args,
                        "n_members": config.n_members_space_group,
                        "n_train": len(tr),
                        "members": infos,
                    }
            else:
                shared_entry = _train_shared_space_group(
                    sg_plan,
                    rows,
                    X_t,
                    n_feat,
                    config,
                    norm_state,
                    progress,
                    tensors[sg_file],
                    sg_entries,
                    space_groups_of,
                )
            counts["space_group"] = sum(len(tr) for tr, _, _ in sg_plan.values())
            tasks["space_group"] = {
                "file": sg_file,
                "arch": config.space_group_arch,
                "shared": shared_entry,
                "lattices": sg_entries,
            }

            # ---- lattice parameters ----------------------------------------------------------------
            lat_file = "lattice.safetensors"
            tensors[lat_file] = {}
            lat_entries: dict[str, Any] = {}
            for lat, (tr, va, params) in lattice_plan.items():
                names = list(PARAMETER_NAMES[lat])
                if len(tr) == 0:
                    lat_entries[lat] = {"kind": "none", "parameter_names": names, "n_train": 0}
                    continue
                if len(tr) < config.min_rows:
                    lat_entries[lat] = {
                        "kind": "prior",
                        "parameter_names": names,
                        "samples": params[tr].tolist(),
                        "n_train": len(tr),
                    }
                    continue
                lo, hi = output_range(params[tr], scale=config.regressor_scale)
                if lat == "hR":
                    # from_parameters needs a rhombohedral alpha inside (0, 120) degrees.
                    hi[1] = min(hi[1], 119.5)
                    lo[1] = min(lo[1], hi[1] - 1.0)
                args = {
                    "n_features": n_feat,
                    "n_outputs": len(names),
                    "hidden": config.lattice_hidden,
                    "dropout": config.dropout,
                    "scale": config.regressor_scale,
                }
                y_par = torch.as_tensor(
                    np.nan_to_num(params, nan=1.0), dtype=torch.float32, device=config.device
                )
                ens, infos = train_ensemble(
                    functools.partial(_make_regressor, args, norm_state, lo, hi),
                    _log_mse_loss,
                    X_t,
                    [y_par],
                    tr,
                    va,
                    n_members=config.n_members_lattice,
                    config=config,
                    seed_keys=("lattice", lat),
                    progress=progress,
                    desc=f"lattice/{lat}",
                )
                tensors[lat_file].update(_prefixed(ens, f"{lat}."))
                lat_entries[lat] = {
                    "kind": "network",
                    "parameter_names": names,
                    "range": {"lo": lo.tolist(), "hi": hi.tolist()},
                    "model_class": "Regressor",
                    "model_args": ens.members[0].model_args,
                    "n_members": config.n_members_lattice,
                    "n_train": len(tr),
                    "members": infos,
                }
            counts["lattice"] = sum(len(tr) for tr, _, _ in lattice_plan.values())
            tasks["lattice"] = {"file": lat_file, "loss": "log-mse", "lattices": lat_entries}

            # ---- volume per atom -------------------------------------------------------------------
            lo, hi = output_range(rows.volume[vol_tr], scale=config.regressor_scale)
            args = {
                "n_features": n_feat,
                "n_outputs": 1,
                "hidden": config.volume_hidden,
                "dropout": config.dropout,
                "scale": config.regressor_scale,
            }
            y_vol = torch.as_tensor(
                np.nan_to_num(rows.volume, nan=1.0)[:, None], dtype=torch.float32, device=config.device
            )
            ens, infos = train_ensemble(
                functools.partial(_make_regressor, args, norm_state, lo, hi),
                _log_mse_loss,
                X_t,
                [y_vol],
                vol_tr,
                vol_va,
                n_members=config.n_members_volume,
                config=config,
                seed_keys=("volume",),
                progress=progress,
                desc="volume",
            )
            tensors["volume.safetensors"] = _prefixed(ens, "")
            tasks["volume"] = {
                "file": "volume.safetensors",
                "loss": "log-mse",
                "parameter_names": ["volume_per_atom"],
                "range": {"lo": lo.tolist(), "hi": hi.tolist()},
                "model_class": "Regressor",
                "model_args": ens.members[0].model_args,
                "n_members": config.n_members_volume,
                "n_train": len(vol_tr),
                "members": infos,
            }
            counts["volume"] = len(vol_tr)
    finally:
        progress.close()

    manifest: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "split": split_name,
        "labels": labels,
        "features": {"labels": labels_list, "settings": featurizer_settings, "n_features": n_feat},
        "bravais_lattices": list(BRAVAIS_LATTICES),
        "parameter_names": {lat: list(PARAMETER_NAMES[lat]) for lat in BRAVAIS_LATTICES},
        "tasks": tasks,
        "train_config": {k: v for k, v in asdict(config).items()},
        "training": {"seed": config.seed, "rows": counts, "early_stopping": config.stop_on},
    }
    # Score exactly what will be stored (the weights rounded to the storage dtype).
    stored = {f: storage_tensors(t, weights_dtype) for f, t in tensors.items()}
    predictor = Predictor(manifest, stored, check_features=False)
    manifest["metrics"] = {
        "validation": _validation_metrics(predictor, X, rows, bravais_plan, params_all),
        "test": None,
    }
    return save_bundle(
        Path(out_dir) / name, manifest, tensors, weights_dtype=weights_dtype, overwrite=overwrite
    )


def _sg_prior(
    lat: str, groups: list[int], y: np.ndarray, space_groups_of: Callable[[str], Sequence[int]]
) -> dict[str, Any]:
    """A frequency prior over the groups seen (uniform over all groups of the lattice when none)."""
    if not groups:
        all_groups = [int(g) for g in space_groups_of(lat)]
        return {
            "kind": "prior",
            "classes": all_groups,
            "probabilities": [1.0 / len(all_groups)] * len(all_groups),
            "n_train": 0,
        }
    counts = np.asarray([(y == g).sum() for g in groups], dtype=np.float64)
    return {
        "kind": "prior",
        "classes": groups,
        "probabilities": (counts / counts.sum()).tolist(),
        "n_train": len(y),
    }


def _train_shared_space_group(
    sg_plan: dict[str, tuple[np.ndarray, np.ndarray, list[int]]],
    rows: _Rows,
    X_t: torch.Tensor,
    n_feat: int,
    config: TrainConfig,
    norm_state: dict[str, torch.Tensor],
    progress: _Progress,
    out_tensors: dict[str, torch.Tensor],
    entries: dict[str, Any],
    space_groups_of: Callable[[str], Sequence[int]],
) -> dict[str, Any] | None:
    """One classifier over all groups; lattice ``L``'s head is the slice of logits of ``L``'s groups."""
    from cryspnet_gen.symmetry import BRAVAIS_LATTICES

    heads = {lat: groups for lat, (_, _, groups) in sg_plan.items() if len(groups) > 1}
    for lat, (tr, _, groups) in sg_plan.items():
        if lat not in heads:
            entries[lat] = _sg_prior(lat, groups, rows.space_group[tr], space_groups_of)
    if not heads:
        return None
    classes = sorted(g for groups in heads.values() for g in groups)
    column = {g: i for i, g in enumerate(classes)}
    mask = np.full((len(BRAVAIS_LATTICES), len(classes)), _MASKED, dtype=np.float32)
    for lat, groups in heads.items():
        mask[BRAVAIS_LATTICES.index(lat), [column[g] for g in groups]] = 0.0
    tr = np.concatenate([sg_plan[lat][0] for lat in heads])
    va = np.concatenate([sg_plan[lat][1] for lat in heads])
    va = va[np.isin(rows.space_group[va], classes)]
    y = torch.as_tensor(np.asarray([column.get(int(g), 0) for g in rows.space_group]), device=config.device)
    lat_t = torch.as_tensor(np.maximum(rows.bravais_idx, 0), device=config.device)
    args: dict[str, Any] = {
        "n_features": n_feat,
        "n_classes": len(classes),
        "hidden": config.space_group_hidden,
        "dropout": config.dropout,
    }
    ens, infos = train_ensemble(
        functools.partial(_make_classifier, args, norm_state),
        _masked_ce_loss(torch.as_tensor(mask, device=config.device)),
        X_t,
        [y, lat_t],
        tr,
        va,
        n_members=config.n_members_space_group,
        config=config,
        seed_keys=("space_group", "shared"),
        sample_weight=_class_weights(rows.space_group[tr], config.space_group_oversample_power),
        progress=progress,
        desc="space_group/shared",
    )
    out_tensors.update(_prefixed(ens, "shared."))
    for lat, groups in heads.items():
        entries[lat] = {
            "kind": "shared",
            "classes": groups,
            "columns": [column[g] for g in groups],
            "n_train": len(sg_plan[lat][0]),
        }
    return {
        "model_class": "Classifier",
        "model_args": ens.members[0].model_args,
        "n_members": config.n_members_space_group,
        "classes": classes,
        "n_train": len(tr),
        "members": infos,
    }


# ---------------------------------------------------------------------------------------------------------
# validation metrics
# ---------------------------------------------------------------------------------------------------------


def _r2(y: np.ndarray, pred: np.ndarray) -> float | None:
    if len(y) < 2:
        return None
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 0:
        return None
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


def _validation_metrics(
    predictor: Predictor,
    X: np.ndarray,
    rows: _Rows,
    bravais_plan: dict[str, tuple[np.ndarray, np.ndarray]],
    params_all: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Bravais top-1/top-2, space-group top-1 given the true lattice, parameter and volume R² on ``val``."""
    lattices = predictor.bravais_lattices
    out: dict[str, Any] = {"bravais": {}, "space_group": {}, "lattice": {}, "volume": {}}
    for model, (_, va) in bravais_plan.items():
        if not len(va):
            out["bravais"][model] = {"n": 0, "top1": None, "top2": None}
            continue
        mean, _ = predictor.bravais_probabilities(X[va], model=model)  # type: ignore[arg-type]
        order = np.argsort(-mean, axis=1, kind="stable")
        y = rows.bravais_idx[va]
        recalls = [float((order[y == j, 0] == j).mean()) for j in range(len(lattices)) if (y == j).any()]
        out["bravais"][model] = {
            "n": len(va),
            "top1": float((order[:, 0] == y).mean()),
            "top2": float((order[:, :2] == y[:, None]).any(axis=1).mean()),
            "balanced_top1": float(np.mean(recalls)),
        }
    per_lat: dict[str, Any] = {}
    hits = total = 0
    for j, lat in enumerate(lattices):
        va = np.flatnonzero(rows.val & (rows.space_group > 0) & (rows.bravais_idx == j))
        if not len(va):
            continue
        groups, mean, _ = predictor.space_group_probabilities(X[va], lat)
        top = np.asarray(groups)[np.argmax(mean, axis=1)]
        h = int((top == rows.space_group[va]).sum())
        per_lat[lat] = {"n": len(va), "top1": h / len(va)}
        hits, total = hits + h, total + len(va)
    out["space_group"] = {"n": total, "top1": hits / total if total else None, "per_lattice": per_lat}
    lat_metrics: dict[str, Any] = {}
    for j, lat in enumerate(lattices):
        params = params_all[lat]
        va = np.flatnonzero(rows.val & (rows.bravais_idx == j) & np.isfinite(params).all(axis=1))
        if not len(va):
            continue
        pred = predictor.lattice_parameter_members(X[va], lat).mean(axis=0)
        names = list(predictor.manifest["parameter_names"][lat])
        lat_metrics[lat] = {
            "n": len(va),
            "r2": {k: _r2(params[va, i], pred[:, i]) for i, k in enumerate(names)},
            "mape": {
                k: float(np.mean(np.abs(pred[:, i] / params[va, i] - 1)))
                if np.isfinite(pred[:, i]).all()
                else None
                for i, k in enumerate(names)
            },
        }
    out["lattice"] = {"per_lattice": lat_metrics}
    va = np.flatnonzero(rows.val & rows.volume_ok)
    if len(va):
        mean, _ = predictor.volume_per_atom(X[va])
        out["volume"] = {
            "n": len(va),
            "r2": _r2(rows.volume[va], mean),
            "mae": float(np.abs(mean - rows.volume[va]).mean()),
        }
    return out


# ---------------------------------------------------------------------------------------------------------
# data -> bundle
# ---------------------------------------------------------------------------------------------------------


def frame_and_features(
    split: Literal["bench", "full"],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    labels: Literal["mp", "mp+cod", "experimental"] = "mp",
    seed: int = 0,
    progress: bool = True,
    max_rows: int | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The training table of a named split (:mod:`cryspnet_gen.data`) and its feature matrix.

    Returns
    -------
    tuple
        ``(frame, X)``: the frame with a fresh RangeIndex and the float32 features aligned with its rows.
    """
    from cryspnet_gen.data import build
    from cryspnet_gen.featurize import featurize

    if split not in ("bench", "full"):
        raise ValueError(f"Unknown {split=}; choose from ('bench', 'full')")
    if labels not in ("mp", "mp+cod", "experimental"):
        raise ValueError(f"Unknown {labels=}; choose from ('mp', 'mp+cod', 'experimental')")
    frame = build(data_dir, progress=progress, max_rows=max_rows).frame(split, policy=labels, seed=seed)
    frame = frame.reset_index(drop=True)
    feats = featurize(list(frame["formula"]))
    n_bad = sum(e is not None for e in feats.errors)
    if n_bad:
        logger.warning(
            "%d of %d formulas could not be featurized; they are left out of training", n_bad, len(frame)
        )
    suspect = (
        implausible_cells(frame, feats.matrix, feats.labels)
        & frame["split"].isin(["train", "val"]).to_numpy()
    )
    if suspect.any():
        logger.info(
            "%d train/val rows have a volume per atom over %.0fx the elemental estimate: their cells and volumes "
            "are not used as regression targets (their space-group labels are kept)",
            int(suspect.sum()),
            MAX_VOLUME_RATIO,
        )
        frame.loc[suspect, [*_CELL, "volume_per_atom"]] = np.nan
    return frame, feats.matrix


#: A cell whose volume per atom exceeds this multiple of the composition-weighted elemental volume (Magpie's
#: ``GSvolume_pa``) is taken to be broken or mostly vacuum (molecules or slabs in a box). In MP 2025 about 2% of
#: the ground states are (up to 63x, e.g. 1,852 A^3/atom for Nd2CuSb3) and almost none of the benchmark test
#: structures (1 of 14,349 above 3x); left in, they dominate the squared errors of every cell regressor.
MAX_VOLUME_RATIO = 3.0


def implausible_cells(frame: pd.DataFrame, X: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Rows whose volume per atom is more than :data:`MAX_VOLUME_RATIO` x the elemental estimate."""
    column = list(labels).index("MagpieData mean GSvolume_pa")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = frame["volume_per_atom"].to_numpy(dtype=float) / X[:, column]
    return np.asarray(ratio > MAX_VOLUME_RATIO)


def train_from_data(
    split: Literal["bench", "full"] = "bench",
    *,
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    version: str = "1",
    data_dir: str | os.PathLike[str] | None = None,
    labels: Literal["mp", "mp+cod", "experimental"] = "mp",
    config: TrainConfig | None = None,
    seed: int | None = None,
    max_rows: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Build the split from the open data, featurize it and :func:`train_bundle` on it.

    Parameters
    ----------
    split
        ``"bench"`` (test formulas held out) or ``"full"`` (everything trains; for the shipped bundle).
    out_dir
        The bundle is written to ``out_dir / name``.
    name
        Bundle name; default ``cryspnet-<split>`` (``cryspnet-<split>-<labels>`` for other label policies).
    version
        Bundle version string.
    data_dir
        Data folder (see :func:`cryspnet_gen.config.resolve_data_dir`).
    labels
        Label policy of :mod:`cryspnet_gen.data`.
    config
        Hyperparameters (default ``TrainConfig()``).
    seed
        Seed for the validation draw and the training (default ``config.seed``).
    max_rows
        Use only the first rows of each source (smoke runs).
    overwrite
        Replace an existing bundle.
    """
    from cryspnet_gen.featurize import FEATURIZER_SETTINGS, feature_labels

    config = config if config is not None else TrainConfig()
    seed = config.seed if seed is None else int(seed)
    if name is None:
        name = f"cryspnet-{split}" + ("" if labels == "mp" else f"-{labels.replace('+', '-')}")
    frame, X = frame_and_features(
        split, data_dir=data_dir, labels=labels, seed=seed, progress=not config.quiet, max_rows=max_rows
    )
    return train_bundle(
        frame,
        X,
        config=config,
        out_dir=out_dir,
        name=name,
        version=version,
        split_name=split,
        feature_labels=feature_labels(),
        featurizer_settings=FEATURIZER_SETTINGS,
        seed=seed,
        labels=labels,
        overwrite=overwrite,
    )
