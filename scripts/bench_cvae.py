"""Benchmark: all (case, seed) CVAE trainings in one program vs a loop of separate ones.

Usage::

    python scripts/bench_cvae.py                          # synthetic cohort, 8 cases x 4 seeds
    python scripts/bench_cvae.py --battery NMC2.1 --data-dir /path/to/shared/data
    python scripts/bench_cvae.py --epochs 10 --seeds 2

Prints the wall time of the vectorised program (compile + run), of the loop
(every lane trained alone: one program per lane, compiled once per distinct
number of steps per epoch and reused across seeds), and their ratio.  Both
produce the same parameters (tests/test_cvae.py checks that on a tiny case).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from slbjax import config as cfglib
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
        runner.CvaeConfig(),
        [
            f"data.battery={args.battery}",
            f"train.epochs={args.epochs}",
            f"train.num_seeds={args.seeds}",
        ],
    )
    data = runner.load_data(cfg, args.data_dir)
    plans = runner.plan_cases(cfg, data)
    lanes = runner.plan_lanes(cfg, data, plans)
    inputs = runner._lane_inputs(cfg, data, plans, lanes)
    model = runner.build_model(cfg)
    kw = dict(
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.learning_rate,
    )
    print(
        f"{data.battery}: {data.num_rows} rows; {len(plans)} cases x {args.seeds} seeds = "
        f"{len(lanes)} lanes, {args.epochs} epochs"
    )

    t0 = time.perf_counter()
    together = trainer.train_lanes(model, inputs, **kw)
    t_one = time.perf_counter() - t0
    print(
        f"one program : {t_one:7.1f} s  (compile {together.compile_seconds:.1f} s, "
        f"run {together.run_seconds:.1f} s)"
    )

    t0 = time.perf_counter()
    compile_s = run_s = 0.0
    for i in range(len(lanes)):
        alone = trainer.train_lanes(model, inputs.lane(i), **kw)
        compile_s += alone.compile_seconds
        run_s += alone.run_seconds
    t_loop = time.perf_counter() - t0
    print(f"loop        : {t_loop:7.1f} s  (compile {compile_s:.1f} s, run {run_s:.1f} s)")
    print(
        f"ratio loop / one program: {t_loop / t_one:.2f}x (run only: {run_s / together.run_seconds:.2f}x)"
    )


if __name__ == "__main__":
    main()
