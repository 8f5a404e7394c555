"""Cases and members of the generative SOH study (Tao et al., Nat. Commun. 2024), pure numpy.

A *case* trains on the rows at a few SOC levels
(:data:`~slbjax.configs.cvae.CASE_TRAIN_SOC_PCT`) and is scored at the other
levels.  A *member* is one CVAE training of the run's single program: one
(case, seed index, condition normaliser).  Both SOH protocols share a member
when their condition normalisers are equal, else each gets its own.

Row masks are [N] bool over the rows of a :class:`~slbjax.data.pulse.PulseData`;
feature normalisers are [F] arrays, condition normalisers [C] = [2] (SOC, SOH).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from slbjax.configs.cvae import CASE_TRAIN_SOC_PCT, EXTRAPOLATION_CASES, PROTOCOLS, CvaeConfig
from slbjax.data.pulse import PulseData
from slbjax.errors import DataError

# the authors' "physic_weight": mean U change (V) between adjacent 5 % levels
AUTHORS_SHIFT_WEIGHT_V = {"NMC2.1": 0.043, "NMC21": 0.04, "LFP": 0.0295, "LMO": 0.095}


@dataclasses.dataclass(frozen=True)
class CasePlan:
    """Rows and constants of one SOC case.

    Attributes:
      case: 0..7.
      train_soc_pct, test_soc_pct: the training and the unseen SOC levels (%).
      extrapolation: whether the unseen levels lie outside the training range (cases 4-7).
      base_soc_pct: the authors' anchor of ``authors_shift``: the second training level.
      train_rows: [N] bool, rows the CVAE and the phase-1 forest train on.
      eval_rows: [N] bool, rows that may be scored (all, or the held-out cells).
      t_mean, t_logvar: the eq. 8-9 factors mean(test SOC) / mean(train SOC)
        and var(test SOC) / var(train SOC).
      shift_weight_v: ``w`` of ``authors_shift`` (V per 5 % SOC).
    """

    case: int
    train_soc_pct: tuple[float, ...]
    test_soc_pct: tuple[float, ...]
    extrapolation: bool
    base_soc_pct: float
    train_rows: np.ndarray
    eval_rows: np.ndarray
    t_mean: float
    t_logvar: float
    shift_weight_v: float


@dataclasses.dataclass(frozen=True)
class Member:
    """One CVAE training: its case, seed index, SOH protocols and normalisers.

    Attributes:
      case: the case whose training rows it trains on.
      seed_index: 0 .. ``train.ensemble_size`` - 1.
      protocols: the SOH protocols (:data:`~slbjax.configs.cvae.PROTOCOLS`) it serves.
      feature_lo, feature_hi: [F] feature min-max normaliser.
      cond_lo, cond_hi: [2] (SOC, SOH) min-max normaliser.
    """

    case: int
    seed_index: int
    protocols: tuple[str, ...]
    feature_lo: np.ndarray
    feature_hi: np.ndarray
    cond_lo: np.ndarray
    cond_hi: np.ndarray


def fit_minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise (min, max), each [D], of ``x`` [N, D] (scikit-learn's MinMaxScaler fit)."""
    x = np.asarray(x, np.float64)
    return x.min(axis=0), x.max(axis=0)


def _cell_split(data: PulseData, fraction: float, seed: int) -> np.ndarray:
    """[N] bool: rows of held-out cells (all False when fraction == 0)."""
    if fraction <= 0:
        return np.zeros(data.num_rows, bool)
    cells = np.array(sorted(set(data.cell.tolist())), dtype=object)
    n_test = min(len(cells) - 1, max(1, round(fraction * len(cells))))
    rng = np.random.default_rng(seed)
    held = set(cells[rng.permutation(len(cells))[:n_test]].tolist())
    return np.array([c in held for c in data.cell], bool)


def _estimate_shift_weight(data: PulseData, rows: np.ndarray, levels: tuple[float, ...]) -> float:
    """Mean U change per 5 % SOC between adjacent training levels (the authors' w)."""
    means = [data.features[rows & (data.soc_pct == lv)].mean() for lv in levels]
    slopes = [
        (b - a) / (lb - la)
        for a, b, la, lb in zip(means, means[1:], levels, levels[1:], strict=False)
    ]
    return float(np.mean(slopes) * 5.0)


def plan_cases(cfg: CvaeConfig, data: PulseData) -> list[CasePlan]:
    """Training / test rows and extrapolation constants of every configured case.

    Raises:
      DataError: a case trains on an SOC level the data do not have.
    """
    levels = data.soc_levels_pct()
    held = _cell_split(data, cfg.data.test_cell_fraction, cfg.data.split_seed)
    eval_rows = held if held.any() else np.ones(data.num_rows, bool)
    soc_pct = data.soc_pct
    plans = []
    for case in cfg.data.cases:
        train_levels = tuple(float(x) for x in CASE_TRAIN_SOC_PCT[case])
        missing = [lv for lv in train_levels if lv not in levels]
        if missing:
            raise DataError(
                data.source,
                f"case {case} trains on SOC levels {list(CASE_TRAIN_SOC_PCT[case])} % but the data "
                f"have no rows at {missing} % (levels present: {levels})",
                field="SOC",
            )
        test_levels = tuple(lv for lv in levels if lv not in train_levels)
        train_rows = np.isin(soc_pct, train_levels) & ~held
        test_rows = np.isin(soc_pct, test_levels) & eval_rows
        soc_train, soc_test = data.soc[train_rows], data.soc[test_rows]
        var_train = float(np.var(soc_train))
        if cfg.generation.shift_weight_v is not None:
            w = float(cfg.generation.shift_weight_v)
        elif data.battery in AUTHORS_SHIFT_WEIGHT_V:
            w = AUTHORS_SHIFT_WEIGHT_V[data.battery]
        else:
            w = _estimate_shift_weight(data, train_rows, train_levels)
        plans.append(
            CasePlan(
                case=case,
                train_soc_pct=train_levels,
                test_soc_pct=test_levels,
                extrapolation=case in EXTRAPOLATION_CASES,
                base_soc_pct=train_levels[1] if len(train_levels) > 1 else train_levels[0],
                train_rows=train_rows,
                eval_rows=eval_rows,
                t_mean=float(soc_test.mean() / soc_train.mean()) if soc_test.size else 1.0,
                t_logvar=float(np.var(soc_test) / var_train)
                if soc_test.size and var_train > 0
                else 1.0,
                shift_weight_v=w,
            )
        )
    return plans


def _condition_scalers(data: PulseData, plan: CasePlan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(lo, hi), each [2], of the (SOC, SOH) normaliser for each SOH protocol."""
    cond = data.conditions
    # the authors: fitted on the training conditions stacked with all rows' conditions
    paper = fit_minmax(np.vstack([cond[plan.train_rows], cond]))
    # honest: SOC over the design's levels, SOH over the training rows only
    socs = np.concatenate([data.soc[plan.train_rows], np.asarray(plan.test_soc_pct) / 100.0])
    sohs = data.soh[plan.train_rows]
    honest = (np.array([socs.min(), sohs.min()]), np.array([socs.max(), sohs.max()]))
    return {"test_rows": paper, "train": honest}


def plan_members(cfg: CvaeConfig, data: PulseData, plans: list[CasePlan]) -> list[Member]:
    """One member per (case, seed index, distinct condition normaliser)."""
    members = []
    for plan in plans:
        f_lo, f_hi = fit_minmax(data.features[plan.train_rows])
        scalers = _condition_scalers(data, plan)
        for s in range(cfg.train.ensemble_size):
            same = all(
                np.array_equal(a, b)
                for a, b in zip(scalers["test_rows"], scalers["train"], strict=True)
            )
            groups = [PROTOCOLS] if same else [(p,) for p in PROTOCOLS]
            for protos in groups:
                lo, hi = scalers[protos[0]]
                members.append(Member(plan.case, s, protos, f_lo, f_hi, lo, hi))
    return members


def member_index(members: list[Member], case: int, seed_index: int, protocol: str) -> int:
    """Position in ``members`` of the member serving (case, seed index, SOH protocol).

    Raises:
      KeyError: no member serves it.
    """
    for i, m in enumerate(members):
        if m.case == case and m.seed_index == seed_index and protocol in m.protocols:
            return i
    raise KeyError((case, seed_index, protocol))


def member_arrays(
    cfg: CvaeConfig, data: PulseData, plans: list[CasePlan], members: list[Member]
) -> dict[str, np.ndarray]:
    """The fields of :class:`slbjax.train.cvae.MemberInputs` except the keys, for M members.

    Returns:
      ``features`` [N, F], ``conditions`` [N, 2] (raw, shared), ``train_mask``
      [M, N] bool, ``feature_lo``/``feature_hi`` [M, F], ``cond_lo``/``cond_hi``
      [M, 2], ``w_rec``/``w_kl`` [M].
    """
    by_case = {p.case: p for p in plans}
    n = len(members)
    return {
        "features": data.features,
        "conditions": data.conditions,
        "train_mask": np.stack([by_case[m.case].train_rows for m in members]),
        "feature_lo": np.stack([m.feature_lo for m in members]),
        "feature_hi": np.stack([m.feature_hi for m in members]),
        "cond_lo": np.stack([m.cond_lo for m in members]),
        "cond_hi": np.stack([m.cond_hi for m in members]),
        "w_rec": np.full(n, cfg.train.w_rec),
        "w_kl": np.full(n, cfg.train.w_kl),
    }
