"""Generative SOH estimation on the embedded synthetic pulse cohort (no data needed).

The pipeline of ``cvae-pulse`` (Tao et al., Nat. Commun. 2024) on a synthetic
cohort: U1..U21 simulated from SOC and SOH by an equivalent-circuit model of
the published pulse protocol (slbjax/data/pulse_synthetic.py), 48 cells at
SOC 5..50 %.  It exercises training, generation at unseen SOC, both
extrapolation variants and both SOH protocols end to end.

Run::

    slbjax run cvae-synthetic
    slbjax run cvae-synthetic --smoke

There is no paper number for these data; it is a self-contained check (phase 2
should be well below phase 1 in the extrapolation cases when generation works).
"""

from __future__ import annotations

import dataclasses

from slbjax.configs.cvae import CvaeConfig, CvaeData, CvaeDownstream, CvaeModel, CvaeTrain


def get_config(smoke: bool = False) -> CvaeConfig:
    """48 synthetic cells, the paper's model and training; ``smoke``: 12 cells, tiny model."""
    cfg = CvaeConfig(data=CvaeData(battery="synthetic"))
    if smoke:
        cfg = dataclasses.replace(
            cfg,
            data=CvaeData(battery="synthetic", synthetic_cells=12),
            model=CvaeModel(embed_dim=16, intermediate_dim=16),
            train=CvaeTrain(epochs=2, batch_size=16, fast_compile=True),
            downstream=CvaeDownstream(n_estimators=5),
        )
    return cfg
