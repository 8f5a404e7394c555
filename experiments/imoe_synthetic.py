"""iMOE on the built-in synthetic cohort (the embedded default; no data needed).

Command: ``slbjax run imoe-synthetic`` (add ``--smoke`` for a seconds-long check).

The cohort (slbjax.data.synthetic) has no paper counterpart: it exists so the
whole pipeline (features, router, recurrent head, checkpoints, predict) runs
on a fresh machine.  Expect a test MAPE of a few percent at default size.
"""

from slbjax.config import replace
from slbjax.configs.imoe import ImoeConfig, ImoeData, ImoeTrain


def get_config(smoke: bool = False) -> ImoeConfig:
    cfg = ImoeConfig(
        data=ImoeData(dataset="synthetic", synthetic_cells=60, max_windows_per_cell=40),
        train=ImoeTrain(epochs=150, patience=30, learning_rate=1e-3, chunk=10),
    )
    if smoke:  # the same run at toy size
        cfg = replace(cfg, {"data.synthetic_cells": 12, "data.horizon": 20,
                            "data.max_windows_per_cell": 20, "model.hidden": 16,
                            "train.epochs": 4, "train.patience": 4, "train.chunk": 2})
    return cfg
