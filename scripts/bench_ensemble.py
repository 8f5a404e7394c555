"""Benchmark 3: N ensemble members in one program vs N separate trainings.

Usage::

    python scripts/bench_ensemble.py --data-dir /path/to/shared/data            # N = 1, 4, 16, 64
    python scripts/bench_ensemble.py --members 1 4 16 --epochs 5

Data: UL-NCA CY25-05_1 through slbjax's pipeline (1326 training windows = 42
steps of 32, 241 validation windows), as in ``bench_imoe_train.py``.  Every
training runs exactly ``--epochs`` epochs (patience above it, so no member
stops early and both sides do the same work).

For each N, measured in one process, one after the other:

* one program: ``fit_members`` with seeds 0..N-1 (the members vmapped in
  one jitted epoch function), wall time including its compilation, and its
  steady time per epoch after compilation;
* sequential: N calls of ``fit_members`` with one seed each, as N separate
  runs would do (each compiles its own program), wall time in total, and the
  sum of their steady per-epoch times x epochs (what N runs would cost if
  compilation were free).

Printed: both wall times, the ratio sequential / one program (the goal: at
least 3x at N = 16 on a CPU), and the ratio without compilation.

``--patience P``: trainings stop early as real ones do, so members stop at
different epochs; the one program then narrows to its active members as
they stop (``fit_members``), and the sum of the members' epochs is printed
(the same on both sides: each member stops where its separate training
stops).  Member i of
the program computes exactly what the separate run with seed i computes
(``tests/test_imoe_model.py::test_vmapped_members_equal_separate_trainings``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from slbjax.configs.imoe import ImoeConfig, ImoeData
from slbjax.data.imoe_inputs import training_batches
from slbjax.train.imoe import fit_members


def train(model, train_b, val_b, seeds: list[int], epochs: int, batch_size: int,
          patience: int | None = None) -> tuple[float, float, int]:
    """(wall seconds including compilation, steady seconds per epoch, epochs the members ran)."""
    t0 = time.perf_counter()
    res = fit_members(model, train_b, val_b, seeds=seeds, epochs=epochs, batch_size=batch_size,
                      learning_rate=1e-4, patience=patience or epochs + 1, chunk=1, log=lambda s: None)
    return time.perf_counter() - t0, res[0].seconds_per_epoch, sum(r.epochs_run for r in res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="default: $SLBJAX_DATA")
    ap.add_argument("--members", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--patience", type=int, default=None,
                    help="early-stopping patience (default: none, every training runs --epochs); "
                         "with it members stop at different epochs, as in real trainings")
    args = ap.parse_args()
    data_dir = args.data_dir or (Path(os.environ["SLBJAX_DATA"]) if os.environ.get("SLBJAX_DATA") else None)

    import jax

    cfg = ImoeConfig(data=ImoeData(dataset="UL", subset="NCA", condition="CY25-05_1"))
    model, train_b, val_b = training_batches(cfg, data_dir)
    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()} ({jax.default_backend()}), "
          f"{os.cpu_count()} cores; UL-NCA CY25-05_1, {train_b.size} training windows, "
          f"batch {args.batch_size}, {args.epochs} epochs per training")
    train(model, train_b, val_b, [0], 1, args.batch_size)  # warm-up: first JAX use, kernels, caches
    if args.patience:
        print(f"early stopping: patience {args.patience}, at most {args.epochs} epochs")
        print(f"{'N':>4} {'one program s':>14} {'sequential s':>13} {'ratio':>7} {'member epochs':>14}")
    else:
        print(f"{'N':>4} {'one program s':>14} {'(epoch s)':>10} {'sequential s':>13} {'(sum epoch s)':>14} "
              f"{'ratio':>7} {'ratio w/o compile':>18}")
    for n in args.members:
        seeds = list(range(n))
        wall_one, epoch_one, ran_one = train(model, train_b, val_b, seeds, args.epochs, args.batch_size,
                                             args.patience)
        wall_seq, epoch_seq, ran_seq = 0.0, 0.0, 0
        for s in seeds:
            w, e, r = train(model, train_b, val_b, [s], args.epochs, args.batch_size, args.patience)
            wall_seq += w
            epoch_seq += e
            ran_seq += r
        if args.patience:
            assert ran_one == ran_seq, "members must stop where their separate trainings stop"
            print(f"{n:>4} {wall_one:>14.1f} {wall_seq:>13.1f} {wall_seq / wall_one:>6.2f}x {ran_one:>14d}",
                  flush=True)
        else:
            print(f"{n:>4} {wall_one:>14.1f} {epoch_one:>10.3f} {wall_seq:>13.1f} {epoch_seq:>14.3f} "
                  f"{wall_seq / wall_one:>6.2f}x {epoch_seq / epoch_one:>17.2f}x", flush=True)


if __name__ == "__main__":
    main()
