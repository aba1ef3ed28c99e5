"""Training: a labelled table + composition features -> a model bundle.

The package follows CRYSPNet (Liang et al., Phys. Rev. Materials 4, 123802, 2020); its modules, from the bottom:

- :mod:`~cryspnet_gen.train.config`: :class:`TrainConfig` and its presets;
- :mod:`~cryspnet_gen.train.engine`: losses and :func:`train_ensemble`, the seeded ensemble trainer (AdamW under
  one-cycle, early stopping, bootstrap with minority-class oversampling);
- :mod:`~cryspnet_gen.train.table`: the training table (:func:`frame_and_features`, :func:`implausible_cells`)
  and the rows each task trains on;
- :mod:`~cryspnet_gen.train.tasks`: the networks of a bundle, task by task (Bravais models, space group and
  lattice parameters per lattice, volume per atom), and the one trainer for any task;
- :mod:`~cryspnet_gen.train.assemble`: :func:`train_bundle` and :func:`train_from_data` (train every task,
  score on the validation rows, write the bundle).
"""

from __future__ import annotations

from cryspnet_gen.train.assemble import train_bundle, train_from_data, validation_metrics
from cryspnet_gen.train.config import RegressorScale, SpaceGroupArch, StopOn, SubsetModel, TrainConfig
from cryspnet_gen.train.engine import LossFn, ce_loss, log_mse_loss, masked_ce_loss, train_ensemble
from cryspnet_gen.train.table import (
    MAX_VOLUME_RATIO,
    REQUIRED_COLUMNS,
    TrainingRows,
    frame_and_features,
    implausible_cells,
    prepare_rows,
)

__all__ = [
    "MAX_VOLUME_RATIO",
    "REQUIRED_COLUMNS",
    "LossFn",
    "RegressorScale",
    "SpaceGroupArch",
    "StopOn",
    "SubsetModel",
    "TrainConfig",
    "TrainingRows",
    "ce_loss",
    "frame_and_features",
    "implausible_cells",
    "log_mse_loss",
    "masked_ce_loss",
    "prepare_rows",
    "train_bundle",
    "train_ensemble",
    "train_from_data",
    "validation_metrics",
]
