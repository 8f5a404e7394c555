"""Paired study of the iMOE training protocol: slbjax's default against the published code's.

Usage::

    python scripts/study_imoe_protocol.py --workdir study --seeds 10
    python scripts/study_imoe_protocol.py --workdir study --seeds 3 --condition CY45-05_1 \\
        --variants default authors
    python scripts/study_imoe_protocol.py --workdir study --report-only   # table of what exists

Each variant is one ``slbjax run`` on UL-NCA (``--condition``, default
CY25-05_1) with ``train.ensemble_size`` = ``--seeds``: the seeds are the
members of one program, so every variant sees the same seeds 0..N-1 and the
same data.  Variants (see ``experiments/imoe_ul_authors.py``):

* ``default``: ``imoe-ul`` as shipped;
* ``authors``: ``imoe-ul-authors``, every training choice of the published code;
* ``weights``, ``select``, ``raw_target``, ``raw_load``: ``imoe-ul`` with one of
  those choices switched alone;
* ``fast``: ``imoe-ul`` with ``train.recipe=fast`` (``scripts/bench_time_to_accuracy.py``
  weighs it against the default).

``--condition LSD`` runs ``imoe-lsd`` (variants ``default`` and ``fast``).

Printed per variant: test MAPE over the members (mean +- std, min-max), the
ensemble's MAPE, the median best-validation epoch, the epochs run and the
wall time of the training; the selection uses training and validation cells
only.  Finished variants are reused when the script is run again (the run
folders are ordinary slbjax runs under ``--workdir``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "default": ("imoe-ul", []),
    "authors": ("imoe-ul-authors", []),
    "weights": ("imoe-ul", ["train.mse_weight=1.0", "train.router_loss_weight=0.5"]),
    "select": ("imoe-ul", ["train.select_on=loss"]),
    "raw_target": ("imoe-ul", ["model.target_scaling=false"]),
    "raw_load": ("imoe-ul", ["model.load_scaling=false"]),
    "fast": ("imoe-ul", ["train.recipe=fast"]),
}


def variant_run(name: str, seeds: int, condition: str, extra: list[str]) -> tuple[str, list[str]]:
    """(experiment, --set values) of one variant; ``condition`` ``LSD`` runs ``imoe-lsd``."""
    experiment, sets = VARIANTS[name]
    if condition == "LSD":
        if experiment != "imoe-ul":
            raise SystemExit(f"variant {name} exists for UL only")
        experiment, where = "imoe-lsd", []
    else:
        where = [f"data.condition={condition}"]
    return experiment, [*sets, f"train.ensemble_size={seeds}", "train.seed=0", *where, *extra]


def run_variant(name: str, folder: Path, seeds: int, condition: str, extra: list[str]) -> None:
    """Runs one variant into ``folder``: a finished run of exactly its config is reused, a
    cut-off one resumed, any other run of ours there replaced."""
    from slbjax.experiments import load

    from slbjax import rundir
    from slbjax.config import apply_overrides

    experiment, sets = variant_run(name, seeds, condition, extra)
    cfg = apply_overrides(load(experiment).get_config(), sets)
    if rundir.finished_metrics(folder, cfg, experiment) is not None:
        print(f"[study] {name}: finished run in {folder}, reused", file=sys.stderr)
        return
    cmd = ["run", experiment, "--workdir", str(folder), *(a for s in sets for a in ("--set", s))]
    if folder.is_dir():
        cmd.append("--resume" if rundir.resumable(rundir.RunPoint(experiment, cfg, folder)) is None
                   else "--overwrite")
    print(f"[study] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "slbjax.cli", *cmd], check=True)


def row(name: str, folder: Path) -> dict | None:
    try:
        m = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    n = int(m.get("ensemble_size", 1))
    mapes = [m[f"member{i}_test_mape_pct"] for i in range(n)] if n > 1 else [m["test_mape_pct"]]
    best = [m[f"member{i}_best_epoch"] for i in range(n)] if n > 1 else [m["best_epoch"]]
    ran = [m[f"member{i}_epochs_run"] for i in range(n)] if n > 1 else [m["epochs_run"]]
    return {"variant": name, "n": n, "mean": statistics.mean(mapes),
            "std": statistics.stdev(mapes) if n > 1 else float("nan"), "min": min(mapes),
            "max": max(mapes), "ensemble": m["test_mape_pct"], "best_epoch": statistics.median(best),
            "epochs": statistics.median(ran), "wall_s": m["train_seconds"],
            "s_per_epoch": m["seconds_per_epoch"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--condition", default="CY25-05_1")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", action="append", default=[], help="extra override for every variant")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    folders = {v: args.workdir / f"{args.condition}-{v}-n{args.seeds}" for v in args.variants}
    if not args.report_only:
        for v in args.variants:
            run_variant(v, folders[v], args.seeds, args.condition, args.set)
    print(f"{'' if args.condition == 'LSD' else 'UL-NCA '}{args.condition}, test MAPE % over seeds 0..{args.seeds - 1} (members of one program)")
    print(f"{'variant':11s} {'n':>3s} {'mean':>7s} {'std':>6s} {'min-max':>13s} {'ensemble':>8s} "
          f"{'best ep':>7s} {'epochs':>6s} {'wall s':>7s}")
    for v in args.variants:
        r = row(v, folders[v])
        if r is None:
            print(f"{v:11s} (not run)")
            continue
        print(f"{v:11s} {r['n']:3d} {r['mean']:7.3f} {r['std']:6.3f} {r['min']:6.3f}-{r['max']:6.3f} "
              f"{r['ensemble']:8.3f} {r['best_epoch']:7.0f} {r['epochs']:6.0f} {r['wall_s']:7.0f}")


if __name__ == "__main__":
    main()
