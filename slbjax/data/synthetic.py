"""Built-in synthetic cohort of NCA/graphite 18650-like cells for the iMOE pipeline.

``slbjax run imoe-synthetic`` needs no data: :func:`generate_cohort` draws cells
that look like the UL-NCA files (3.3 Ah cells, CC-CV charge to 4.2 V, Q-V
partial-charge curves on ``linspace(3.6, 4.15, 50)``, 14-point relaxation after
charge, fade to 70-80 % of the initial capacity) but come from a small,
documented physical model, so a model trained on them has a real signal to read.
Everything is vectorised over cells (and cycles) with numpy; a cohort of
thousands of cells takes seconds.

Load schedule ("future load").  Each cell runs 1..``max_stages`` stages (second
life sees changing duty); stage boundaries are uniform in 10..80 % of
``max_cycles``, and every stage draws a charge C-rate ``I_c``, a discharge
C-rate ``I_d`` and an ambient temperature ``T`` from the given choices.
Currents in A are ``I * NOMINAL_AH``.

Degradation modes, per cell ``c`` and cycle ``n`` (fractions; sums run over the
cycles ``i <= n``; ``A(E) = exp(E / R_g * (1/T_ref - 1/T))`` is the Arrhenius
factor, ``T_ref = 25 degC``; ``m_*`` are lognormal cell-to-cell multipliers with
a shared and an individual part)::

    t_i     = 1/I_c + 1/I_d + 1 h                       (cycle duration)
    LLI_sei = k_sei m_sei sqrt(sum A(E_sei) t_i)        (SEI growth, sqrt-time)
    LLI_cyc = k_cyc m_cyc sum A(E_cyc) I_d^0.5 (I_c/0.5)^0.3  (cracking, fresh SEI)
    LLI_pl  = k_pl m_pl sum A(-E_pl) max(I_c - 0.3, 0)^2      (plating: cold, fast charge)
    LAM_PE  = k_pe m_pe sum A(E_lam) I_d^0.7
    L_NE    = k_ne m_ne sum A(E_lam) ((I_c/0.5 + I_d) / 2)^0.8
    K       = K_max tanh(g_knee (w softplus((L_NE - theta_c) / w))^2 / K_max)  (knee)
    LLI     = LLI_sei + LLI_cyc + LLI_pl + K
    LAM_NE  = L_NE + K / 2
    R       = R_0c A(-E_R) (1 + a_L LLI + a_M (LAM_PE + LAM_NE))

The knee is the plating-driven acceleration that follows once the negative
electrode has lost enough active material (``L_NE`` past a lognormal,
cell-specific threshold ``theta_c``); since ``L_NE`` grows faster under harsh
loads, so does the onset.  ``K`` saturates at ``K_max`` so that a cell cycled on
past its end of life (to reach ``min_cycles``) keeps a plausible capacity.  On
average higher temperature and higher C-rates fade faster; the plating term
only softens the temperature effect for fast charging.  (In the real UL-NCA
data the 25 degC cells happen to fade faster than the 45 degC ones.)  All
constants and spreads are fields of :class:`SyntheticPhysics`.

Electrodes: PyBaMM's Chen 2020 LG M50 fits (NMC811 against graphite), with the
sharp high-voltage step of the positive electrode smoothed (the UL-NCA Q-V
curves flatten towards 4.15 V instead of showing a peak) and a steep drop at
full lithiation added::

    U_p(x) = -0.809 x + 4.4875 - 0.0428 tanh(18.5138 (x - 0.5542))
             - 0.148 tanh((x - 0.312) / 0.1) - 0.08 exp((x - 1) / 0.02)
    U_n(y) = 1.9793 exp(-39.3631 y) + 0.2482 - 0.0909 tanh(29.8538 (y - 0.1234))
             - 0.04478 tanh(14.9159 (y - 0.2769)) - 0.0205 tanh(30.4444 (y - 0.6103))

A fresh cell of capacity ``Q_0`` uses ``x`` from 0.9084 to 0.3058 (where the
OCV is 4.2 V) and ``y`` from 0.0279 to 0.9014, giving ``C_p0 = Q_0 / 0.6026``
and ``C_n0 = rho Q_0 / 0.8735`` (Ah per unit stoichiometry; ``rho`` a lognormal
N/P spread) and lithium inventory ``n_0 = 0.9084 C_p0 + 0.0279 C_n0``.  Ageing
gives ``C_p = C_p0 (1 - LAM_PE)``, ``C_n = C_n0 (1 - LAM_NE)``,
``n_Li = n_0 - LLI Q_0``, and at negative-electrode stoichiometry ``y``::

    x(y)   = (n_Li - y C_n) / C_p,    OCV(y) = U_p(x(y)) - U_n(y),   q(y) = y C_n
    R(y)   = R (1 + 2 exp(-y / 0.08))                (higher resistance when empty)
    V_chg  = OCV + I_c Q_nom R(y),    V_dis = OCV - I_d Q_nom R(y)

Per cycle: the discharge at ``I_d`` stops where ``V_dis = 2.65 V`` (``y_bot``);
the CC-CV charge ends where ``OCV = 4.2 V - 0.05 C * R`` (``y_top``), so
``capacity_ah = C_n (y_top - y_bot)`` (lower at higher ``I_d`` and ``R``).  The
Q-V curve is the CC charge from ``y_bot``: ``Q(v) = C_n max(y(V_chg = v), y_bot)``
at the 50 grid voltages, re-based to ``Q(3.6 V) = 0``; LLI shifts it, LAM shrinks
it and resistance stretches it, so both its shape and its end value follow the
state.  The relaxation after the charge (14 samples, ``t = 1..14`` min) is::

    V(t) = 4.2 - a + a (w exp(-t / tau_1) + (1 - w) exp(-t / tau_2))
    a = a_0 (R / R_ref)^0.6 (I_c / 0.5)^0.15,  tau_1 = tau_10 (R / R_ref)^0.3,
    tau_2 = tau_20 A(-E_D)

(``R`` at the cycle temperature, ``R_ref`` = 35 mOhm).  Measurement noise
(Gaussian, scaled by ``noise``) is added to capacity, to relaxation and to Q-V
(a per-cycle gain error plus small white noise; then made monotone and re-based
again).  A cell ends at the first cycle whose noise-free capacity is below its
end-of-life fraction (drawn from ``eol_fraction``) of its first capacity, but
not before ``min_cycles`` nor after ``max_cycles``.

Numerics: the two ends of each cycle are roots found by Illinois iterations
on all cells x cycles at once; Q-V curves are the terminal voltage on a shared
161-point ``y`` grid (float32) inverted at the 50 voltages by counting and
linear interpolation (error below about 1 mAh).

Random numbers come from ``np.random.default_rng([seed, k])`` streams drawn in
cell order, so cell ``SYN-0003`` is the same for any cohort size with one seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from slbjax.data.cells import QV_POINTS, Cell
from slbjax.errors import ConfigError

__all__ = [
    "NOMINAL_AH",
    "RELAX_TIMES_MIN",
    "VOLTAGE_GRID",
    "SyntheticPhysics",
    "cohort_split",
    "generate_cohort",
    "ne_ocp",
    "pe_ocp",
]

NOMINAL_AH = 3.3  # rated capacity; a C-rate of 1 is 3.3 A
V_MAX = 4.2  # charge (CV) voltage
V_MIN = 2.65  # discharge cut-off
VOLTAGE_GRID = np.linspace(3.6, 4.15, QV_POINTS)  # [50] V, as assumed for UL-NCA
RELAX_TIMES_MIN = np.arange(1.0, 15.0)  # [14] minutes after the end of charge
MAX_STAGES = 4  # most load stages a cell can have

_GAS = 8.314  # J/(mol K)
_T_REF = 298.15  # K
_X0, _X100 = 0.9084, 0.3058  # fresh positive-electrode stoichiometry at 0 % / 100 % SOC
_Y0, _Y100 = 0.0279, 0.9014  # fresh negative-electrode stoichiometry at 0 % / 100 % SOC
_R_REF = 0.035  # Ohm, reference resistance of the relaxation law
_BLOCK_ROWS = 8192  # cycles per block of Q-V work (bounds temporary memory)
_CV_CUTOFF_C = 0.05  # CV phase ends at C/20

# Shared negative-electrode stoichiometry grid on which Q-V curves are computed.
_Y_GRID = np.linspace(0.0, 1.0, 161)
_Y_STEP = float(_Y_GRID[1] - _Y_GRID[0])


def pe_ocp(x: np.ndarray) -> np.ndarray:
    """Open-circuit potential (V vs Li) of the positive electrode.

    Args:
      x: [...] lithium fraction of the positive electrode (about 0.31 full, 0.91 empty).

    Returns:
      [...] potential in V, decreasing in ``x``.
    """
    return (
        -0.8090 * x
        + 4.4875
        - 0.0428 * np.tanh(18.5138 * (x - 0.5542))
        - 0.148 * np.tanh((x - 0.312) / 0.1)
        - 0.08 * np.exp(np.minimum((x - 1.0) / 0.02, 30.0))
    )


def ne_ocp(y: np.ndarray) -> np.ndarray:
    """Open-circuit potential (V vs Li) of the graphite negative electrode.

    Args:
      y: [...] lithium fraction of the negative electrode (about 0.03 empty, 0.90 full).

    Returns:
      [...] potential in V, decreasing in ``y``.
    """
    return (
        1.9793 * np.exp(-39.3631 * y)
        + 0.2482
        - 0.0909 * np.tanh(29.8538 * (y - 0.1234))
        - 0.04478 * np.tanh(14.9159 * (y - 0.2769))
        - 0.0205 * np.tanh(30.4444 * (y - 0.6103))
    )


def _r_shape(y: np.ndarray) -> np.ndarray:
    """[...] resistance multiplier at negative-electrode stoichiometry ``y`` (1 when full)."""
    return 1.0 + 2.0 * np.exp(-y / 0.08)


_Y_GRID32 = _Y_GRID.astype(np.float32)
_UN_GRID32 = ne_ocp(_Y_GRID).astype(np.float32)
_RS_GRID32 = _r_shape(_Y_GRID).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SyntheticPhysics:
    """Constants of the synthetic cell model (see the module docstring for the equations).

    Rate constants ``k_*`` are per cycle (``k_sei`` per sqrt(hour)) at 25 degC and
    0.5C/1C; activation energies are in J/mol; ``*_sd`` are standard deviations
    of log multipliers (or of the value itself for ``q0_sd_ah``).
    """

    q0_ah: float = 3.34
    q0_sd_ah: float = 0.035
    np_ratio_sd: float = 0.02
    r0_ohm: float = 0.035
    r0_sd: float = 0.08
    k_sei: float = 1.4e-3
    k_cyc: float = 2.2e-4
    k_plating: float = 3.5e-4
    k_lam_pe: float = 1.0e-4
    k_lam_ne: float = 1.4e-4
    ea_sei: float = 35e3
    ea_cyc: float = 25e3
    ea_plating: float = 30e3
    ea_lam: float = 20e3
    ea_r: float = 20e3
    ea_diffusion: float = 15e3
    rate_sd_shared: float = 0.15
    rate_sd: float = 0.15
    knee_theta: float = 0.03
    knee_sd: float = 0.25
    knee_width: float = 0.003
    knee_gain: float = 250.0
    knee_max: float = 0.3
    r_growth_lli: float = 3.0
    r_growth_lam: float = 2.0
    relax_amp_v: float = 0.045
    relax_tau_fast_min: float = 1.2
    relax_tau_slow_min: float = 10.0
    relax_fast_weight: float = 0.45
    noise_capacity_ah: float = 0.003
    noise_qv_ah: float = 0.0003
    noise_qv_gain: float = 0.001
    noise_relax_v: float = 0.0003


def _arrhenius(ea: float, temp_k: np.ndarray) -> np.ndarray:
    return np.exp(ea / _GAS * (1.0 / _T_REF - 1.0 / temp_k))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def _schedule(u: np.ndarray, num_cycles: int, max_stages: int, choices) -> tuple[np.ndarray, ...]:
    """Per-cycle load of every cell.

    Args:
      u: [C, 1 + 4 * MAX_STAGES] uniforms in [0, 1).
      num_cycles: M, cycles simulated.
      max_stages: most stages a cell gets (1..MAX_STAGES).
      choices: (charge rates, discharge rates, temperatures) to draw from.

    Returns:
      charge C-rate, discharge C-rate, temperature (degC), each [C, M] float64.
    """
    s = MAX_STAGES
    n_stages = 1 + np.floor(u[:, 0] * max_stages).astype(np.int64)  # [C]
    lo, hi = 0.1 * num_cycles, 0.8 * num_cycles
    bounds = np.sort(lo + (hi - lo) * u[:, 1:s], axis=1)  # [C, S-1]
    bounds = np.where(np.arange(1, s)[None, :] < n_stages[:, None], bounds, np.inf)
    n = np.arange(num_cycles, dtype=np.float64)
    stage = (n[None, :, None] >= bounds[:, None, :]).sum(axis=2)  # [C, M]
    out = []
    for k, values in enumerate(choices):
        values = np.asarray(values, dtype=np.float64)
        cols = u[:, s + k * s : s + (k + 1) * s]  # [C, S]
        pick = values[np.minimum(np.floor(cols * len(values)).astype(np.int64), len(values) - 1)]
        out.append(np.take_along_axis(pick, stage, axis=1))
    return tuple(out)


def _degradation(p: SyntheticPhysics, z: np.ndarray, ic, id_, temp_c) -> dict[str, np.ndarray]:
    """Degradation modes over the cycles (module docstring equations).

    Args:
      p: model constants.
      z: [C, 10] standard normals (columns 3..9 used here).
      ic, id_, temp_c: [C, M] charge C-rate, discharge C-rate, temperature (degC).

    Returns:
      dict of [C, M] arrays: ``lli``, ``lam_pe``, ``lam_ne`` (fractions) and
      ``r_growth`` (resistance relative to fresh, at 25 degC).
    """
    temp_k = temp_c + 273.15
    mult = np.exp(p.rate_sd_shared * z[:, 3:4] + p.rate_sd * z[:, 4:9])  # [C, 5]
    hours = 1.0 / ic + 1.0 / id_ + 1.0
    lli_sei = p.k_sei * mult[:, 0:1] * np.sqrt(np.cumsum(_arrhenius(p.ea_sei, temp_k) * hours, 1))
    cyc = _arrhenius(p.ea_cyc, temp_k) * np.sqrt(id_) * (ic / 0.5) ** 0.3
    lli_cyc = p.k_cyc * mult[:, 1:2] * np.cumsum(cyc, 1)
    plating = _arrhenius(-p.ea_plating, temp_k) * np.maximum(ic - 0.3, 0.0) ** 2
    lli_pl = p.k_plating * mult[:, 2:3] * np.cumsum(plating, 1)
    a_lam = _arrhenius(p.ea_lam, temp_k)
    lam_pe = p.k_lam_pe * mult[:, 3:4] * np.cumsum(a_lam * id_**0.7, 1)
    l_ne = p.k_lam_ne * mult[:, 4:5] * np.cumsum(a_lam * ((ic / 0.5 + id_) / 2.0) ** 0.8, 1)
    theta = p.knee_theta * np.exp(p.knee_sd * z[:, 9:10])
    knee = p.knee_gain * (p.knee_width * _softplus((l_ne - theta) / p.knee_width)) ** 2
    # remove the (tiny) knee value before cycling so that fresh cells start unaged
    knee = knee - p.knee_gain * (p.knee_width * _softplus(-theta / p.knee_width)) ** 2
    knee = p.knee_max * np.tanh(knee / p.knee_max)
    lli = lli_sei + lli_cyc + lli_pl + knee
    lam_ne = l_ne + 0.5 * knee
    r_growth = 1.0 + p.r_growth_lli * lli + p.r_growth_lam * (lam_pe + lam_ne)
    return {"lli": lli, "lam_pe": lam_pe, "lam_ne": lam_ne, "r_growth": r_growth}


def _solve_y(f, target: np.ndarray, lo0: float, hi0: float, iters: int = 30) -> np.ndarray:
    """Root ``y`` in [0, 1] of the increasing function ``f(y) = target``, per element.

    Illinois (modified regula falsi) in float32, starting from the bracket
    [lo0, hi0] and widening it to [0, 1] where it does not hold the root; where
    ``f`` stays below (above) the target on [0, 1] the result is 1 (0).

    Args:
      f: maps a float32 array shaped like ``target`` to function values.
      target: [...] float32 values to reach.
      lo0, hi0: initial bracket.
      iters: most iterations; an element stops at ``|f - target| < 2e-6`` V.

    Returns:
      [...] float64 roots.
    """
    shape = target.shape
    lo = np.full(shape, lo0, dtype=np.float32)
    hi = np.full(shape, hi0, dtype=np.float32)
    f_lo = f(lo) - target
    f_hi = f(hi) - target
    if np.any(f_lo > 0):
        lo = np.where(f_lo > 0, np.float32(0.0), lo)
        f_lo = np.where(f_lo > 0, f(lo) - target, f_lo)
    if np.any(f_hi < 0):
        hi = np.where(f_hi < 0, np.float32(1.0), hi)
        f_hi = np.where(f_hi < 0, f(hi) - target, f_hi)
    out_lo = f_lo >= 0
    out_hi = f_hi <= 0
    f_lo = np.where(out_lo | out_hi, np.float32(-1.0), f_lo)
    f_hi = np.where(out_lo | out_hi, np.float32(1.0), f_hi)
    side = np.zeros(shape, dtype=np.int8)
    # An element's result is frozen when it converges, so that it does not
    # depend on the other elements (cell i is the same in any cohort).
    done = out_lo | out_hi
    res = np.zeros(shape, dtype=np.float32)
    for _ in range(iters):
        y = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        fy = f(y) - target
        new = ~done & (np.abs(fy) < 2e-6)
        res[new] = y[new]
        done |= new
        right = fy > 0  # the root is left of y: y becomes the new upper end
        # Illinois: halve the kept end's value when the same end is kept twice.
        f_lo = np.where(right & (side == 1), np.float32(0.5) * f_lo, f_lo)
        f_hi = np.where(~right & (side == -1), np.float32(0.5) * f_hi, f_hi)
        hi = np.where(right, y, hi)
        f_hi = np.where(right, fy, f_hi)
        lo = np.where(right, lo, y)
        f_lo = np.where(right, f_lo, fy)
        side = np.where(right, 1, -1).astype(np.int8)
        if done.all():
            break
    res = np.where(done, res, y)
    return np.where(out_lo, 0.0, np.where(out_hi, 1.0, res.astype(np.float64)))


def _ocv(y, n_li, c_p, c_n):
    """[...] open-circuit voltage at negative-electrode stoichiometry ``y`` (broadcasting)."""
    return pe_ocp((n_li - y * c_n) / c_p) - ne_ocp(y)


def _qv_block(n_li, c_p, c_n, ir_charge, y_bot) -> np.ndarray:
    """Q-V curves of a block of cycles (CC charge from ``y_bot``).

    The terminal voltage is evaluated on the shared grid ``_Y_GRID`` (float32,
    laid out [J, B] so that the running maximum is J fast row operations) and
    inverted at the 50 target voltages by counting the grid points below each
    target (one ``bincount``) and interpolating linearly.

    Args:
      n_li, c_p, c_n: [B] lithium inventory and electrode capacities (Ah).
      ir_charge: [B] charge current times resistance (V), before the SOC shape.
      y_bot: [B] negative-electrode stoichiometry where the charge starts.

    Returns:
      [B, 50] charge capacity (Ah) at ``VOLTAGE_GRID``, re-based to 0 at 3.6 V.
    """
    b, j, k = n_li.shape[0], _Y_GRID32.shape[0], QV_POINTS
    v = np.multiply(_Y_GRID32[:, None], (c_n / c_p).astype(np.float32)[None, :])
    np.subtract((n_li / c_p).astype(np.float32)[None, :], v, out=v)  # [J, B] x(y)
    v = pe_ocp(v)  # float32: several times faster than float64, error ~1e-6 V
    v -= _UN_GRID32[:, None]
    v += _RS_GRID32[:, None] * ir_charge.astype(np.float32)[None, :]
    for i in range(1, j):  # running maximum: V non-decreasing in y
        np.maximum(v[i], v[i - 1], out=v[i])
    # m = index of the first target above each grid voltage; counts give, per
    # target, the number of grid points below it = index of the first one at/above.
    t = v - np.float32(VOLTAGE_GRID[0])
    t *= np.float32(1.0 / (VOLTAGE_GRID[1] - VOLTAGE_GRID[0]))
    t += np.float32(1.0)
    np.clip(t, 0, k, out=t)
    m = t.astype(np.int64)
    m += (np.arange(b, dtype=np.int64) * (k + 1))[None, :]
    counts = np.bincount(m.ravel(), minlength=b * (k + 1)).reshape(b, k + 1)[:, :k]
    hi = np.cumsum(counts, axis=1)  # [B, K]
    np.minimum(hi, j - 1, out=hi)
    lo = np.maximum(hi - 1, 0)
    idx = hi * b
    idx += np.arange(b)[:, None]
    v_hi = np.take(v.ravel(), idx)
    idx -= np.where(hi > 0, b, 0)
    v_lo = np.take(v.ravel(), idx)
    span = v_hi - v_lo
    span[span <= 0] = 1.0
    frac = VOLTAGE_GRID[None, :] - v_lo
    frac /= span
    np.clip(frac, 0.0, 1.0, out=frac)
    frac *= hi - lo
    frac += lo
    y = frac * _Y_STEP  # [B, K] stoichiometry at the targets
    q = c_n[:, None] * np.maximum(y, y_bot[:, None])
    return q - q[:, :1]


def _relaxation(p: SyntheticPhysics, r_ohm, ic, temp_c) -> np.ndarray:
    """[B, 14] rest voltage after the CC-CV charge (module docstring law).

    Args:
      p: model constants.
      r_ohm: [B] cell resistance at the cycle temperature.
      ic: [B] charge C-rate.
      temp_c: [B] temperature (degC).
    """
    rel = r_ohm / _R_REF
    amp = p.relax_amp_v * rel**0.6 * (ic / 0.5) ** 0.15
    tau1 = p.relax_tau_fast_min * rel**0.3
    tau2 = p.relax_tau_slow_min * _arrhenius(-p.ea_diffusion, temp_c + 273.15)
    t = RELAX_TIMES_MIN[None, :]
    w = p.relax_fast_weight
    shape = w * np.exp(-t / tau1[:, None]) + (1 - w) * np.exp(-t / tau2[:, None])
    return V_MAX - amp[:, None] * (1.0 - shape)


def _check_args(num_cells, seed, min_cycles, max_cycles, max_stages, eol_fraction, choices, noise):
    if int(num_cells) < 1:
        raise ConfigError(f"synthetic cohort: num_cells must be at least 1, got {num_cells}")
    if int(seed) < 0:
        raise ConfigError(f"synthetic cohort: seed must be a non-negative integer, got {seed}")
    if not 2 <= min_cycles <= max_cycles:
        raise ConfigError(
            f"synthetic cohort: need 2 <= min_cycles <= max_cycles, got {min_cycles}, {max_cycles}"
        )
    if not 1 <= max_stages <= MAX_STAGES:
        raise ConfigError(
            f"synthetic cohort: max_stages must be in 1..{MAX_STAGES}, got {max_stages}"
        )
    lo, hi = eol_fraction
    if not 0.0 < lo <= hi < 1.0:
        raise ConfigError(
            f"synthetic cohort: eol_fraction must be (low, high) with 0 < low <= high < 1, "
            f"got {eol_fraction}"
        )
    for name, values in zip(
        ("charge_rates", "discharge_rates", "temperatures"), choices, strict=True
    ):
        if len(values) == 0:
            raise ConfigError(f"synthetic cohort: {name} must not be empty")
    if min(choices[0]) <= 0 or min(choices[1]) <= 0:
        raise ConfigError("synthetic cohort: charge and discharge rates must be positive")
    if not all(-30.0 <= t <= 80.0 for t in choices[2]):
        raise ConfigError("synthetic cohort: temperatures must lie in -30..80 degC")
    if not noise >= 0:
        raise ConfigError(f"synthetic cohort: noise must be >= 0, got {noise}")


def generate_cohort(
    num_cells: int,
    seed: int,
    *,
    min_cycles: int = 120,
    max_cycles: int = 400,
    charge_rates: tuple[float, ...] = (0.25, 0.5, 1.0),
    discharge_rates: tuple[float, ...] = (0.5, 1.0, 2.0),
    temperatures: tuple[float, ...] = (25.0, 35.0, 45.0),
    max_stages: int = 3,
    eol_fraction: tuple[float, float] = (0.70, 0.80),
    noise: float = 1.0,
    physics: SyntheticPhysics | None = None,
) -> list[Cell]:
    """Draws a cohort of synthetic NCA/graphite cells (model in the module docstring).

    Args:
      num_cells: C, cells to draw.
      seed: non-negative seed; equal seeds give identical cohorts, and cell ``i``
        does not depend on ``num_cells``.
      min_cycles: fewest cycles per cell (a cell that fades fast is cycled on).
      max_cycles: most cycles per cell (M); also the scale of the stage boundaries.
      charge_rates: charge C-rates a load stage draws from.
      discharge_rates: discharge C-rates a load stage draws from.
      temperatures: ambient temperatures (degC) a load stage draws from.
      max_stages: each cell gets 1..max_stages load stages (uniformly), 1..4.
      eol_fraction: (low, high) range of the per-cell end-of-life capacity fraction.
      noise: multiplier of the measurement noise (0 gives noise-free records).
      physics: model constants; ``SyntheticPhysics()`` if None.

    Returns:
      C cells named ``SYN-0000`` ..., ``dataset == source == "synthetic"``, each with
      N in [min_cycles, max_cycles] rows: ``cycle`` [N] int64 (1..N), ``qv`` [N, 50],
      ``relaxation`` N arrays of [14] V, load and ``capacity_ah`` [N] float64,
      ``valid`` [N] all True.

    Raises:
      ConfigError: on an argument out of range.
    """
    choices = (tuple(charge_rates), tuple(discharge_rates), tuple(temperatures))
    _check_args(num_cells, seed, min_cycles, max_cycles, max_stages, eol_fraction, choices, noise)
    p = physics if physics is not None else SyntheticPhysics()
    c, m = int(num_cells), int(max_cycles)
    u = np.random.default_rng([int(seed), 0]).random((c, 1 + 4 * MAX_STAGES))
    z = np.random.default_rng([int(seed), 1]).standard_normal((c, 10))

    ic, id_, temp_c = _schedule(u, m, max_stages, choices)  # [C, M] each
    deg = _degradation(p, z, ic, id_, temp_c)

    # Fresh electrodes (Ah per unit stoichiometry) and their aged values [C, M].
    q0 = p.q0_ah + p.q0_sd_ah * z[:, 0:1]
    r0 = p.r0_ohm * np.exp(p.r0_sd * z[:, 1:2])
    c_p0 = q0 / (_X0 - _X100)
    c_n0 = q0 / (_Y100 - _Y0) * np.exp(p.np_ratio_sd * z[:, 2:3])
    n_li0 = _X0 * c_p0 + _Y0 * c_n0
    c_p = c_p0 * (1.0 - deg["lam_pe"])
    c_n = c_n0 * (1.0 - deg["lam_ne"])
    n_li = n_li0 - deg["lli"] * q0
    r_ohm = r0 * deg["r_growth"] * _arrhenius(-p.ea_r, temp_c + 273.15)

    # Charge end (CV at 4.2 V down to C/20) and discharge end (2.65 V at I_d).
    f32 = {k: v.astype(np.float32) for k, v in (("n", n_li), ("p", c_p), ("c", c_n))}
    top = (V_MAX - _CV_CUTOFF_C * NOMINAL_AH * r_ohm).astype(np.float32)
    y_top = _solve_y(lambda y: _ocv(y, f32["n"], f32["p"], f32["c"]), top, 0.6, 1.0)
    ir_dis = (id_ * NOMINAL_AH * r_ohm).astype(np.float32)
    bot = np.full((c, m), V_MIN, dtype=np.float32)
    y_bot = _solve_y(
        lambda y: _ocv(y, f32["n"], f32["p"], f32["c"]) - ir_dis * _r_shape(y), bot, 0.0, 0.4
    )
    capacity = c_n * (y_top - y_bot)  # [C, M] noise-free

    # Length: first cycle below the cell's end-of-life fraction, within the bounds.
    eol = eol_fraction[0] + (eol_fraction[1] - eol_fraction[0]) * u[:, 4 * MAX_STAGES]
    below = capacity < eol[:, None] * capacity[:, :1]
    first = np.where(below.any(axis=1), below.argmax(axis=1) + 1, m)
    lengths = np.clip(first, min_cycles, m)
    keep = np.arange(m)[None, :] < lengths[:, None]  # [C, M], row-major = cell order

    # Q-V curves, relaxation and noise of the kept cycles (rows in cell order), in blocks.
    flat = [
        n_li[keep],
        c_p[keep],
        c_n[keep],
        (ic * NOMINAL_AH * r_ohm)[keep],
        y_bot[keep],
        r_ohm[keep],
        ic[keep],
        temp_c[keep],
    ]
    cap = capacity[keep]
    rows = cap.shape[0]
    qv = np.empty((rows, QV_POINTS))
    relax = np.empty((rows, RELAX_TIMES_MIN.size))
    rng = np.random.default_rng([int(seed), 2])
    for s in range(0, rows, _BLOCK_ROWS):
        sl = slice(s, s + _BLOCK_ROWS)
        n_b, p_b, c_b, ir_b, y_b, r_b, ic_b, t_b = (a[sl] for a in flat)
        q = _qv_block(n_b, p_b, c_b, ir_b, y_b)
        v = _relaxation(p, r_b, ic_b, t_b)
        if noise > 0:
            e = rng.standard_normal((q.shape[0], 2 + QV_POINTS + v.shape[1]), dtype=np.float32)
            cap[sl] += noise * p.noise_capacity_ah * e[:, 0]
            q *= 1.0 + noise * p.noise_qv_gain * e[:, 1:2]
            q += noise * p.noise_qv_ah * e[:, 2 : 2 + QV_POINTS]
            np.maximum.accumulate(q, axis=1, out=q)
            q -= q[:, :1]
            v += noise * p.noise_relax_v * e[:, 2 + QV_POINTS :]
        qv[sl] = q
        relax[sl] = v

    ic_k, id_k, t_k = flat[6], id_[keep], flat[7]
    cells = []
    start = 0
    for i, n in enumerate(lengths.tolist()):
        sl = slice(start, start + n)
        start += n
        cells.append(
            Cell(
                name=f"SYN-{i:04d}",
                source="synthetic",
                dataset="synthetic",
                cycle=np.arange(1, n + 1, dtype=np.int64),
                qv=qv[sl],
                voltage_grid=VOLTAGE_GRID.copy(),
                relaxation=tuple(relax[sl]),
                charge_current=ic_k[sl],
                discharge_current=id_k[sl],
                temperature=t_k[sl],
                capacity_ah=cap[sl],
                valid=np.ones(n, dtype=bool),
            )
        )
    return cells


def cohort_split(
    cells: list[Cell], val_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[list[Cell], list[Cell], list[Cell]]:
    """Splits a cohort into train / validation / test cells by cell index.

    Cell ``i`` goes to test if ``frac(i * phi) < test_fraction``, to validation if
    it is below ``test_fraction + val_fraction``, else to train (``phi`` the golden
    ratio conjugate).  The low-discrepancy sequence gives close to the requested
    fractions for any cohort size, and a cell's role depends only on its index,
    so it does not change when the cohort grows.

    Args:
      cells: the cohort, in index order (as from :func:`generate_cohort`).
      val_fraction: share of validation cells, in [0, 1).
      test_fraction: share of test cells, in [0, 1).

    Returns:
      (train, val, test) lists of cells, each in cohort order.

    Raises:
      ConfigError: if a fraction is negative or the two sum to 1 or more.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            "synthetic split: need val_fraction, test_fraction >= 0 with a sum below 1, "
            f"got {val_fraction}, {test_fraction}"
        )
    phi = (np.sqrt(5.0) - 1.0) / 2.0
    pos = np.mod(np.arange(len(cells)) * phi, 1.0)
    train, val, test = [], [], []
    for cell, u in zip(cells, pos.tolist(), strict=True):
        if u < test_fraction:
            test.append(cell)
        elif u < test_fraction + val_fraction:
            val.append(cell)
        else:
            train.append(cell)
    return train, val, test
