"""iMOE on TPSL (``data.subset`` Fixed / Arbitrary): what the published files allow.

Command: ``slbjax run imoe-tpsl --set data.subset=Fixed``.

The reference split lists 11 + 2 + 4 (Fixed) and 38 + 2 + 13 (Arbitrary)
cells, but the published data hold ONE cell per condition (Fixed #6,
Arbitrary #1), both on the training side.  So validation and test sets cannot
be built: this run trains on the one cell's first 19 windows (as the code
does) with 6 features (no relaxation data), keeps the parameters after
``train.epochs`` epochs, reports training-fit metrics, and leaves every test
metric null.  No paper number is reproduced or claimed.  Supply the other
cells' folders with ``--data-dir`` and the full split is used.
"""

from slbjax.config import replace
from slbjax.configs.imoe import ImoeConfig, ImoeData, ImoeModel, ImoeTrain


def get_config(smoke: bool = False) -> ImoeConfig:
    cfg = ImoeConfig(
        data=ImoeData(dataset="TPSL", subset="Fixed", max_windows_per_cell=19),
        model=ImoeModel(),
        train=ImoeTrain(epochs=1000, patience=500),
    )
    if smoke:  # the same run at toy size
        cfg = replace(cfg, {"model.hidden": 16, "train.epochs": 3, "train.patience": 3,
                            "train.chunk": 1})
    return cfg
