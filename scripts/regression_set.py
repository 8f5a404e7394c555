"""No-behaviour-change guard rail: a fixed set of small real-data runs, and a comparer.

Two subcommands:

  python scripts/regression_set.py run OUT [--data-dir DIR] [--expect-slbjax DIR]
  python scripts/regression_set.py compare A B [--rtol 1e-6]

``run`` executes a FIXED set of small runs with the ``slbjax`` importable by
the interpreter that runs this script (``sys.executable -m slbjax.cli ...``),
each into its own folder ``OUT/<name>``.  Run the script *by path* with the
interpreter of the install you want to test, e.g.::

  old-checkout/.venv/bin/python scripts/regression_set.py run /tmp/before \\
      --data-dir ../shared/data --expect-slbjax old-checkout

Running by path puts this ``scripts/`` folder (not the repository root) on
``sys.path``, and every subprocess runs with ``OUT`` as its working folder, so
``slbjax`` resolves to the interpreter's install, not to a checkout that
happens to be the current folder.  Where ``slbjax`` was imported from is
printed and stored in ``OUT/timings.json``; ``--expect-slbjax DIR`` stops the
run unless it lies under ``DIR``.  ``SLBJAX_CACHE`` is set to ``OUT/.cache``
(parsing caches of different versions do not mix); ``XLA_FLAGS`` and
``PYTHONPATH`` are removed from the environment except where a run sets them.
Each subprocess's wall time and return code go to ``OUT/timings.json`` and
its output to ``OUT/logs/<name>.log``; the first failure stops the set.

``compare`` walks every ``metrics.json`` under ``A`` (recursively) and its
counterpart at the same relative path under ``B`` and compares every numeric
value except keys containing ``seconds`` (wall times); strings must be equal
once the ``A``/``B`` roots in them are masked.  Every ``predictions.csv``,
``history.csv``, ``per_*.csv`` (``per_cell*``, and the CVAE's ``per_case``/``per_soc``)
and ``router_weights.csv`` is compared column by column: numeric
columns numerically, the others for equality (columns whose name contains
``seconds`` are skipped as well).  A value differs when
``|a - b| > max(rtol * max(|a|, |b|), 1e-9)``; NaN equals NaN.  One line per
file (identical / max abs and rel difference / missing) and a summary line
are printed; the exit status is 1 if anything differs or is missing.

Only the standard library, numpy and pandas are used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ATOL = 1e-9
CSV_PATTERNS = ("predictions.csv", "history.csv", "per_*.csv", "router_weights.csv")

# (name, slbjax.cli arguments, extra environment).  The order is fixed; so are the arguments.
CLI_RUNS: list[tuple[str, list[str], dict[str, str]]] = [
    ("imoe-ul", ["run", "imoe-ul", "--smoke"], {}),
    ("imoe-lsd", ["run", "imoe-lsd", "--smoke"], {}),
    ("cvae-pulse-nmc2.1", ["run", "cvae-pulse", "--smoke", "--set", "data.battery=NMC2.1"], {}),
    # learning rate 3e-3: with the default 1e-4 no member stops within 30 epochs; with 3e-3
    # they stop at different epochs (3 -> 2 -> 1 lanes, all stopped by epoch ~17), so the
    # narrowing of the ensemble program is exercised.
    ("imoe-ul-ensemble3", ["run", "imoe-ul", "--smoke", "--set", "train.ensemble_size=3",
                           "--set", "train.epochs=30", "--set", "train.patience=3",
                           "--set", "train.chunk=1", "--set", "train.learning_rate=3e-3"], {}),
    ("sweep-imoe-experts", ["sweep", "imoe-experts", "--smoke"], {}),
    ("imoe-ul-data-parallel", ["run", "imoe-ul", "--smoke", "--set", "train.data_parallel=true"],
     {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}),
    ("imoe-ul-patchtst", ["run", "imoe-ul", "--smoke", "--set", "model.arch=patchtst"], {}),
]

HISTORY_CODE = """\
import sys
from pathlib import Path
from slbjax.history import run_history_baselines
try:
    from slbjax.history import MLPSettings
except ImportError:  # the name since the history baselines became a config family
    from slbjax.configs.history import HistoryMlp as MLPSettings
data_dir, root = Path(sys.argv[1]), Path(sys.argv[2])
rows = run_history_baselines(["CY25-05_1"], data_dir, root, seeds=2, mlp=MLPSettings(epochs=30))
print(f"history: {len(rows)} result rows")
"""

WHERE_CODE = """\
import json, sys
import jax, slbjax, slbjax.experiments
print(json.dumps({"python": sys.executable, "slbjax": slbjax.__file__,
                  "slbjax.experiments": slbjax.experiments.__file__,
                  "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}))
"""


# ----------------------------------------------------------------------------- run

def _env(out: Path, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("XLA_FLAGS", "PYTHONPATH"):
        env.pop(key, None)
    env["SLBJAX_CACHE"] = str(out / ".cache")
    env.update(extra)
    return env


def _run_one(name: str, argv: list[str], extra: dict[str, str], out: Path, timings: list[dict]) -> None:
    log = out / "logs" / f"{name}.log"
    print(f"[{name}] starting", flush=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        fh.write(f"$ {' '.join(argv)}\n# extra env: {extra}\n")
        fh.flush()
        proc = subprocess.run(argv, cwd=out, env=_env(out, extra), stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    timings.append({"name": name, "argv": argv, "env": extra, "returncode": proc.returncode,
                    "wall_seconds": round(seconds, 2)})
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"[{name}] rc={proc.returncode} {seconds:.1f} s", flush=True)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-20:]
        sys.exit(f"regression_set: run {name!r} failed with exit status {proc.returncode}; "
                 f"see {log}. Last lines:\n" + "\n".join(tail))


def cmd_run(args) -> int:
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"regression_set: {out} exists and is not empty; choose a new folder")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir).resolve() if args.data_dir else None

    where = subprocess.run([sys.executable, "-c", WHERE_CODE], cwd=out, env=_env(out, {}),
                           capture_output=True, text=True)
    if where.returncode != 0:
        sys.exit(f"regression_set: cannot import slbjax with {sys.executable}:\n{where.stderr}")
    info = json.loads(where.stdout.strip().splitlines()[-1])
    print(f"slbjax: {info['slbjax']} (experiments: {info['slbjax.experiments']}, jax {info['jax']})",
          flush=True)
    if args.expect_slbjax:
        root = Path(args.expect_slbjax).resolve()
        for key in ("slbjax", "slbjax.experiments"):
            if not Path(info[key]).resolve().is_relative_to(root):
                sys.exit(f"regression_set: {key} is imported from {info[key]}, not from under {root}")
    (out / "environment.json").write_text(json.dumps(info, indent=2) + "\n")

    timings: list[dict] = []
    data_args = ["--data-dir", str(data_dir)] if data_dir else []
    for name, cli, extra in CLI_RUNS:
        argv = [sys.executable, "-m", "slbjax.cli", *cli, *data_args, "--workdir", str(out / name)]
        _run_one(name, argv, extra, out, timings)
    if data_dir is None:
        data_dir = Path(os.environ.get("SLBJAX_DATA", "")).resolve()
    _run_one("history", [sys.executable, "-c", HISTORY_CODE, str(data_dir), str(out / "history")],
             {}, out, timings)
    total = sum(t["wall_seconds"] for t in timings)
    print(f"all {len(timings)} runs passed, {total:.1f} s in total; timings in {out / 'timings.json'}")
    return 0


# ----------------------------------------------------------------------------- compare

class Diff:
    """Largest absolute and relative difference seen, and how many values break the tolerance."""

    def __init__(self, rtol: float):
        self.rtol, self.max_abs, self.max_rel, self.bad, self.count, self.notes = rtol, 0.0, 0.0, 0, 0, []

    def numbers(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.asarray(a, float), np.asarray(b, float)
        self.count += a.size
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = np.abs(a - b)
            diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
            scale = np.maximum(np.abs(a), np.abs(b))
            rel = np.where(diff == 0, 0.0, np.where(scale > 0, diff / scale, np.inf))
            rel = np.where(np.isnan(rel), np.inf, rel)  # inf / inf
            tol = np.maximum(self.rtol * np.where(np.isfinite(scale), scale, 0.0), ATOL)
        if diff.size:
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.max_rel = max(self.max_rel, float(rel.max()))
        self.bad += int((diff > tol).sum())

    def note(self, msg: str) -> None:
        self.bad += 1
        self.notes.append(msg)

    def line(self) -> str:
        if self.bad == 0 and self.max_abs == 0:
            return "identical"
        status = "DIFFERS" if self.bad else "within rtol"
        text = f"{status}: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, {self.bad} beyond tolerance"
        if self.notes:
            text += "; " + "; ".join(self.notes[:5]) + (" ..." if len(self.notes) > 5 else "")
        return text


def _flatten(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return {prefix: obj}
    flat: dict[str, object] = {}
    for k, v in items:
        flat.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _compare_metrics(pa: Path, pb: Path, roots: tuple[str, str], d: Diff) -> None:
    fa, fb = _flatten(json.loads(pa.read_text())), _flatten(json.loads(pb.read_text()))
    for key in sorted(set(fa) | set(fb)):
        if "seconds" in key:
            continue
        if key not in fa or key not in fb:
            d.note(f"{key} only in {'A' if key in fa else 'B'}")
            continue
        va, vb = fa[key], fb[key]
        if _is_number(va) and _is_number(vb):
            d.numbers(np.array([va]), np.array([vb]))
        elif _is_number(va) or _is_number(vb):
            d.note(f"{key}: {va!r} vs {vb!r}")
        elif isinstance(va, str) and isinstance(vb, str):
            if va.replace(roots[0], "<ROOT>") != vb.replace(roots[1], "<ROOT>"):
                d.note(f"{key}: {va!r} vs {vb!r}")
        elif va != vb:  # None, bool, empty containers
            d.note(f"{key}: {va!r} vs {vb!r}")


def _compare_csv(pa: Path, pb: Path, d: Diff) -> None:
    a, b = pd.read_csv(pa), pd.read_csv(pb)
    if list(a.columns) != list(b.columns):
        d.note(f"columns differ: {sorted(set(a.columns) ^ set(b.columns))}")
    if len(a) != len(b):
        d.note(f"{len(a)} vs {len(b)} rows")
        return
    for col in [c for c in a.columns if c in b.columns and "seconds" not in c]:
        ca, cb = a[col], b[col]
        if pd.api.types.is_numeric_dtype(ca) and pd.api.types.is_numeric_dtype(cb):
            d.numbers(ca.to_numpy(float), cb.to_numpy(float))
        else:
            sa, sb = ca.astype(str).to_numpy(), cb.astype(str).to_numpy()
            n = int((sa != sb).sum())
            if n:
                d.note(f"column {col}: {n} values differ")


def _files(root: Path) -> list[Path]:
    found = set(root.rglob("metrics.json"))
    for pattern in CSV_PATTERNS:
        found.update(root.rglob(pattern))
    return sorted(p.relative_to(root) for p in found if ".cache" not in p.relative_to(root).parts)


def cmd_compare(args) -> int:
    ra, rb = Path(args.a).resolve(), Path(args.b).resolve()
    for r in (ra, rb):
        if not r.is_dir():
            sys.exit(f"regression_set: {r} is not a folder")
    in_a, in_b = _files(ra), _files(rb)
    counts = {"identical": 0, "within rtol": 0, "DIFFERS": 0, "missing": 0}
    overall_abs = overall_rel = 0.0
    for rel in sorted(set(in_a) | set(in_b)):
        pa, pb = ra / rel, rb / rel
        if not pa.exists() or not pb.exists():
            counts["missing"] += 1
            print(f"{rel}: missing in {'A' if not pa.exists() else 'B'}")
            continue
        d = Diff(args.rtol)
        try:
            if rel.name == "metrics.json":
                _compare_metrics(pa, pb, (str(ra), str(rb)), d)
            else:
                _compare_csv(pa, pb, d)
        except (ValueError, json.JSONDecodeError, pd.errors.ParserError) as e:
            d.note(f"cannot read: {e}")
        line = d.line()
        counts[line.split(":")[0]] += 1
        overall_abs, overall_rel = max(overall_abs, d.max_abs), max(overall_rel, d.max_rel)
        print(f"{rel}: {line}")
    n = sum(counts.values())
    ok = counts["DIFFERS"] == 0 and counts["missing"] == 0 and n > 0
    print(f"summary: {n} files; {counts['identical']} identical, {counts['within rtol']} within rtol "
          f"{args.rtol:g}, {counts['DIFFERS']} differ, {counts['missing']} missing; "
          f"max abs {overall_abs:.3g}, max rel {overall_rel:.3g} -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the fixed set of small runs into OUT")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--data-dir", help="folder laid out like shared/data (default: $SLBJAX_DATA)")
    p.add_argument("--expect-slbjax", metavar="DIR",
                   help="stop unless slbjax is imported from under DIR")
    p.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help="compare two OUT folders of `run`")
    c.add_argument("a", metavar="A")
    c.add_argument("b", metavar="B")
    c.add_argument("--rtol", type=float, default=1e-6)
    c.set_defaults(func=cmd_compare)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
