"""Expert-count ablation of iMOE (Huang, Tao et al. 2026, Fig. 5c).

Command: ``slbjax sweep imoe-experts --grid train.seed=0,1,2,3,4,5,6,7,8,9``
(the module's grid, ``model.num_experts`` = 3..8, is used when ``--grid``
does not name it; add ``--set data.condition=...`` for another UL-NCA
condition).  ``slbjax run imoe-experts`` trains the base point alone.

Paper, Fig. 5c (authors' figure data, ``slbjax.paper_reference.FIG5C``): on
UL-NCA CY25-05_1, 1.22, 1.15, 0.88, 1.10 and 1.16 % for 3, 4, 5, 6 and 7
experts (mean of ten runs); five experts were chosen.  The published data
hold no 8-expert runs, so that point has no paper value.  Each expert
count is its own compiled program (the parameter shapes change); the seeds of
one count are members of that program.
"""

from slbjax.experiments.imoe_ul import get_config as _ul_config


def get_config(smoke: bool = False):
    return _ul_config(smoke)


def grid(smoke: bool = False) -> dict[str, list[int]]:
    """The swept values, typed as the config field."""
    return {"model.num_experts": [3, 5] if smoke else [3, 4, 5, 6, 7, 8]}
