"""How close generated pulse features come to measured ones at one SOC level."""

from __future__ import annotations

import numpy as np

from slbjax.evaluate import metrics

KL_STD_FLOOR_V = 1e-4  # 0.1 mV, the workbooks' resolution


def gaussian_kl(measured: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """[F] KL(measured || generated) of Gaussians fitted per feature to [n, F] rows.

    The standard deviations are floored at :data:`KL_STD_FLOOR_V`.
    """
    m1, s1 = measured.mean(0), np.maximum(measured.std(0), KL_STD_FLOOR_V)
    m2, s2 = generated.mean(0), np.maximum(generated.std(0), KL_STD_FLOOR_V)
    return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def generation_errors(
    generated: np.ndarray, measured: np.ndarray, paired: bool
) -> dict[str, float]:
    """Generated vs measured features at one SOC level (both [n, F], volts).

    Args:
      generated: [n, F] generated rows.
      measured: [n, F] measured rows.
      paired: generated row i was conditioned on measured row i (the paper
        protocol); otherwise each feature's sorted generated values are matched
        against its sorted measured values (quantile matching).

    Returns:
      * ``generation_mape_pct``: mean over the F per-feature MAPEs;
      * ``generation_mape_feature_std_pct``: std over the F per-feature MAPEs
        (the error bars of the paper's Fig. 3d);
      * ``generation_kl``: mean over features of :func:`gaussian_kl`;
      * ``gen_mape_U<j>_pct``: the MAPE of feature j alone (the paper's Fig. 3b
        heatmap).
    """
    if not paired:
        generated, measured = np.sort(generated, axis=0), np.sort(measured, axis=0)
    per_feature = metrics.mape_pct(generated, measured, axis=0)
    return {
        "generation_mape_pct": float(per_feature.mean()),
        "generation_mape_feature_std_pct": float(per_feature.std()),
        "generation_kl": float(gaussian_kl(measured, generated).mean()),
        **{f"gen_mape_U{j + 1}_pct": float(v) for j, v in enumerate(per_feature)},
    }
