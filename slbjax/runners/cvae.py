"""Runner of the generative SOH experiments (Tao et al., Nat. Commun. 2024).

Retired cells arrive at a random SOC.  Pulse features measured at a few SOC
levels train a conditional VAE; it generates features at the unseen levels,
and a random forest trained on the generated rows estimates SOH there.

One run does, for one battery type:

1. load the rows with SOC <= 50 % (published workbook or synthetic cohort);
2. train one CVAE per (case, seed) -- all of them as lanes of ONE compiled
   program (:mod:`slbjax.train.cvae`);
3. for every case and unseen SOC level generate one row per measured test row,
   under two SOH protocols and, for the extrapolation cases 4-7, two
   extrapolation methods (see below);
4. phase 1: a random forest trained on the measured rows at the training SOC
   levels; phase 2: one trained on the generated rows of the unseen level;
   both scored by SOH MAPE on the measured rows of that level;
5. write ``per_soc.csv``, ``per_case.csv``, ``history.csv``, ``report.md`` and a
   checkpoint (lane-stacked parameters + everything :func:`generate` needs),
   and return the flat metrics.

Generation variants (all are computed in every run; the metric keys have a
fixed meaning whatever the config selects):

* cases 0-3 (interpolation): decode ``z ~ N(0, I)`` at the target (SOC, SOH);
* ``authors_shift`` (cases 4-7, key without suffix, the paper's numbers):
  decode at the case's second training SOC, then add
  ``(target SOC - that SOC) * w * 20`` volts to every feature, ``w`` the
  authors' per-battery constant (0.043 NMC 2.1 Ah, 0.04 NMC 21 Ah, 0.0295 LFP,
  0.095 LMO);
* ``eq89`` (cases 4-7, suffix ``_eq89``): the paper's Methods eq. 8-9: the
  posterior (mean, log-variance) of a random training row is scaled by
  ``T_mean = mean(test SOC) / mean(train SOC)`` and
  ``T_logvar = var(test SOC) / var(train SOC)``, sampled, and decoded at the
  target (SOC, SOH).

SOH protocols:

* ``test_rows`` (key without suffix, the paper's protocol): generation is
  conditioned on the true SOH of the very test rows it is scored on;
* ``train`` (suffix ``_honest``): generation is conditioned on SOH values
  drawn with replacement from the training rows, so nothing about the test
  rows' SOH is used; the condition normaliser is fitted on the training rows'
  SOH and the SOC levels (the authors fit it on training + all rows).

``data.test_cell_fraction`` > 0 additionally holds whole cells out (grouped by
physical cell): they are absent from CVAE and phase-1 training and are the
only rows scored.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from slbjax import checkpoint
from slbjax import config as cfglib
from slbjax.data import pulse as pulse_data
from slbjax.data import pulse_synthetic
from slbjax.data.pulse import FEATURES, NUM_FEATURES, PulseData
from slbjax.errors import ConfigError, DataError, RunDirError
from slbjax.models.cvae import PulseCVAE
from slbjax.train import cvae as trainer
from slbjax.train.loop import member_params, stack_members

# --------------------------------------------------------------- constants
CASE_TRAIN_SOC_PCT: dict[int, tuple[int, ...]] = {
    0: (5, 15, 25, 35, 45, 50),
    1: (5, 10, 30, 40, 50),
    2: (5, 25, 40, 50),
    3: (5, 25, 50),
    4: (35, 40, 45, 50),
    5: (20, 25, 30),
    6: (5, 10, 15, 20),
    7: (5, 10),
}
INTERPOLATION_CASES = (0, 1, 2, 3)
EXTRAPOLATION_CASES = (4, 5, 6, 7)
# the authors' "physic_weight": mean U change (V) between adjacent 5 % levels
AUTHORS_SHIFT_WEIGHT_V = {"NMC2.1": 0.043, "NMC21": 0.04, "LFP": 0.0295, "LMO": 0.095}
PROTOCOLS = ("test_rows", "train")
KL_STD_FLOOR_V = 1e-4
CHECKPOINT_FORMAT = "slbjax-cvae-1"

# NMC 2.1 Ah figures quoted for comparison in report.md
PAPER_REFERENCE_NMC21AH = {
    "interp_soh_mape_generated_pct": 4.4,
    "extrap_soh_mape_generated_pct": 6.0,
    "case3_soh_mape_measured_pct": 17.3,
    "case7_soh_mape_measured_pct": 23.8,
}
AUTHORS_CODE_NMC21AH = {  # the authors' code run on these workbooks (TensorFlow, CPU)
    "interp_soh_mape_generated_pct": 4.54,
    "extrap_soh_mape_generated_pct": 4.28,
    "soh_mape_measured_pct_mean": 17.13,
    "seconds_8_cases": 105.0,
}


# ------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class CvaeDataConfig:
    """Which rows.

    Attributes:
      battery: published workbook (NMC2.1, NMC21, LFP, LMO) or the synthetic cohort.
      cases: SOC cases to run (0-3 interpolation, 4-7 extrapolation).
      synthetic_cells, synthetic_seed, synthetic_noise_mv: the synthetic cohort.
      test_cell_fraction: fraction of physical cells held out of all training
        and scored alone (0 = the paper's setting: every cell in both).
      split_seed: seed of that cell split.
    """

    battery: Literal["NMC2.1", "NMC21", "LFP", "LMO", "synthetic"] = "NMC2.1"
    cases: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    synthetic_cells: int = 48
    synthetic_seed: int = 0
    synthetic_noise_mv: float = 1.0
    test_cell_fraction: float = 0.0
    split_seed: int = 0


@dataclasses.dataclass(frozen=True)
class CvaeModelConfig:
    """Shape of :class:`~slbjax.models.cvae.PulseCVAE` (the paper's values)."""

    embed_dim: int = 64
    intermediate_dim: int = 64
    latent_dim: int = 2
    num_heads: int = 1


@dataclasses.dataclass(frozen=True)
class CvaeTrainConfig:
    """Optimisation (the authors' Keras defaults: Adam 1e-3, eps 1e-7, 50 x 32)."""

    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    adam_eps: float = 1e-7
    seed: int = 0
    num_seeds: int = 1
    w_rec: float = 0.5
    w_kl: float = 0.5
    fast_compile: bool = False  # XLA backend opt level 0: for smoke runs


@dataclasses.dataclass(frozen=True)
class CvaeGenerationConfig:
    """Generation at unseen SOC.

    Attributes:
      extrapolation: method used by :func:`generate` outside a case's training
        SOC range and reported as ``selected_*``; metrics hold both.
      soh_source: SOH protocol reported as ``selected_*`` and whose model
        :func:`generate` uses; metrics hold both.
      shift_weight_v: ``w`` of ``authors_shift``; None = the authors' constant
        of the battery type (estimated from the training rows for synthetic data).
      shift_gain: the authors' factor 20.
      seed: seed of the latent, SOH and row draws.
    """

    extrapolation: Literal["authors_shift", "eq89"] = "authors_shift"
    soh_source: Literal["test_rows", "train"] = "test_rows"
    shift_weight_v: float | None = None
    shift_gain: float = 20.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class CvaeDownstreamConfig:
    """The random forest SOH estimator (the paper's settings; bootstrap off as in the code)."""

    n_estimators: int = 20
    max_depth: int = 64
    min_samples_leaf: int = 1
    bootstrap: bool = False
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class CvaeConfig:
    """A generative SOH estimation experiment."""

    family: ClassVar[str] = "cvae"
    data: CvaeDataConfig = dataclasses.field(default_factory=CvaeDataConfig)
    model: CvaeModelConfig = dataclasses.field(default_factory=CvaeModelConfig)
    train: CvaeTrainConfig = dataclasses.field(default_factory=CvaeTrainConfig)
    generation: CvaeGenerationConfig = dataclasses.field(default_factory=CvaeGenerationConfig)
    downstream: CvaeDownstreamConfig = dataclasses.field(default_factory=CvaeDownstreamConfig)

    def validate(self) -> None:
        """Raises ConfigError on values no run can use."""
        cases = self.data.cases
        if (
            not cases
            or len(set(cases)) != len(cases)
            or any(c not in CASE_TRAIN_SOC_PCT for c in cases)
        ):
            raise ConfigError(f"data.cases must be distinct values among 0..7, got {cases}")
        if not 0.0 <= self.data.test_cell_fraction < 1.0:
            raise ConfigError(
                f"data.test_cell_fraction must be in [0, 1), got {self.data.test_cell_fraction}"
            )
        if self.data.synthetic_cells < 2:
            raise ConfigError(f"data.synthetic_cells must be >= 2, got {self.data.synthetic_cells}")
        for key, value in (
            ("train.epochs", self.train.epochs),
            ("train.batch_size", self.train.batch_size),
            ("train.num_seeds", self.train.num_seeds),
            ("model.embed_dim", self.model.embed_dim),
            ("model.intermediate_dim", self.model.intermediate_dim),
            ("model.latent_dim", self.model.latent_dim),
            ("model.num_heads", self.model.num_heads),
            ("downstream.n_estimators", self.downstream.n_estimators),
            ("downstream.max_depth", self.downstream.max_depth),
            ("downstream.min_samples_leaf", self.downstream.min_samples_leaf),
        ):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if not self.train.learning_rate > 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.train.learning_rate}")


CONFIG_CLASS = CvaeConfig


def _log(msg: str) -> None:
    print(f"[cvae] {msg}", file=sys.stderr, flush=True)


def build_model(cfg: CvaeConfig) -> PulseCVAE:
    m = cfg.model
    return PulseCVAE(
        feature_dim=NUM_FEATURES,
        condition_dim=2,
        embed_dim=m.embed_dim,
        intermediate_dim=m.intermediate_dim,
        latent_dim=m.latent_dim,
        num_heads=m.num_heads,
    )


def load_data(cfg: CvaeConfig, data_dir: Path | None) -> PulseData:
    """The rows of ``cfg.data.battery`` with SOC <= 50 %."""
    d = cfg.data
    if d.battery == "synthetic":
        return pulse_synthetic.make_cohort(
            d.synthetic_cells, d.synthetic_seed, noise_v=d.synthetic_noise_mv / 1000.0
        )
    return pulse_data.load_pulse(data_dir, d.battery)


# -------------------------------------------------------------------- plan
@dataclasses.dataclass(frozen=True)
class CasePlan:
    """Rows and constants of one SOC case (masks are [N] bool over the data rows)."""

    case: int
    train_soc_pct: tuple[float, ...]
    test_soc_pct: tuple[float, ...]
    extrapolation: bool
    base_soc_pct: float  # the authors' anchor: the case's second training SOC
    train_rows: np.ndarray
    eval_rows: np.ndarray  # rows that may be scored (all, or the held-out cells)
    t_mean: float
    t_logvar: float
    shift_weight_v: float


@dataclasses.dataclass(frozen=True)
class Lane:
    case: int
    seed_index: int
    protocols: tuple[str, ...]
    feature_lo: np.ndarray
    feature_hi: np.ndarray
    cond_lo: np.ndarray
    cond_hi: np.ndarray


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
    """Training / test rows and extrapolation constants of every configured case."""
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
    """(lo, hi) of the (SOC, SOH) normaliser for each SOH protocol."""
    cond = data.conditions
    # the authors: fitted on the training conditions stacked with all rows' conditions
    paper = trainer.fit_minmax(np.vstack([cond[plan.train_rows], cond]))
    # honest: SOC over the design's levels, SOH over the training rows only
    socs = np.concatenate([data.soc[plan.train_rows], np.asarray(plan.test_soc_pct) / 100.0])
    sohs = data.soh[plan.train_rows]
    honest = (np.array([socs.min(), sohs.min()]), np.array([socs.max(), sohs.max()]))
    return {"test_rows": paper, "train": honest}


def plan_lanes(cfg: CvaeConfig, data: PulseData, plans: list[CasePlan]) -> list[Lane]:
    """One lane per (case, seed, distinct condition normaliser)."""
    lanes = []
    for plan in plans:
        f_lo, f_hi = trainer.fit_minmax(data.features[plan.train_rows])
        scalers = _condition_scalers(data, plan)
        for s in range(cfg.train.num_seeds):
            same = all(
                np.array_equal(a, b)
                for a, b in zip(scalers["test_rows"], scalers["train"], strict=True)
            )
            groups = [PROTOCOLS] if same else [(p,) for p in PROTOCOLS]
            for protos in groups:
                lo, hi = scalers[protos[0]]
                lanes.append(Lane(plan.case, s, protos, f_lo, f_hi, lo, hi))
    return lanes


def _lane_index(lanes: list[Lane], case: int, seed_index: int, protocol: str) -> int:
    for i, lane in enumerate(lanes):
        if lane.case == case and lane.seed_index == seed_index and protocol in lane.protocols:
            return i
    raise KeyError((case, seed_index, protocol))


def _lane_inputs(cfg: CvaeConfig, data: PulseData, plans, lanes) -> trainer.LaneInputs:
    by_case = {p.case: p for p in plans}
    L = len(lanes)
    return trainer.LaneInputs(
        features=data.features,
        conditions=data.conditions,
        train_mask=np.stack([by_case[lane.case].train_rows for lane in lanes]),
        feature_lo=np.stack([lane.feature_lo for lane in lanes]),
        feature_hi=np.stack([lane.feature_hi for lane in lanes]),
        cond_lo=np.stack([lane.cond_lo for lane in lanes]),
        cond_hi=np.stack([lane.cond_hi for lane in lanes]),
        keys=jnp.stack(
            [trainer.lane_key(cfg.train.seed, lane.seed_index, lane.case) for lane in lanes]
        ),
        w_rec=np.full(L, cfg.train.w_rec),
        w_kl=np.full(L, cfg.train.w_kl),
    )


# -------------------------------------------------------------- generation
@dataclasses.dataclass
class _LaneModel:
    """One lane's parameters and normalisers, ready to generate."""

    model: PulseCVAE
    params: Any
    feature_lo: np.ndarray
    feature_hi: np.ndarray
    cond_lo: np.ndarray
    cond_hi: np.ndarray
    latent_mean: np.ndarray  # [n_train, L] posterior of the lane's training rows
    latent_logvar: np.ndarray

    def decode(self, z: np.ndarray, soc: np.ndarray, soh: np.ndarray) -> np.ndarray:
        """[M, L] latents at (SOC, SOH) [M] -> [M, F] features in volts."""
        cond = trainer.minmax_apply(np.stack([soc, soh], axis=1), self.cond_lo, self.cond_hi)
        out = trainer.decode_rows(self.model, self.params, z, cond)
        return trainer.minmax_invert(out, self.feature_lo, self.feature_hi)

    def prior(self, key: jax.Array, soc, soh) -> np.ndarray:
        """Decodes z ~ N(0, I): the authors' generation."""
        z = np.asarray(jax.random.normal(key, (len(soc), self.model.latent_dim)))
        return self.decode(z, soc, soh)

    def authors_shift(self, key, base_soc, target_soc, soh, weight_v, gain) -> np.ndarray:
        """Generated at ``base_soc`` then shifted by ``(target - base) * w * gain`` volts."""
        soc = np.full(len(soh), base_soc)
        return self.prior(key, soc, soh) + (target_soc - base_soc) * weight_v * gain

    def eq89(self, key, target_soc, soh, t_mean, t_logvar) -> np.ndarray:
        """Paper eq. 8-9: scaled posterior of random training rows, decoded at the target."""
        k_row, k_eps = jax.random.split(key)
        rows = np.asarray(jax.random.randint(k_row, (len(soh),), 0, self.latent_mean.shape[0]))
        mean = t_mean * self.latent_mean[rows]
        logvar = t_logvar * self.latent_logvar[rows]
        eps = np.asarray(jax.random.normal(k_eps, mean.shape))
        z = mean + np.exp(0.5 * logvar) * eps
        return self.decode(z, np.full(len(soh), target_soc), soh)


# ----------------------------------------------------------------- metrics
def mape(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(mean, std) of the absolute percentage error, in percent."""
    ape = np.abs((y_true - y_pred) / y_true) * 100.0
    return float(np.mean(ape)), float(np.std(ape))


def generation_errors(
    generated: np.ndarray, measured: np.ndarray, paired: bool
) -> dict[str, float]:
    """Generated vs measured features at one SOC level (both [n, F], volts).

    * ``generation_mape_pct``: row-paired MAPE when rows correspond (paper
      protocol: generated row i was conditioned on measured row i), otherwise
      quantile-matched (each feature's sorted generated values against its
      sorted measured values);
    * ``generation_mape_feature_std_pct``: std over the F per-feature MAPEs
      (the error bars of the paper's Fig. 3d);
    * ``generation_kl``: mean over features of KL(measured || generated) of
      Gaussians fitted per feature (std floored at 0.1 mV);
    * ``gen_mape_U<j>_pct``: the MAPE of feature j alone (the paper's Fig. 3b
      heatmap).
    """
    if not paired:
        generated, measured = np.sort(generated, axis=0), np.sort(measured, axis=0)
    per_feature = np.mean(np.abs(generated - measured) / np.abs(measured), axis=0) * 100.0
    m1, s1 = measured.mean(0), np.maximum(measured.std(0), KL_STD_FLOOR_V)
    m2, s2 = generated.mean(0), np.maximum(generated.std(0), KL_STD_FLOOR_V)
    kl = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    return {
        "generation_mape_pct": float(per_feature.mean()),
        "generation_mape_feature_std_pct": float(per_feature.std()),
        "generation_kl": float(kl.mean()),
        **{f"gen_mape_U{j + 1}_pct": float(v) for j, v in enumerate(per_feature)},
    }


def _forest(cfg: CvaeConfig, x: np.ndarray, y: np.ndarray):
    from sklearn.ensemble import RandomForestRegressor

    d = cfg.downstream
    return RandomForestRegressor(
        n_estimators=d.n_estimators,
        max_depth=d.max_depth,
        min_samples_leaf=d.min_samples_leaf,
        bootstrap=d.bootstrap,
        random_state=d.seed,
        n_jobs=1,
    ).fit(x, y)


def _variants(plan: CasePlan) -> tuple[str, ...]:
    return ("authors_shift", "eq89") if plan.extrapolation else ("direct",)


def _suffix(variant: str, protocol: str) -> str:
    return ("_eq89" if variant == "eq89" else "") + ("_honest" if protocol == "train" else "")


def evaluate(cfg, data: PulseData, plans, lanes, lane_models) -> list[dict]:
    """Per (case, seed, protocol, variant, unseen SOC) rows of metrics."""
    records = []
    gen_root = jax.random.key(cfg.generation.seed)
    soc_pct = data.soc_pct
    for plan in plans:
        x_train, y_train = data.features[plan.train_rows], data.soh[plan.train_rows]
        phase1 = _forest(cfg, x_train, y_train)
        pool = data.soh[plan.train_rows]
        for level in plan.test_soc_pct:
            rows = plan.eval_rows & (soc_pct == level)
            x_test, y_test = data.features[rows], data.soh[rows]
            p1_mape, p1_std = mape(y_test, phase1.predict(x_test))
            for s in range(cfg.train.num_seeds):
                for pi, protocol in enumerate(PROTOCOLS):
                    lm = lane_models[_lane_index(lanes, plan.case, s, protocol)]
                    key = jax.random.fold_in(gen_root, plan.case)
                    key = jax.random.fold_in(jax.random.fold_in(key, s), pi)
                    key = jax.random.fold_in(key, int(round(level * 1000)))
                    k_soh, k_gen = jax.random.split(key)
                    if protocol == "test_rows":
                        soh_cond = y_test
                    else:
                        pick = jax.random.randint(k_soh, (len(y_test),), 0, len(pool))
                        soh_cond = pool[np.asarray(pick)]
                    target = level / 100.0
                    for variant in _variants(plan):
                        if variant == "direct":
                            gen = lm.prior(k_gen, np.full(len(soh_cond), target), soh_cond)
                        elif variant == "authors_shift":
                            gen = lm.authors_shift(
                                k_gen,
                                plan.base_soc_pct / 100.0,
                                target,
                                soh_cond,
                                plan.shift_weight_v,
                                cfg.generation.shift_gain,
                            )
                        else:
                            gen = lm.eq89(k_gen, target, soh_cond, plan.t_mean, plan.t_logvar)
                        if not np.all(np.isfinite(gen)):
                            raise FloatingPointError(
                                f"case {plan.case} seed {s}: generated features are not finite"
                            )
                        p2_mape, p2_std = mape(y_test, _forest(cfg, gen, soh_cond).predict(x_test))
                        rec = {
                            "case": plan.case,
                            "seed_index": s,
                            "protocol": protocol,
                            "variant": variant,
                            "soc_pct": level,
                            "n_test": int(rows.sum()),
                            "soh_mape_measured_pct": p1_mape,
                            "soh_mape_measured_std_pct": p1_std,
                            "soh_mape_generated_pct": p2_mape,
                            "soh_mape_generated_std_pct": p2_std,
                        }
                        rec.update(generation_errors(gen, x_test, paired=protocol == "test_rows"))
                        records.append(rec)
    return records


_RECORD_METRICS = (
    "soh_mape_measured_pct",
    "soh_mape_measured_std_pct",
    "soh_mape_generated_pct",
    "soh_mape_generated_std_pct",
    "generation_mape_pct",
    "generation_mape_feature_std_pct",
    "generation_kl",
)


def summarise(records: list[dict]) -> list[dict]:
    """Per (case, protocol, variant): means over SOC levels, then over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["case"], r["protocol"], r["variant"]), []).append(r)
    out = []
    for (case, protocol, variant), rs in sorted(groups.items()):
        seeds = sorted({r["seed_index"] for r in rs})
        per_seed = {
            m: [np.mean([r[m] for r in rs if r["seed_index"] == s]) for s in seeds]
            for m in _RECORD_METRICS
        }
        row = {"case": case, "protocol": protocol, "variant": variant, "num_seeds": len(seeds)}
        row.update({m: float(np.mean(v)) for m, v in per_seed.items()})
        row["soh_mape_generated_seed_std_pct"] = float(np.std(per_seed["soh_mape_generated_pct"]))
        out.append(row)
    return out


def flat_metrics(cfg: CvaeConfig, summary: list[dict]) -> dict[str, float]:
    """The flat ``metrics.json`` numbers (key meaning documented in the module docstring)."""
    metrics: dict[str, float] = {}
    by_key = {(r["case"], r["protocol"], r["variant"]): r for r in summary}
    for (case, protocol, variant), r in sorted(by_key.items()):
        sfx = _suffix(variant, protocol)
        if not sfx:
            metrics[f"case{case}_soh_mape_measured_pct"] = r["soh_mape_measured_pct"]
            metrics[f"case{case}_soh_mape_measured_std_pct"] = r["soh_mape_measured_std_pct"]
        metrics[f"case{case}_soh_mape_generated_pct{sfx}"] = r["soh_mape_generated_pct"]
        metrics[f"case{case}_soh_mape_generated_std_pct{sfx}"] = r["soh_mape_generated_std_pct"]
        metrics[f"case{case}_generation_mape_pct{sfx}"] = r["generation_mape_pct"]
        metrics[f"case{case}_generation_kl{sfx}"] = r["generation_kl"]
        if r["num_seeds"] > 1:
            metrics[f"case{case}_soh_mape_generated_seed_std_pct{sfx}"] = r[
                "soh_mape_generated_seed_std_pct"
            ]

    def mean_over(cases, variant_of, protocol, field):
        vals = [
            by_key[(c, protocol, variant_of(c))][field]
            for c in cases
            if (c, protocol, variant_of(c)) in by_key
        ]
        return float(np.mean(vals)) if vals else None

    default = lambda c: "authors_shift" if c in EXTRAPOLATION_CASES else "direct"  # noqa: E731
    eq89 = lambda c: "eq89"  # noqa: E731
    for group, cases in (("interp", INTERPOLATION_CASES), ("extrap", EXTRAPOLATION_CASES)):
        for protocol in PROTOCOLS:
            variant_sets = [("", default)] + ([("_eq89", eq89)] if group == "extrap" else [])
            for vs, variant_of in variant_sets:
                sfx = vs + ("_honest" if protocol == "train" else "")
                for field in ("soh_mape_generated_pct", "generation_mape_pct", "generation_kl"):
                    v = mean_over(cases, variant_of, protocol, field)
                    if v is not None:
                        metrics[f"{group}_{field}{sfx}"] = v
        v = mean_over(cases, default, "test_rows", "soh_mape_measured_pct")
        if v is not None:
            metrics[f"{group}_soh_mape_measured_pct"] = v
    g = cfg.generation
    sel = ("_eq89" if g.extrapolation == "eq89" else "") + (
        "_honest" if g.soh_source == "train" else ""
    )
    sel_interp = "_honest" if g.soh_source == "train" else ""
    for group, sfx in (("interp", sel_interp), ("extrap", sel)):
        key = f"{group}_soh_mape_generated_pct{sfx}"
        if key in metrics:
            metrics[f"selected_{group}_soh_mape_generated_pct"] = metrics[key]
    return metrics


# ------------------------------------------------------------------ output
def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _fmt(x: float | None, digits: int = 2) -> str:
    return (
        "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"
    )


def write_report(
    path: Path, cfg: CvaeConfig, data: PulseData, plans, metrics: dict[str, float]
) -> None:
    """``report.md``: per-case table of every variant next to the paper's figures."""
    m = metrics.get
    lines = [
        f"# CVAE generative SOH estimation — {data.battery}",
        "",
        f"Data: `{data.source}`{' sheet ' + repr(data.sheet) if data.sheet else ''}, "
        f"{data.num_rows} rows with SOC <= 50 %, {len(set(data.cell.tolist()))} physical cells. "
        f"Seeds: {cfg.train.num_seeds}; epochs {cfg.train.epochs}, batch {cfg.train.batch_size}, "
        f"learning rate {cfg.train.learning_rate:g}.",
        f"Training: {_fmt(m('train_seconds'), 1)} s for {int(m('num_lanes', 0))} lanes in one "
        f"program (compile {_fmt(m('train_compile_seconds'), 1)} s); evaluation "
        f"{_fmt(m('evaluate_seconds'), 1)} s.",
        "",
        "SOH MAPE in %, mean over the unseen SOC levels of each case. Phase 1: forest on the "
        "measured rows at the training SOC levels. Phase 2: forest on generated rows. Paper "
        "protocol = generation conditioned on the test rows' true SOH; honest = SOH drawn from "
        "the training rows. Cases 4-7: authors_shift (the authors' code) and eq89 (the paper's "
        "Methods eq. 8-9). Generation MAPE: row-paired (paper protocol) / quantile-matched (honest).",
        "",
        "| case | train SOC % | phase 1 | phase 2 paper | phase 2 eq89 | phase 2 honest | "
        "honest eq89 | gen MAPE | gen MAPE eq89 | gen MAPE honest | KL |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for plan in plans:
        k = plan.case
        lines.append(
            f"| {k} | {', '.join(f'{x:g}' for x in plan.train_soc_pct)} "
            f"| {_fmt(m(f'case{k}_soh_mape_measured_pct'))} "
            f"| {_fmt(m(f'case{k}_soh_mape_generated_pct'))} "
            f"| {_fmt(m(f'case{k}_soh_mape_generated_pct_eq89'))} "
            f"| {_fmt(m(f'case{k}_soh_mape_generated_pct_honest'))} "
            f"| {_fmt(m(f'case{k}_soh_mape_generated_pct_eq89_honest'))} "
            f"| {_fmt(m(f'case{k}_generation_mape_pct'))} "
            f"| {_fmt(m(f'case{k}_generation_mape_pct_eq89'))} "
            f"| {_fmt(m(f'case{k}_generation_mape_pct_honest'))} "
            f"| {_fmt(m(f'case{k}_generation_kl'), 3)} |"
        )
    for group, label in (("interp", "mean 0-3"), ("extrap", "mean 4-7")):
        lines.append(
            f"| {label} | | {_fmt(m(f'{group}_soh_mape_measured_pct'))} "
            f"| {_fmt(m(f'{group}_soh_mape_generated_pct'))} "
            f"| {_fmt(m(f'{group}_soh_mape_generated_pct_eq89'))} "
            f"| {_fmt(m(f'{group}_soh_mape_generated_pct_honest'))} "
            f"| {_fmt(m(f'{group}_soh_mape_generated_pct_eq89_honest'))} "
            f"| {_fmt(m(f'{group}_generation_mape_pct'))} "
            f"| {_fmt(m(f'{group}_generation_mape_pct_eq89'))} "
            f"| {_fmt(m(f'{group}_generation_mape_pct_honest'))} "
            f"| {_fmt(m(f'{group}_generation_kl'), 3)} |"
        )
    if data.battery == "NMC2.1":
        p, a = PAPER_REFERENCE_NMC21AH, AUTHORS_CODE_NMC21AH
        lines += [
            "",
            "Reference (NMC 2.1 Ah): the paper reports phase-2 SOH MAPE "
            f"{p['interp_soh_mape_generated_pct']} % (interpolation) and "
            f"{p['extrap_soh_mape_generated_pct']} % (extrapolation), phase 1 "
            f"{p['case3_soh_mape_measured_pct']} % in case 3 and {p['case7_soh_mape_measured_pct']} % "
            "in case 7, generation MAPE below 2 % in interpolation. The authors' code run on "
            f"these workbooks gives {a['interp_soh_mape_generated_pct']} % / "
            f"{a['extrap_soh_mape_generated_pct']} % (phase 2) and {a['soh_mape_measured_pct_mean']} % "
            f"(phase 1, mean of the 8 cases) in {a['seconds_8_cases']:g} s.",
        ]
    if data.notes:
        lines += ["", "Notes: " + " ".join(data.notes)]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------- run
def _checkpoint_meta(cfg, data, plans, lanes, lane_models) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "battery": data.battery,
        "source": data.source,
        "features": list(FEATURES),
        "model": dataclasses.asdict(cfg.model) | {"feature_dim": NUM_FEATURES, "condition_dim": 2},
        "generation": {
            "extrapolation": cfg.generation.extrapolation,
            "soh_source": cfg.generation.soh_source,
            "shift_gain": cfg.generation.shift_gain,
        },
        "cases": {
            str(p.case): {
                "train_soc_pct": list(p.train_soc_pct),
                "test_soc_pct": list(p.test_soc_pct),
                "extrapolation": p.extrapolation,
                "base_soc_pct": p.base_soc_pct,
                "t_mean": p.t_mean,
                "t_logvar": p.t_logvar,
                "shift_weight_v": p.shift_weight_v,
            }
            for p in plans
        },
        "lanes": [
            {
                "case": lane.case,
                "seed_index": lane.seed_index,
                "protocols": list(lane.protocols),
                "feature_lo": lane.feature_lo.tolist(),
                "feature_hi": lane.feature_hi.tolist(),
                "cond_lo": lane.cond_lo.tolist(),
                "cond_hi": lane.cond_hi.tolist(),
                "latent_mean": np.round(lm.latent_mean, 7).tolist(),
                "latent_logvar": np.round(lm.latent_logvar, 7).tolist(),
            }
            for lane, lm in zip(lanes, lane_models, strict=True)
        ],
        "config": cfglib.to_dict(cfg),
    }


def run(cfg: CvaeConfig, data_dir: Path | None, run_dir: Path) -> dict[str, float]:
    """Trains, evaluates and saves one experiment; returns the flat metrics.

    Args:
      cfg: the experiment config.
      data_dir: folder holding ``pulse/`` (unused for ``battery=synthetic``).
      run_dir: existing run folder; receives checkpoints/, per_soc.csv,
        per_case.csv, history.csv and report.md (the CLI writes config.json
        and metrics.json).
    """
    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # ---- data
    _log(f"loading {cfg.data.battery} data")
    data = load_data(cfg, data_dir)
    plans = plan_cases(cfg, data)
    lanes = plan_lanes(cfg, data, plans)
    model = build_model(cfg)
    inputs = _lane_inputs(cfg, data, plans, lanes)
    _log(
        f"{data.num_rows} rows, {len(set(data.cell.tolist()))} cells; {len(plans)} cases x "
        f"{cfg.train.num_seeds} seeds = {len(lanes)} lanes"
    )

    # ---- train: every lane in one program
    _log(f"training {len(lanes)} lanes for {cfg.train.epochs} epochs (one jit-compiled program)")
    results = trainer.train_lanes(
        model,
        inputs,
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.learning_rate,
        adam_eps=cfg.train.adam_eps,
        fast_compile=cfg.train.fast_compile,
    )
    lane_stack = stack_members([r.params for r in results])
    epoch_loss = np.asarray([r.history["train_loss"] for r in results])
    train_seconds, compile_seconds = results[0].seconds, results[0].compile_seconds
    _log(
        f"trained in {train_seconds:.1f} s (compile {compile_seconds:.1f} s, run "
        f"{train_seconds - compile_seconds:.1f} s); final loss {np.mean(epoch_loss[:, -1]):.4f}"
    )
    if not np.all(np.isfinite(epoch_loss)):
        raise FloatingPointError("training loss became non-finite; lower train.learning_rate")

    # ---- generate + evaluate
    t_eval = time.perf_counter()
    by_case = {p.case: p for p in plans}
    lane_models = []
    for i, lane in enumerate(lanes):
        params = results[i].params
        rows = by_case[lane.case].train_rows
        x = trainer.minmax_apply(data.features[rows], lane.feature_lo, lane.feature_hi)
        c = trainer.minmax_apply(data.conditions[rows], lane.cond_lo, lane.cond_hi)
        mean, logvar = trainer.encode_rows(model, params, x, c)
        lane_models.append(
            _LaneModel(
                model,
                params,
                lane.feature_lo,
                lane.feature_hi,
                lane.cond_lo,
                lane.cond_hi,
                mean,
                logvar,
            )
        )
    _log("generating at the unseen SOC levels and fitting the random forests")
    records = evaluate(cfg, data, plans, lanes, lane_models)
    summary = summarise(records)
    metrics = flat_metrics(cfg, summary)
    evaluate_seconds = time.perf_counter() - t_eval

    # ---- checkpoint + tables
    _log(f"writing checkpoint and tables to {run_dir}")
    checkpoint.save(
        run_dir,
        cfg.train.epochs,
        lane_stack,
        _checkpoint_meta(cfg, data, plans, lanes, lane_models),
    )
    _write_csv(run_dir / "per_soc.csv", records)
    _write_csv(run_dir / "per_case.csv", summary)
    history = [
        {
            "lane": i,
            "case": lane.case,
            "seed_index": lane.seed_index,
            "protocols": "+".join(lane.protocols),
            "epoch": e + 1,
            "loss": float(epoch_loss[i, e]),
        }
        for i, lane in enumerate(lanes)
        for e in range(epoch_loss.shape[1])
    ]
    _write_csv(run_dir / "history.csv", history)
    metrics.update(
        {
            "train_seconds": train_seconds,
            "train_compile_seconds": compile_seconds,
            "train_run_seconds": train_seconds - compile_seconds,
            "evaluate_seconds": evaluate_seconds,
            "num_lanes": float(len(lanes)),
            "steps_per_epoch": float(trainer.steps_per_epoch(inputs.train_mask, cfg.train.batch_size)),
            "final_train_loss": float(np.mean(epoch_loss[:, -1])),
            "num_rows": float(data.num_rows),
        }
    )
    metrics["total_seconds"] = time.perf_counter() - t_start
    write_report(run_dir / "report.md", cfg, data, plans, metrics)
    _log(
        "done: phase-2 SOH MAPE interp "
        f"{_fmt(metrics.get('interp_soh_mape_generated_pct'))} %, extrap "
        f"{_fmt(metrics.get('extrap_soh_mape_generated_pct'))} % "
        f"({metrics['total_seconds']:.1f} s)"
    )
    return metrics


# ---------------------------------------------------------------- generate
def _pick_case(meta: dict, soc_pct: float, case: int | None) -> int:
    cases = {int(k): v for k, v in meta["cases"].items()}
    if case is not None:
        if case not in cases:
            raise ConfigError(f"case {case} is not in this run; its cases are {sorted(cases)}")
        return case

    def distance(k):
        lo, hi = min(cases[k]["train_soc_pct"]), max(cases[k]["train_soc_pct"])
        return max(lo - soc_pct, 0.0, soc_pct - hi)

    return min(cases, key=lambda k: (distance(k), -len(cases[k]["train_soc_pct"]), k))


def generate(
    run_dir: Path,
    soc: float,
    soh: float,
    n: int,
    out_csv: Path,
    case: int | None = None,
    seed: int = 0,
) -> Path:
    """Writes ``n`` generated U1..U21 rows at (SOC, SOH) from a finished run.

    Inside the chosen case's training SOC range the decoder is sampled with
    ``z ~ N(0, I)`` at (soc, soh); outside it the run's configured
    extrapolation (``authors_shift`` or ``eq89``) is used.  The model of seed 0
    and of the run's configured SOH protocol is used.

    Args:
      run_dir: a folder written by :func:`run`.
      soc: SOC as a fraction (0.30 for 30 %).
      soh: SOH as a fraction.
      n: number of rows.
      out_csv: output file (columns SOC, SOH, U1..U21); must not exist.
      case: which case's model; None = the case whose training SOC range
        covers ``soc`` (or lies nearest), with the most training levels.
      seed: seed of the latent draws.

    Returns:
      ``out_csv``.

    Raises:
      RunDirError: ``out_csv`` exists, or ``run_dir`` holds no CVAE checkpoint.
      ConfigError: soc, soh, n or case out of range.
    """
    out_csv = Path(out_csv)
    if out_csv.exists():
        raise RunDirError(f"{out_csv} already exists; refusing to overwrite it (choose another -o)")
    if not 0.0 < soc <= 1.0:
        hint = f" (did you mean {soc / 100:g}? SOC is a fraction)" if 1.0 < soc <= 100.0 else ""
        raise ConfigError(f"soc must be a fraction in (0, 1], got {soc:g}{hint}")
    if not 0.0 < soh < 2.0:
        raise ConfigError(f"soh must be a fraction in (0, 2), got {soh:g}")
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    params, meta = checkpoint.load(run_dir)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise RunDirError(
            f"{run_dir} does not hold a CVAE checkpoint (format {meta.get('format')!r})"
        )
    soc_pct = soc * 100.0
    k = _pick_case(meta, soc_pct, case)
    cinfo = meta["cases"][str(k)]
    protocol = meta["generation"]["soh_source"]
    idx = next(
        i
        for i, lane in enumerate(meta["lanes"])
        if lane["case"] == k and lane["seed_index"] == 0 and protocol in lane["protocols"]
    )
    lane = meta["lanes"][idx]
    mc = meta["model"]
    model = PulseCVAE(
        feature_dim=mc["feature_dim"],
        condition_dim=mc["condition_dim"],
        embed_dim=mc["embed_dim"],
        intermediate_dim=mc["intermediate_dim"],
        latent_dim=mc["latent_dim"],
        num_heads=mc["num_heads"],
    )
    arr = lambda name: np.asarray(lane[name], np.float64)  # noqa: E731
    latent_mean = np.asarray(lane["latent_mean"], np.float64).reshape(-1, mc["latent_dim"])
    latent_logvar = np.asarray(lane["latent_logvar"], np.float64).reshape(-1, mc["latent_dim"])
    lm = _LaneModel(
        model,
        member_params(params, idx),
        arr("feature_lo"),
        arr("feature_hi"),
        arr("cond_lo"),
        arr("cond_hi"),
        latent_mean,
        latent_logvar,
    )
    key = jax.random.key(seed)
    sohs = np.full(n, soh)
    lo, hi = min(cinfo["train_soc_pct"]), max(cinfo["train_soc_pct"])
    if lo - 1e-9 <= soc_pct <= hi + 1e-9:
        gen = lm.prior(key, np.full(n, soc), sohs)
        how = "interpolation"
    elif meta["generation"]["extrapolation"] == "eq89":
        gen = lm.eq89(key, soc, sohs, cinfo["t_mean"], cinfo["t_logvar"])
        how = "eq89 extrapolation"
    else:
        gen = lm.authors_shift(
            key,
            cinfo["base_soc_pct"] / 100.0,
            soc,
            sohs,
            cinfo["shift_weight_v"],
            meta["generation"]["shift_gain"],
        )
        how = "authors_shift extrapolation"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(out_csv, "x", newline="")
    except FileExistsError:
        raise RunDirError(f"{out_csv} already exists; refusing to overwrite it") from None
    with f:
        w = csv.writer(f)
        w.writerow(["SOC", "SOH", *FEATURES])
        for row in gen:
            w.writerow([f"{soc:.6g}", f"{soh:.6g}", *(f"{v:.6f}" for v in row)])
    _log(f"wrote {n} rows at SOC {soc:g}, SOH {soh:g} (case {k}, {how}) to {out_csv}")
    return out_csv
