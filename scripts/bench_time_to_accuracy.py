"""Time to accuracy of the iMOE training recipes: ``train.recipe=paper`` (the default) against
``train.recipe=fast``, side by side on one machine.

Usage::

    python scripts/bench_time_to_accuracy.py --workdir tta --seeds 10
    python scripts/bench_time_to_accuracy.py --workdir tta --seeds 3 \\
        --conditions CY45-05_1 CY25-025_1 LSD

For each condition (UL-NCA conditions, or ``LSD``) both recipes train seeds
0..N-1 as the members of one program (``scripts/study_imoe_protocol.py``
does the running; finished runs under ``--workdir`` are reused, cut-off ones
resumed, so the two arms of a condition always come from this machine).
Printed per recipe: test MAPE over the seeds (mean +- std), the ensemble's
MAPE, the median best-validation epoch and epochs run, seconds per epoch of
the whole program and its wall time; then, per condition, fast / paper wall
time (goal <= 0.25) and the difference of the mean test MAPE (goal within
the paper's seed std, 0.10 %).  Checkpoints are chosen on validation cells
only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study_imoe_protocol import row, run_variant

RECIPES = {"paper": "default", "fast": "fast"}  # recipe -> variant of the study
SEED_STD_PCT = 0.10  # the paper's std over ten runs on UL-NCA CY25-05_1 (fig. 3c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--conditions", nargs="+", default=["CY25-05_1"])
    ap.add_argument("--set", action="append", default=[], help="extra override for both recipes")
    args = ap.parse_args()
    table = {}
    for cond in args.conditions:
        for recipe, variant in RECIPES.items():
            folder = args.workdir / f"{cond}-{variant}-n{args.seeds}"
            run_variant(variant, folder, args.seeds, cond, args.set)
            table[cond, recipe] = row(variant, folder)
    print(f"test MAPE % over seeds 0..{args.seeds - 1} (members of one program)")
    print(f"{'condition':11s} {'recipe':6s} {'mean':>6s} {'std':>6s} {'ensemble':>8s} {'best ep':>7s} "
          f"{'epochs':>6s} {'s/epoch':>7s} {'wall s':>7s}")
    for (cond, recipe), r in table.items():
        print(f"{cond:11s} {recipe:6s} {r['mean']:6.3f} {r['std']:6.3f} {r['ensemble']:8.3f} "
              f"{r['best_epoch']:7.0f} {r['epochs']:6.0f} {r['s_per_epoch']:7.3f} {r['wall_s']:7.0f}")
    for cond in args.conditions:
        p, f = table[cond, "paper"], table[cond, "fast"]
        ratio, diff = f["wall_s"] / p["wall_s"], f["mean"] - p["mean"]
        print(f"{cond}: fast / paper wall {ratio:.3f} (goal <= 0.25: "
              f"{'met' if ratio <= 0.25 else 'not met'}); mean MAPE fast - paper {diff:+.3f} % "
              f"(goal within {SEED_STD_PCT}: {'met' if abs(diff) <= SEED_STD_PCT else 'not met'})")


if __name__ == "__main__":
    main()
