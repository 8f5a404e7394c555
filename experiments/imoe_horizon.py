"""Prediction-horizon study of iMOE (Huang, Tao et al. 2026, Fig. 5d).

Command: ``slbjax sweep imoe-horizon --grid train.seed=0,1,2,3,4,5,6,7,8,9``
(grid ``data.horizon`` = 10, 30, 50, 80, 100, 150 future cycles; UL-NCA
CY25-05_1 unless ``--set data.condition=...``).

Paper, Fig. 5d (authors' figure data, ``slbjax.paper_reference.FIG5D``; the
figure has 30, 50, 80, 100 and 150): on UL-NCA CY25-05_1, 0.92, 0.88, 1.10,
0.98 and 0.98 % (the published 150-cycle runs repeat the 100-cycle ones).  Longer horizons leave fewer
windows per cell and drop cells shorter than horizon + 1 cycles (listed in
each point's ``data_report.json``); every horizon is its own program.
"""

from slbjax.experiments.imoe_ul import get_config as _ul_config


def get_config(smoke: bool = False):
    return _ul_config(smoke)


def grid(smoke: bool = False) -> dict[str, list[int]]:
    """The swept values, typed as the config field."""
    return {"data.horizon": [10, 30] if smoke else [10, 30, 50, 80, 100, 150]}
