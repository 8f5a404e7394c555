"""Router weights as a table: one row per (member, sample)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from slbjax.data.windows import Windows


def router_weights_table(w: Windows, gates: np.ndarray, nominal_ah: float) -> pd.DataFrame:
    """``member, cell, start_cycle, soh_start, w0 .. w{E-1}``, members stacked.

    Expert numbers are each member's own: members of an ensemble (and runs of
    different seeds) need not agree on them (:mod:`slbjax.interpret.labels`
    matches them).

    Args:
      w: the windows the weights were computed on.
      gates: [N, M, E] router weights of N members.
      nominal_ah: rated capacity; ``soh_start`` is the start cycle's capacity over it.
    """
    n, m, e = gates.shape
    cells = np.asarray(w.cell_names, dtype=object)[w.cell_index]
    soh = np.asarray(w.target[:, 0], dtype=np.float64) / nominal_ah
    frames = [
        pd.DataFrame({"member": k, "cell": cells, "start_cycle": w.start_cycle, "soh_start": soh})
        .join(pd.DataFrame(gates[k], columns=[f"w{i}" for i in range(e)]))
        for k in range(n)
    ]
    return pd.concat(frames, ignore_index=True)
