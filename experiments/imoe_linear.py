"""iMOE-linear ablation (Huang, Tao et al. 2026, Fig. 5a).

Command: ``slbjax run imoe-linear`` (UL-NCA CY25-05_1; ``--set
data.dataset=LSD --set data.skip_first=1`` or another ``data.condition`` for
the other groups).

The AMDP (router + experts) is replaced by one linear map from the Q-V curve
to the L-long trend (``model.router=linear``); features are not used.  Head,
loss, splits and early stopping are those of ``imoe-ul``.  Paper, Fig. 5a
(authors' figure data, ``slbjax.paper_reference.FIG5A``): UL-NCA CY25-05_1
0.47 ± 0.18 % against iMOE's 0.88 %, so the linear variant is not worse on
every condition; where it is, its seed spread is large (CY25-025_1:
1.58 ± 1.58 % against 0.93 %).
"""

import dataclasses

from slbjax.experiments.imoe_ul import get_config as _ul_config


def get_config(smoke: bool = False):
    cfg = _ul_config(smoke)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, router="linear"))
