"""Evaluation report: the CRYSPNet paper's tables on the ``bench`` split's test sets, next to baselines.

For each test set (MPTS-52 test and MP-20 test, reported separately):

- every model side by side: the bundle under test, other bundles of the same split (other archs), and the
  RandomForest and LightGBM baselines trained in the same command: Bravais top-1/top-2, end-to-end space group
  top-1/top-5, and the expected calibration error (15 bins, top-1 confidence) with a reliability diagram;
- Table 2 analogue: Bravais top-1 / top-2 for the master, metal and oxide models (the last two on their own
  subsets, with the master model on the same subset beside them), vs the *random* (training frequencies) and
  *mode* baselines; a confusion-matrix plot;
- Table 3 analogue: space-group top-1 / top-3 per Bravais lattice given the true lattice, vs random; end-to-end
  space-group top-1 / top-5 with the joint probability P(lattice) x P(group | lattice) over all 230 groups;
- Table 4 analogue: log-MSE and R² per lattice parameter per lattice (given the true lattice); parity plots;
- Fig. 6 analogue: R² of the conventional-cell volume built from the parameters of the predicted top-1 lattice,
  for rows whose lattice was right and for rows whose lattice was wrong; and R² of the volume-per-atom model.

Modules: :mod:`~.outputs` (a model's outputs as arrays), :mod:`~.baselines`, :mod:`~.tables` (the numbers),
:mod:`~.render` (figures and Markdown) and :mod:`~.report` (the driver, :func:`evaluate`).
"""

from __future__ import annotations

from cryspnet_gen.evaluate.baselines import LightGBMBaseline, RandomForestBaseline
from cryspnet_gen.evaluate.outputs import ModelOutputs, joint_space_group_proba, predictor_outputs
from cryspnet_gen.evaluate.render import render_markdown
from cryspnet_gen.evaluate.report import TEST_SPLITS, EvaluationReport, evaluate
from cryspnet_gen.evaluate.tables import calibration_table, model_scores

__all__ = [
    "TEST_SPLITS",
    "EvaluationReport",
    "LightGBMBaseline",
    "ModelOutputs",
    "RandomForestBaseline",
    "calibration_table",
    "evaluate",
    "joint_space_group_proba",
    "model_scores",
    "predictor_outputs",
    "render_markdown",
]
