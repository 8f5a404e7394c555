"""Config of second-life life prediction (``life-lsd``) and the grouping built on it."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from slbjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LifeData:
    """Which cells, what a tester measures, and what counts as the end of life.

    Attributes:
      subdir: folder of LSD cell files under the data folder (any subset of them).
      measured_cycles: cycles a tester records when a cell arrives (the first
        rows of its file); the prediction starts after the last of them.
      nominal_ah: rated capacity (the LSD cells' 2.4 Ah).
      end_soh: end of second life as a share of ``nominal_ah`` (0.5: 1.2 Ah).
      start_stride: training samples start every ``start_stride`` cycles of a
        record (a cell may arrive at any age); evaluation starts at arrival.
      min_remaining: a training start needs at least this many cycles left.
      sorting_subdir: folder of the deep-sorting files; when present, the
        cells are also predicted from their sorting feature cycle and grouped.
    """

    subdir: str = "imoe/LSD"
    measured_cycles: int = 10
    nominal_ah: float = 2.4
    end_soh: float = 0.5
    start_stride: int = 10
    min_remaining: int = 20
    sorting_subdir: str = "sorting"


@dataclasses.dataclass(frozen=True)
class LifeModel:
    """The life network: an MLP from the arrival features to the log life and
    the shape of the trajectory (first-passage times of ``levels`` capacities);
    the SOH estimator: an MLP of widths ``soh_hidden`` from one cycle's Q-V
    curve and relaxation voltage to its state of health."""

    hidden: tuple[int, ...] = (64, 64)
    levels: int = 10
    shape_weight: float = 1.0
    soh_hidden: tuple[int, ...] = (64, 64)


@dataclasses.dataclass(frozen=True)
class LifeTrain:
    """Training, cross-validation and calibration.

    Attributes:
      folds: k of the k-fold cross-validation by cell.
      fold_block: 1: folds of single cells; B > 1: cells whose numbers agree in
        (number - 1) // B go into one fold together (LSD cells come in runs of
        four consecutive numbers that age alike: 4 holds each run out whole).
      ensemble_size: members per fold (and of the saved model), one program.
      val_share: share of a member's training cells held out for its early stopping.
      interval_level: nominal coverage of the prediction intervals.
    """

    seed: int = 0
    folds: int = 5
    fold_block: int = 1
    ensemble_size: int = 8
    epochs: int = 400
    patience: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    val_share: float = 0.15
    interval_level: float = 0.9
    forest_trees: int = 300


@dataclasses.dataclass(frozen=True)
class LifeGroup:
    """Predictive consistency grouping on the cells sorted by predicted life.

    Attributes:
      num_groups: groups of at least ``min_size`` cells cut where they give the
        most available lifetime for the predicted lives (``group_size`` = 0).
      group_size: > 0: runs of this many cells instead (packs of a fixed size).
      reference_seeds: seeds of the deep-sorting reference it is compared with.
      gp_components: principal components of the deep-sorting features that the
        Gaussian process predicting the grouped lives reads.
    """

    num_groups: int = 8
    min_size: int = 2
    group_size: int = 0
    reference_seeds: int = 200
    gp_components: int = 10


@dataclasses.dataclass(frozen=True)
class LifeConfig:
    """A second-life life-prediction experiment."""

    family: ClassVar[str] = "life"
    data: LifeData = dataclasses.field(default_factory=LifeData)
    model: LifeModel = dataclasses.field(default_factory=LifeModel)
    train: LifeTrain = dataclasses.field(default_factory=LifeTrain)
    group: LifeGroup = dataclasses.field(default_factory=LifeGroup)

    @property
    def end_ah(self) -> float:
        return self.data.end_soh * self.data.nominal_ah

    def validate(self) -> None:
        """Raises ConfigError on values no run can use."""
        d, m, t, g = self.data, self.model, self.train, self.group
        for key, value, low in (
            ("data.measured_cycles", d.measured_cycles, 1), ("data.start_stride", d.start_stride, 1),
            ("data.min_remaining", d.min_remaining, 1), ("model.levels", m.levels, 2),
            ("train.folds", t.folds, 2), ("train.fold_block", t.fold_block, 1),
            ("train.ensemble_size", t.ensemble_size, 2),
            ("train.epochs", t.epochs, 1), ("train.patience", t.patience, 1),
            ("train.batch_size", t.batch_size, 1), ("train.forest_trees", t.forest_trees, 1),
            ("group.num_groups", g.num_groups, 1), ("group.group_size", g.group_size, 0),
            ("group.min_size", g.min_size, 1),
            ("group.reference_seeds", g.reference_seeds, 1),
            ("group.gp_components", g.gp_components, 1),
        ):
            if value < low:
                raise ConfigError(f"{key} must be >= {low}, got {value}")
        for key, widths in (("model.hidden", m.hidden), ("model.soh_hidden", m.soh_hidden)):
            if not widths or min(widths) < 1:
                raise ConfigError(f"{key} must be positive widths, got {widths}")
        if not (np.isfinite(d.nominal_ah) and d.nominal_ah > 0):
            raise ConfigError(f"data.nominal_ah must be a positive capacity, got {d.nominal_ah}")
        for key, value in (("data.end_soh", d.end_soh), ("train.val_share", t.val_share),
                           ("train.interval_level", t.interval_level)):
            if not 0 < value < 1:
                raise ConfigError(f"{key} must lie in (0, 1), got {value}")
        if not (t.learning_rate > 0 and t.weight_decay >= 0 and m.shape_weight >= 0):
            raise ConfigError("train.learning_rate must be > 0, train.weight_decay and "
                              "model.shape_weight >= 0")
