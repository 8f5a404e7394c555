"""Generative SOH runs (Tao et al., Nat. Commun. 2024): data -> members -> training -> evaluation.

One run, for one battery type:

1. the rows with SOC <= 50 % (published workbook or synthetic cohort), the
   cases and their members (:mod:`slbjax.data.pulse_cases`);
2. every member trained in ONE compiled program (:func:`slbjax.train.cvae.train_members`);
3. generation at every case's unseen SOC levels and the random forests of
   phase 1 and 2 (:mod:`slbjax.evaluate.unseen_soc`), summarised into the flat
   metrics (:mod:`slbjax.evaluate.cvae_summary`);
4. ``per_soc.csv``, ``per_case.csv``, ``history.csv``, ``report.md`` and a
   checkpoint (member-stacked parameters + everything
   :func:`slbjax.inference.generate` needs).

The CLI writes ``config.json`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from slbjax import checkpoint
from slbjax.configs.cvae import CvaeConfig
from slbjax.data import pulse as pulse_data
from slbjax.data import pulse_cases, pulse_synthetic
from slbjax.data.pulse import NUM_FEATURES, PulseData
from slbjax.data.pulse_cases import CasePlan, Member
from slbjax.evaluate.cvae_report import fmt, write_report, write_table
from slbjax.evaluate.cvae_summary import flat_metrics, summarise
from slbjax.evaluate.unseen_soc import per_soc_records
from slbjax.inference import cvae_checkpoint_meta, member_model
from slbjax.models.cvae import PulseCVAE
from slbjax.train import cvae as trainer
from slbjax.train.loop import stack_members

CONFIG_CLASS = CvaeConfig


def _log(msg: str) -> None:
    print(f"[cvae] {msg}", file=sys.stderr, flush=True)


def build_model(cfg: CvaeConfig) -> PulseCVAE:
    """The (unbatched) CVAE of ``cfg.model`` on the 21 features and (SOC, SOH)."""
    return PulseCVAE(feature_dim=NUM_FEATURES, condition_dim=2, **dataclasses.asdict(cfg.model))


def load_data(cfg: CvaeConfig, data_dir: Path | None) -> PulseData:
    """The rows of ``cfg.data.battery`` with SOC <= 50 %."""
    d = cfg.data
    if d.battery == "synthetic":
        return pulse_synthetic.make_cohort(
            d.synthetic_cells, d.synthetic_seed, noise_v=d.synthetic_noise_mv / 1000.0
        )
    return pulse_data.load_pulse(data_dir, d.battery)


def check_inputs(cfg: CvaeConfig, data_dir: Path | None) -> None:
    """Fails, before a run folder is made, when the pulse data are missing or do not load."""
    cfg.validate()
    if cfg.data.battery != "synthetic":
        pulse_cases.plan_cases(cfg, load_data(cfg, data_dir))


def member_inputs(
    cfg: CvaeConfig, data: PulseData, plans: list[CasePlan], members: list[Member]
) -> trainer.MemberInputs:
    """The trainer's inputs of M members: shared rows, [M, ...] masks, normalisers and keys."""
    keys = jnp.stack([trainer.member_key(cfg.train.seed, m.seed_index, m.case) for m in members])
    return trainer.MemberInputs(**pulse_cases.member_arrays(cfg, data, plans, members), keys=keys)


def train_and_evaluate(cfg: CvaeConfig, data_dir: Path | None, run_dir: Path) -> dict[str, float]:
    """Trains, evaluates and saves one experiment; returns the flat metrics.

    Args:
      cfg: the experiment config.
      data_dir: folder holding ``pulse/`` (unused for ``battery=synthetic``).
      run_dir: run folder; receives checkpoints/, per_soc.csv, per_case.csv,
        history.csv and report.md.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # ---- data: rows, cases, members
    _log(f"loading {cfg.data.battery} data")
    data = load_data(cfg, data_dir)
    plans = pulse_cases.plan_cases(cfg, data)
    members = pulse_cases.plan_members(cfg, data, plans)
    model = build_model(cfg)
    inputs = member_inputs(cfg, data, plans, members)
    _log(
        f"{data.num_rows} rows, {len(set(data.cell.tolist()))} cells; {len(plans)} cases x "
        f"ensemble of {cfg.train.ensemble_size} = {len(members)} members"
    )

    # ---- train: every member in one program
    _log(f"training {len(members)} members for {cfg.train.epochs} epochs (one jit-compiled program)")
    results = trainer.train_members(
        model,
        inputs,
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.learning_rate,
        adam_eps=cfg.train.adam_eps,
        fast_compile=cfg.train.fast_compile,
    )
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
    generators = []
    for m, r in zip(members, results, strict=True):
        rows = by_case[m.case].train_rows
        generators.append(member_model(model, r.params, m, data.features[rows], data.conditions[rows]))
    _log("generating at the unseen SOC levels and fitting the random forests")
    records = per_soc_records(cfg, data, plans, members, generators)
    summary = summarise(records)
    metrics = flat_metrics(cfg, summary)
    evaluate_seconds = time.perf_counter() - t_eval

    # ---- checkpoint + tables
    _log(f"writing checkpoint and tables to {run_dir}")
    checkpoint.save(run_dir, cfg.train.epochs, stack_members([r.params for r in results]),
                    cvae_checkpoint_meta(cfg, data, plans, members, generators))
    write_table(run_dir / "per_soc.csv", records)
    write_table(run_dir / "per_case.csv", summary)
    write_table(run_dir / "history.csv", [
        {"member": i, "case": m.case, "seed_index": m.seed_index,
         "protocols": "+".join(m.protocols), "epoch": e + 1, "loss": float(epoch_loss[i, e])}
        for i, m in enumerate(members)
        for e in range(epoch_loss.shape[1])
    ])
    metrics.update(
        {
            "train_seconds": train_seconds,
            "train_compile_seconds": compile_seconds,
            "train_run_seconds": train_seconds - compile_seconds,
            "evaluate_seconds": evaluate_seconds,
            "num_members": float(len(members)),
            "steps_per_epoch": float(trainer.steps_per_epoch(inputs.train_mask, cfg.train.batch_size)),
            "final_train_loss": float(np.mean(epoch_loss[:, -1])),
            "num_rows": float(data.num_rows),
        }
    )
    metrics["total_seconds"] = time.perf_counter() - t_start
    write_report(run_dir / "report.md", cfg, data, plans, metrics)
    _log(
        "done: phase-2 SOH MAPE interp "
        f"{fmt(metrics.get('interp_soh_mape_generated_pct'))} %, extrap "
        f"{fmt(metrics.get('extrap_soh_mape_generated_pct'))} % "
        f"({metrics['total_seconds']:.1f} s)"
    )
    return metrics


run = train_and_evaluate  # the CLI's name (slbjax.runners: ``run(cfg, data_dir, run_dir)``)
