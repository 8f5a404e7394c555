"""Deep sorting: consistency grouping of 86 retired cells from one cycle's curves (Wang et al. 2025).

Paper: S. Wang, F. Gao, H. Tian, "Deep sorting of reused batteries for
enabling long-term consistency grouping with unknown prior conditions",
Cell Reports Physical Science (2025), https://doi.org/10.1016/j.xcrp.2025.102657.
The method is the one of the authors' published code (k-means on z-scored
curve features of one reference cycle, refined twice on their first and
second derivatives); the data are ``sorting/`` (data README section 4).

Run::

    slbjax run sort-deep --data-dir /path/to/shared/data
    slbjax run sort-deep --set sort.seed=0 --set sort.num_seeds=50

Published numbers (the authors' metric files, seed 78825, scikit-learn 1.0.2),
aging difference (Ah cycles) / available lifetime (cycles) / capacity
utilisation (from the raw tester files):

* initial grouping   61.720583 / 285.186047 / 0.679728
* first refinement   45.274383 / 320.709302 / 0.753801
* second refinement  44.617586 / 333.732558 / 0.780580

The repository README claims +30 % service life and -40 % aging difference
against the state of the art; k-means on the explicit columns reproduces that
ratio (data README).  Capacity utilisation computed from
``capacity_trajectories.csv`` reads about 0.015 lower (0.6631 / 0.7374 /
0.7656 for the published partitions).  See docs/sorting.md.
"""

from __future__ import annotations

from slbjax.config import replace
from slbjax.configs.sort import SortConfig, SortData, SortMethod


def get_config(smoke: bool = False) -> SortConfig:
    """The published setting with 200 seeds for the spread; ``smoke``: 5 seeds."""
    cfg = SortConfig(data=SortData(), sort=SortMethod())
    if smoke:
        cfg = replace(cfg, {"sort.num_seeds": 5})
    return cfg
