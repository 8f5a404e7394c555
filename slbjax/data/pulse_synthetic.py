"""A synthetic pulse-test cohort: U1..U21 from SOC and SOH by a Thevenin model.

The embedded default data of the ``cvae-synthetic`` experiment, so that the
CVAE pipeline runs without the published workbooks.  Each cell gets an SOH and
slightly scattered parameters; at every SOC level (5, 10, ..., 50 % of the
nominal capacity) the published pulse protocol is simulated on a first-order
equivalent circuit (open-circuit voltage + ohmic resistance R0 + one RC pair
R1/tau):

* the cell's true state of charge is ``x = SOC / SOH`` (SOC is counted against
  the nominal capacity, so an aged cell is fuller at the same nominal SOC);
* ``U1`` is the rested voltage OCV(x);
* for each amplitude 0.5C, 1C, 1.5C: a 3 s charging pulse, a 45 s rest, a 3 s
  discharging pulse, a 45 s rest; the start and end voltage of each step give
  8 values per amplitude (``U2``-``U9``, ``U10``-``U17``, ``U18``-``U21`` as
  far as 1.5C goes), as in the published feature definition;
* R0 and R1 grow as SOH falls and towards low SOC; a Gaussian measurement noise
  (1 mV by default) is added to every value.

Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import numpy as np

from slbjax.data.pulse import NUM_FEATURES, SOC_LEVELS_PCT, PulseData

AMPLITUDES_C = (0.5, 1.0, 1.5)
PULSE_S = 3.0
REST_S = 45.0


def ocv(x: np.ndarray) -> np.ndarray:
    """Open-circuit voltage (V) of an NMC-like cell at true state of charge ``x`` (0..1)."""
    x = np.clip(x, 0.0, 1.0)
    return 3.30 + 0.62 * x + 0.28 * (1.0 - np.exp(-x / 0.07)) + 0.12 * x**4


def _simulate(x0, soh, r0, r1, tau):
    """U1..U21 of one cell at one SOC level (all scalars)."""
    x, v1 = x0, 0.0
    out = [ocv(x)]  # U1: rested voltage before the first pulse
    for amp in AMPLITUDES_C:
        for current, duration in ((amp, PULSE_S), (0.0, REST_S), (-amp, PULSE_S), (0.0, REST_S)):
            out.append(ocv(x) + v1 + current * r0)  # start of the step
            decay = np.exp(-duration / tau)
            x = x + current * duration / 3600.0 / soh
            v1 = v1 * decay + current * r1 * (1.0 - decay)
            out.append(ocv(x) + v1 + current * r0)  # end of the step
    return np.asarray(out[:NUM_FEATURES])


def make_cohort(
    n_cells: int = 48,
    seed: int = 0,
    *,
    soc_levels_pct: tuple[int, ...] = SOC_LEVELS_PCT,
    soh_range: tuple[float, float] = (0.70, 0.98),
    noise_v: float = 0.001,
) -> PulseData:
    """Simulates ``n_cells`` cells at every SOC level.

    Args:
      n_cells: number of cells (identities ``SYN000``, ``SYN001``, ...).
      seed: seed of every random draw (SOH, parameter scatter, noise).
      soc_levels_pct: SOC levels in percent of the nominal capacity.
      soh_range: SOH drawn uniformly in this range.
      noise_v: standard deviation of the measurement noise (V).

    Returns:
      ``n_cells * len(soc_levels_pct)`` rows, ordered cell by cell then SOC.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    rng = np.random.default_rng(seed)
    soh = rng.uniform(*soh_range, size=n_cells)
    scatter = rng.normal(1.0, 0.04, size=(n_cells, 3))
    feats, socs, sohs, cells = [], [], [], []
    for i in range(n_cells):
        fade = 1.0 - soh[i]
        for level in soc_levels_pct:
            soc = level / 100.0
            x = soc / soh[i]
            low_soc = np.exp(-x / 0.12)
            r0 = 0.040 * (1.0 + 2.5 * fade) * (1.0 + 0.5 * low_soc) * scatter[i, 0]
            r1 = 0.025 * (1.0 + 3.5 * fade) * (1.0 + 0.9 * low_soc) * scatter[i, 1]
            tau = 8.0 * (1.0 + 0.8 * fade) * scatter[i, 2]
            feats.append(_simulate(x, soh[i], r0, r1, tau))
            socs.append(soc)
            sohs.append(soh[i])
            cells.append(f"SYN{i:03d}")
    features = np.asarray(feats) + rng.normal(0.0, noise_v, size=(len(feats), NUM_FEATURES))
    cell = np.asarray(cells, dtype=object)
    return PulseData(
        battery="synthetic",
        source="synthetic",
        sheet="",
        features=features,
        soc=np.asarray(socs, np.float64),
        soh=np.asarray(sohs, np.float64),
        cell=cell,
        sample=cell.copy(),
        row=np.full(len(feats), -1, np.int64),
        notes=(f"synthetic cohort: {n_cells} cells, seed {seed}, noise {noise_v * 1000:g} mV",),
    )
