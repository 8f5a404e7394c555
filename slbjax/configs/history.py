"""Config of Fig. 5a's history baselines (the polynomial and the history MLP).

Both see the measured capacity of the cycles before the prediction start;
see :mod:`slbjax.history` for how the authors' notebooks run them.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from slbjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class HistoryData:
    """UL-NCA cycling condition (the split of :func:`slbjax.data.imoe_files.split_files`)."""

    condition: str = "CY25-05_1"


@dataclasses.dataclass(frozen=True)
class HistoryPolynomial:
    """Degree-``degree`` fit of ``history`` past capacities, ``horizon`` ahead."""

    history: int = 50
    horizon: int = 50
    degree: int = 3


@dataclasses.dataclass(frozen=True)
class HistoryMlp:
    """The history MLP and its training (the notebook's settings)."""

    history: int = 10
    horizon: int = 100
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.2
    epochs: int = 500
    batch_size: int = 64
    learning_rate: float = 1e-4
    plateau_patience: int = 100
    plateau_factor: float = 0.5
    plateau_threshold: float = 1e-4  # relative, as ReduceLROnPlateau's default


@dataclasses.dataclass(frozen=True)
class HistoryConfig:
    """One baseline on one condition; the MLP's ``ensemble_size`` seeds 0.. are members of one program."""

    family: ClassVar[str] = "history"
    baseline: Literal["polynomial", "mlp"] = "polynomial"
    ensemble_size: int = 1
    data: HistoryData = HistoryData()
    polynomial: HistoryPolynomial = HistoryPolynomial()
    mlp: HistoryMlp = HistoryMlp()

    def validate(self) -> None:
        if self.ensemble_size < 1:
            raise ConfigError(f"ensemble_size must be >= 1, got {self.ensemble_size}")
        for name, section in (("polynomial", self.polynomial), ("mlp", self.mlp)):
            if section.history < 1 or section.horizon < 1:
                raise ConfigError(f"{name}.history and {name}.horizon must be >= 1")
