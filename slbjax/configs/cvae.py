"""Config of the generative SOH family (``cvae-pulse``, ``cvae-synthetic``).

Besides the config: the study design it is checked against (the SOC levels
each case trains on) and the names of the two SOH protocols.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from slbjax.errors import ConfigError

# the training SOC levels (%) of each case; the other levels of 5..50 % are unseen
CASE_TRAIN_SOC_PCT: dict[int, tuple[int, ...]] = {
    0: (5, 15, 25, 35, 45, 50),
    1: (5, 10, 30, 40, 50),
    2: (5, 25, 40, 50),
    3: (5, 25, 50),
    4: (35, 40, 45, 50),
    5: (20, 25, 30),
    6: (5, 10, 15, 20),
    7: (5, 10),
}
INTERPOLATION_CASES = (0, 1, 2, 3)
EXTRAPOLATION_CASES = (4, 5, 6, 7)
# the values of ``generation.soh_source``, in the order their generation keys are folded
PROTOCOLS = ("test_rows", "train")


@dataclasses.dataclass(frozen=True)
class CvaeData:
    """Which rows.

    Attributes:
      battery: published workbook (NMC2.1, NMC21, LFP, LMO) or the synthetic cohort.
      cases: SOC cases to run (0-3 interpolation, 4-7 extrapolation).
      synthetic_cells, synthetic_seed, synthetic_noise_mv: the synthetic cohort.
      test_cell_fraction: fraction of physical cells held out of all training
        and scored alone (0 = the paper's setting: every cell in both).
      split_seed: seed of that cell split.
    """

    battery: Literal["NMC2.1", "NMC21", "LFP", "LMO", "synthetic"] = "NMC2.1"
    cases: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    synthetic_cells: int = 48
    synthetic_seed: int = 0
    synthetic_noise_mv: float = 1.0
    test_cell_fraction: float = 0.0
    split_seed: int = 0


@dataclasses.dataclass(frozen=True)
class CvaeModel:
    """Shape of :class:`~slbjax.models.cvae.PulseCVAE` (the paper's values)."""

    embed_dim: int = 64
    intermediate_dim: int = 64
    latent_dim: int = 2
    num_heads: int = 1


@dataclasses.dataclass(frozen=True)
class CvaeTrain:
    """Optimisation (the authors' Keras defaults: Adam 1e-3, eps 1e-7, 50 x 32).

    Attributes:
      ensemble_size: N members per case (seed indices 0 .. N-1, keys folded
        from ``seed``), all trained in the one program of the run.
      fast_compile: XLA backend optimisation level 0 (for smoke runs).
    """

    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    adam_eps: float = 1e-7
    seed: int = 0
    ensemble_size: int = 1
    w_rec: float = 0.5
    w_kl: float = 0.5
    fast_compile: bool = False


@dataclasses.dataclass(frozen=True)
class CvaeGeneration:
    """Generation at unseen SOC.

    Attributes:
      extrapolation: method used by :func:`slbjax.inference.generate` outside a
        case's training SOC range and reported as ``selected_*``; metrics hold both.
      soh_source: SOH protocol reported as ``selected_*`` and whose model
        :func:`slbjax.inference.generate` uses; metrics hold both.
      shift_weight_v: ``w`` of ``authors_shift``; None = the authors' constant
        of the battery type (estimated from the training rows for synthetic data).
      shift_gain: the authors' factor 20.
      seed: seed of the latent, SOH and row draws.
    """

    extrapolation: Literal["authors_shift", "eq89"] = "authors_shift"
    soh_source: Literal["test_rows", "train"] = "test_rows"
    shift_weight_v: float | None = None
    shift_gain: float = 20.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class CvaeDownstream:
    """The random forest SOH estimator (the paper's settings; bootstrap off as in the code)."""

    n_estimators: int = 20
    max_depth: int = 64
    min_samples_leaf: int = 1
    bootstrap: bool = False
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class CvaeConfig:
    """A generative SOH estimation experiment."""

    family: ClassVar[str] = "cvae"
    data: CvaeData = dataclasses.field(default_factory=CvaeData)
    model: CvaeModel = dataclasses.field(default_factory=CvaeModel)
    train: CvaeTrain = dataclasses.field(default_factory=CvaeTrain)
    generation: CvaeGeneration = dataclasses.field(default_factory=CvaeGeneration)
    downstream: CvaeDownstream = dataclasses.field(default_factory=CvaeDownstream)

    def validate(self) -> None:
        """Raises ConfigError on values no run can use."""
        cases = self.data.cases
        if (
            not cases
            or len(set(cases)) != len(cases)
            or any(c not in CASE_TRAIN_SOC_PCT for c in cases)
        ):
            raise ConfigError(f"data.cases must be distinct values among 0..7, got {cases}")
        if not 0.0 <= self.data.test_cell_fraction < 1.0:
            raise ConfigError(
                f"data.test_cell_fraction must be in [0, 1), got {self.data.test_cell_fraction}"
            )
        if self.data.synthetic_cells < 2:
            raise ConfigError(f"data.synthetic_cells must be >= 2, got {self.data.synthetic_cells}")
        for key, value in (
            ("train.epochs", self.train.epochs),
            ("train.batch_size", self.train.batch_size),
            ("train.ensemble_size", self.train.ensemble_size),
            ("model.embed_dim", self.model.embed_dim),
            ("model.intermediate_dim", self.model.intermediate_dim),
            ("model.latent_dim", self.model.latent_dim),
            ("model.num_heads", self.model.num_heads),
            ("downstream.n_estimators", self.downstream.n_estimators),
            ("downstream.max_depth", self.downstream.max_depth),
            ("downstream.min_samples_leaf", self.downstream.min_samples_leaf),
        ):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if not self.train.learning_rate > 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.train.learning_rate}")
        for key, value in (("train.w_rec", self.train.w_rec), ("train.w_kl", self.train.w_kl)):
            if not value >= 0:
                raise ConfigError(f"{key} is a loss weight and must be >= 0, got {value}")
