"""Config of the consistency-grouping family (``sort-deep``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np

from slbjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SortData:
    """Where the files are.

    Attributes:
      subdir: folder under the data folder holding ``features.csv`` and
        ``capacity_trajectories.csv``.
    """

    subdir: str = "sorting"


@dataclasses.dataclass(frozen=True)
class SortMethod:
    """The method's settings (the published ones) and the seed spread.

    Attributes:
      num_groups: k of every k-means and of the oracle.
      seed: k-means ``random_state`` of the reported partition (the authors' 78825).
      num_seeds: seeds 0 .. num_seeds - 1 give the medians and 5-95 % ranges.
      n_init: k-means restarts (scikit-learn 1.0.2's default, which the authors ran).
      max_passes: most passes of each refinement.
      pad_ah: capacity that extends the shorter trajectory in the aging difference.
    """

    num_groups: int = 8
    seed: int = 78825
    num_seeds: int = 200
    n_init: int = 10
    max_passes: int = 10
    pad_ah: float = 1.2


@dataclasses.dataclass(frozen=True)
class SortConfig:
    """A consistency-grouping experiment."""

    family: ClassVar[str] = "sort"
    data: SortData = dataclasses.field(default_factory=SortData)
    sort: SortMethod = dataclasses.field(default_factory=SortMethod)

    def validate(self) -> None:
        """Raises ConfigError on values no run can use."""
        s = self.sort
        if not self.data.subdir.strip() or Path(self.data.subdir).is_absolute():
            raise ConfigError(f"data.subdir must be a relative folder name, got {self.data.subdir!r}")
        for key, value, low in (("sort.num_groups", s.num_groups, 2), ("sort.num_seeds", s.num_seeds, 1),
                                ("sort.n_init", s.n_init, 1), ("sort.max_passes", s.max_passes, 1)):
            if value < low:
                raise ConfigError(f"{key} must be >= {low}, got {value}")
        if not 0 <= s.seed < 2**32 - s.num_seeds:
            raise ConfigError(f"sort.seed must be in [0, 2**32 - num_seeds), got {s.seed}")
        if not (np.isfinite(s.pad_ah) and s.pad_ah >= 0):
            raise ConfigError(f"sort.pad_ah must be a finite capacity >= 0 Ah, got {s.pad_ah}")
