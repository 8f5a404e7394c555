"""Random initial SOC of the partial charge (Huang, Tao et al. 2026, Fig. 3f).

Command: ``slbjax sweep imoe-soc --grid train.seed=0,1,2,3,4,5,6,7,8,9``
(grid ``data.soc_start`` = 20, 30, 40, 50 %: the Q-V curve is cut at that
initial SOC, re-based and resampled to 50 points; UL-NCA CY25-05_1 unless
``--set data.condition=...``).

Paper, Fig. 3f (authors' figure data, ``slbjax.paper_reference.FIG3F``): on
UL-NCA CY25-05_1, 0.88, 1.29, 1.97 and 1.91 % for 20, 30, 40 and 50 %.
"""

from slbjax.experiments.imoe_ul import get_config as _ul_config


def get_config(smoke: bool = False):
    return _ul_config(smoke)


def grid(smoke: bool = False) -> dict[str, list[int]]:
    """The swept values, typed as the config field."""
    return {"data.soc_start": [20, 50] if smoke else [20, 30, 40, 50]}
