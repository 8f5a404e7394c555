"""Second-life life prediction on the LSD cells, calibrated intervals, grouping on predictions.

What a tester records when a retired cell arrives (its first 10 cycles: Q-V
curve, relaxation voltage, capacity) -> the capacity trajectory until 1.2 Ah
(50 % of the 2.4 Ah rating) and so the remaining life, with conformal 90 %
intervals; cross-validated by cell, against ridge and random-forest baselines
on the same folds; then the cells grouped on lives predicted out of fold from
their deep-sorting feature cycle (a Gaussian process on the sorting features,
groups of largest expected available lifetime) and scored with the
deep-sorting metrics next to the published method (Wang, Gao, Tian 2025,
https://doi.org/10.1016/j.xcrp.2025.102657).  The LSD cells are those of the
iMOE paper (Huang, Tao et al. 2026) and of ``sorting/``.

Run::

    slbjax run life-lsd --data-dir /path/to/shared/data
    slbjax run life-lsd --set group.group_size=4
    slbjax run life-lsd --set train.fold_block=4    # hold out runs of four sibling cells

Published reference for the grouping (8 groups, 86 cells): the deep-sorting
method's best seed gives 333.73 cycles available lifetime and 44.62 Ah cycles
aging difference; slbjax's grouping, median over 50 fold splits, 330.9 /
47.5 (folds by cell), 275.9 / 76.6 (folds by runs of four).  See docs/life.md.
"""

from __future__ import annotations

from slbjax.config import replace
from slbjax.configs.life import LifeConfig


def get_config(smoke: bool = False) -> LifeConfig:
    """5 folds x 8 members; ``smoke``: 3 folds x 2 members, 30 epochs, 5 reference seeds."""
    cfg = LifeConfig()
    if smoke:
        cfg = replace(cfg, {"train.folds": 3, "train.ensemble_size": 2, "train.epochs": 30,
                            "train.patience": 10, "train.forest_trees": 20,
                            "group.reference_seeds": 5})
    return cfg
