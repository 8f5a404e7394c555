"""Benchmark: all (case, seed) CVAE members in one program vs a loop of separate trainings.

Usage::

    python scripts/bench_cvae.py                          # synthetic cohort, 8 cases x 4 seeds
    python scripts/bench_cvae.py --battery NMC2.1 --data-dir /path/to/shared/data
    python scripts/bench_cvae.py --epochs 10 --seeds 2

Prints the wall time of the vectorised program (compile + run), of the loop
(every member trained alone: one program per member, compiled once per distinct
number of steps per epoch and reused across seeds), and their ratio.  Both
produce the same parameters (tests/test_cvae.py checks that on a tiny case).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from slbjax import config as cfglib
from slbjax.configs.cvae import CvaeConfig
from slbjax.data import pulse_cases
from slbjax.runners import cvae as runner
from slbjax.train import cvae as trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--battery", default="synthetic")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()

    cfg = cfglib.apply_overrides(
        CvaeConfig(),
        [
            f"data.battery={args.battery}",
            f"train.epochs={args.epochs}",
            f"train.ensemble_size={args.seeds}",
        ],
    )
    data = runner.load_data(cfg, args.data_dir)
    plans = pulse_cases.plan_cases(cfg, data)
    members = pulse_cases.plan_members(cfg, data, plans)
    inputs = runner.member_inputs(cfg, data, plans, members)
    model = runner.build_model(cfg)
    kw = dict(
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.learning_rate,
    )
    print(
        f"{data.battery}: {data.num_rows} rows; {len(plans)} cases x {args.seeds} seeds = "
        f"{len(members)} members, {args.epochs} epochs"
    )

    t0 = time.perf_counter()
    together = trainer.train_members(model, inputs, **kw)[0]
    t_one = time.perf_counter() - t0
    one_run = together.seconds - together.compile_seconds
    print(
        f"one program : {t_one:7.1f} s  (compile {together.compile_seconds:.1f} s, "
        f"run {one_run:.1f} s)"
    )

    t0 = time.perf_counter()
    compile_s = run_s = 0.0
    for i in range(len(members)):
        alone = trainer.train_members(model, inputs.member(i), **kw)[0]
        compile_s += alone.compile_seconds
        run_s += alone.seconds - alone.compile_seconds
    t_loop = time.perf_counter() - t0
    print(f"loop        : {t_loop:7.1f} s  (compile {compile_s:.1f} s, run {run_s:.1f} s)")
    print(
        f"ratio loop / one program: {t_loop / t_one:.2f}x (run only: {run_s / one_run:.2f}x)"
    )


if __name__ == "__main__":
    main()
