"""Generation at the unseen SOC levels of each case and its scoring (Tao et al. 2024).

For every case, seed index, SOH protocol, generation variant and unseen SOC
level, one row is generated per measured test row and scored:

* phase 1: a random forest trained on the measured rows at the case's
  training SOC levels (fitted once per case);
* phase 2: a random forest trained on the generated rows of that level;
* both by SOH MAPE on the measured rows of that level, and the generated rows
  against the measured ones (:func:`slbjax.evaluate.generation.generation_errors`).

Generation variants:

* ``direct`` (cases 0-3, interpolation): decode ``z ~ N(0, I)`` at the target
  (SOC, SOH);
* ``authors_shift`` (cases 4-7; metric keys without suffix, the paper's
  numbers): decode at the case's second training SOC, then add
  ``(target SOC - that SOC) * w * gain`` volts to every feature, ``w`` the
  case's shift weight (:mod:`slbjax.data.pulse_cases`);
* ``eq89`` (cases 4-7, suffix ``_eq89``): the paper's Methods eq. 8-9: the
  posterior (mean, log-variance) of a random training row is scaled by the
  case's ``T_mean`` and ``T_logvar``, sampled, and decoded at the target.

SOH protocols:

* ``test_rows`` (key without suffix, the paper's protocol): generation is
  conditioned on the true SOH of the very test rows it is scored on;
* ``train`` (suffix ``_honest``): generation is conditioned on SOH values
  drawn with replacement from the training rows.

Keys: ``fold_in`` of ``generation.seed`` by case, seed index, protocol index
and round(level x 1000), split into an SOH-draw key and a generation key.
"""

from __future__ import annotations

import jax
import numpy as np

from slbjax.configs.cvae import PROTOCOLS, CvaeConfig
from slbjax.data.pulse import PulseData
from slbjax.data.pulse_cases import CasePlan, Member, member_index
from slbjax.evaluate.generation import generation_errors
from slbjax.evaluate.soh import fit_forest, soh_errors
from slbjax.inference import MemberModel


def variants(plan: CasePlan) -> tuple[str, ...]:
    """The generation variants of a case: ``direct``, or both extrapolations."""
    return ("authors_shift", "eq89") if plan.extrapolation else ("direct",)


def _generate(
    cfg: CvaeConfig, mm: MemberModel, plan: CasePlan, variant: str, key, target: float, soh
) -> np.ndarray:
    """[n, F] rows of one variant at SOC ``target`` (fraction), conditioned on ``soh`` [n]."""
    if variant == "direct":
        return mm.prior(key, np.full(len(soh), target), soh)
    if variant == "authors_shift":
        return mm.authors_shift(
            key,
            plan.base_soc_pct / 100.0,
            target,
            soh,
            plan.shift_weight_v,
            cfg.generation.shift_gain,
        )
    return mm.eq89(key, target, soh, plan.t_mean, plan.t_logvar)


def per_soc_records(
    cfg: CvaeConfig,
    data: PulseData,
    plans: list[CasePlan],
    members: list[Member],
    member_models: list[MemberModel],
) -> list[dict]:
    """One row of metrics per (case, seed index, protocol, variant, unseen SOC level).

    Args:
      cfg: the run's config (ensemble size, generation, downstream forest).
      data: the rows.
      plans: the cases.
      members: the trained members, aligned with ``member_models``.
      member_models: their generators.

    Returns:
      Dicts with ``case``, ``seed_index``, ``protocol``, ``variant``, ``soc_pct``,
      ``n_test``, ``soh_mape_{measured,generated}[_std]_pct`` and the keys of
      :func:`~slbjax.evaluate.generation.generation_errors`.

    Raises:
      FloatingPointError: generated features are not finite.
    """
    records = []
    gen_root = jax.random.key(cfg.generation.seed)
    soc_pct = data.soc_pct
    for plan in plans:
        x_train, y_train = data.features[plan.train_rows], data.soh[plan.train_rows]
        phase1 = fit_forest(x_train, y_train, cfg.downstream)
        pool = data.soh[plan.train_rows]
        for level in plan.test_soc_pct:
            rows = plan.eval_rows & (soc_pct == level)
            x_test, y_test = data.features[rows], data.soh[rows]
            p1_mape, p1_std = soh_errors(phase1.predict(x_test), y_test)
            for s in range(cfg.train.ensemble_size):
                for pi, protocol in enumerate(PROTOCOLS):
                    mm = member_models[member_index(members, plan.case, s, protocol)]
                    key = jax.random.fold_in(gen_root, plan.case)
                    key = jax.random.fold_in(jax.random.fold_in(key, s), pi)
                    key = jax.random.fold_in(key, int(round(level * 1000)))
                    k_soh, k_gen = jax.random.split(key)
                    if protocol == "test_rows":
                        soh_cond = y_test
                    else:
                        pick = jax.random.randint(k_soh, (len(y_test),), 0, len(pool))
                        soh_cond = pool[np.asarray(pick)]
                    for variant in variants(plan):
                        gen = _generate(cfg, mm, plan, variant, k_gen, level / 100.0, soh_cond)
                        if not np.all(np.isfinite(gen)):
                            raise FloatingPointError(
                                f"case {plan.case} seed {s}: generated features are not finite"
                            )
                        phase2 = fit_forest(gen, soh_cond, cfg.downstream)
                        p2_mape, p2_std = soh_errors(phase2.predict(x_test), y_test)
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
