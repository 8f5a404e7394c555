"""iMOE-woFO ablation: no future operating conditions (Huang, Tao et al. 2026, Fig. 5a).

Command: ``slbjax run imoe-wofo`` (UL-NCA CY25-05_1; other groups as for
``imoe-linear``).

The head sees the trend alone, not the assumed future load
(``model.use_load=false``); everything else as ``imoe-ul``.  Paper, Fig. 5a
(authors' figure data, ``slbjax.paper_reference.FIG5A``): UL-NCA CY25-025_1
2.22 ± 2.41 % against iMOE's 0.93 %; CY25-05_1 0.37 ± 0.07 % against 0.88 %.
"""

import dataclasses

from slbjax.experiments.imoe_ul import get_config as _ul_config


def get_config(smoke: bool = False):
    cfg = _ul_config(smoke)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_load=False))
