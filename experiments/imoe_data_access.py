"""Training-data access study of iMOE (Huang, Tao et al. 2026, Fig. 5b).

Command: ``slbjax sweep imoe-data-access --grid train.seed=0,1,2,3,4,5,6,7,8,9``
(grid ``data.train_fraction`` = 0.2, 0.4, 0.6, 0.8, 1.0 of the training
cells; UL-NCA CY25-05_1 unless ``--set data.condition=...``).

The subset of training cells is drawn once per fraction by
``data.fraction_seed`` (not by ``train.seed``), so the ten seeds of a fraction
see the same cells and the normalisers used at test time are the ones fitted
on those cells.  Validation and test cells never change.

Paper, Fig. 5b (authors' figure data, ``slbjax.paper_reference.FIG5B``):
on UL-NCA CY25-05_1, 1.57, 1.21, 1.19, 1.19 and 0.88 % for 20, 40, 60, 80
and 100 % of the training cells.
"""

from slbjax.experiments.imoe_ul import get_config as _ul_config


def get_config(smoke: bool = False):
    return _ul_config(smoke)


def grid(smoke: bool = False) -> dict[str, list[float]]:
    """The swept values, typed as the config field."""
    return {"data.train_fraction": [0.5, 1.0] if smoke else [0.2, 0.4, 0.6, 0.8, 1.0]}
