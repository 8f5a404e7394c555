"""The ``slbjax`` command.

  slbjax list
  slbjax show EXPERIMENT [--smoke] [--set k=v ...]
  slbjax run EXPERIMENT [--set k=v ...] [--data-dir DIR] [--workdir DIR] [--smoke] [--overwrite | --resume]
  slbjax sweep EXPERIMENT --grid k=v1,v2 [--grid ...] [--set k=v ...] [--workdir DIR] [--smoke]
  slbjax report SUITE [--smoke] [--set KEY=VALUE ...] [--data-dir DIR] [--workdir DIR]
  slbjax predict --run DIR --input PATH [-o OUT.csv] [--overwrite] [--refuse-out-of-distribution]
  slbjax generate --run DIR --soc 0.30 --soh 0.85 [-n 1000] -o OUT.csv
  slbjax triage --run DIR --input PATH [--groups K | --group-size N] [--apps FILE] -o OUT
                [--refuse-out-of-distribution]

Errors a user can fix are printed as one ``error: ...`` line (exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
from pathlib import Path

from slbjax.errors import SlbjaxError


def _experiments():
    from slbjax import experiments

    return experiments


def cmd_list(args) -> int:
    exps = _experiments()
    for name in exps.names():
        print(f"{name:20s} {exps.summary(name)}")
    return 0


def cmd_show(args) -> int:
    from slbjax.config import apply_overrides, describe

    module = _experiments().load(args.experiment)
    cfg = apply_overrides(module.get_config(smoke=args.smoke), args.set or [])
    rows = describe(cfg)
    print(f"# {args.experiment}{' (smoke)' if args.smoke else ''}: {type(cfg).__name__}, "
          f"family {type(cfg).family}; set any key with --set KEY=VALUE")
    wk, wt = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for key, tp, value in rows:
        print(f"{key:{wk}s}  {tp:{wt}s}  {value}")
    return 0


def _experiment_list() -> str:
    exps = _experiments()
    return "experiments:\n" + "\n".join(f"  {n:20s} {exps.summary(n)}" for n in exps.names())


def cmd_run(args) -> int:
    from slbjax import rundir, runners
    from slbjax.config import apply_overrides
    from slbjax.paths import resolve_data_dir

    module = _experiments().load(args.experiment)
    cfg = apply_overrides(module.get_config(smoke=args.smoke), args.set or [])
    if _process_index() != 0:
        # every process trains (the collectives need them all); only process 0 keeps outputs
        import tempfile

        run_dir = Path(tempfile.mkdtemp(prefix=f"slbjax-proc{_process_index()}-"))
        runners.for_config(cfg).train_and_evaluate(cfg, resolve_data_dir(args.data_dir), run_dir)
        return 0
    run_dir = Path(args.workdir) if args.workdir else rundir.default_run_dir(args.experiment)
    print(f"run folder: {run_dir}", file=sys.stderr, flush=True)
    point = rundir.RunPoint(args.experiment, cfg, run_dir)
    if args.resume and not args.workdir:
        from slbjax.errors import ConfigError

        raise ConfigError("--resume needs the --workdir of the run to continue")
    (metrics,), _ = rundir.execute([point], resolve_data_dir(args.data_dir), reuse=False,
                                   overwrite=args.overwrite, resume=args.resume)
    print(f"wrote {run_dir / rundir.METRICS_FILE}", file=sys.stderr)
    for k in ("test_mape_pct", "test_rmse_ah", "test_r2", "interp_soh_mape_generated_pct",
              "extrap_soh_mape_generated_pct", "train_seconds"):
        if k in metrics:
            print(f"{k} = {metrics[k]}")
    return 0


def _process_index() -> int:
    import jax

    return jax.process_index() if _DISTRIBUTED else 0


_DISTRIBUTED = False


def start_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize`` with CPU collectives over gloo; before any device use.

    With no arguments JAX detects the cluster (SLURM, Open MPI, TPU/GKE ...);
    for a hand launch give all three (or JAX_COORDINATOR_ADDRESS).
    """
    global _DISTRIBUTED
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)
    _DISTRIBUTED = True


def cmd_sweep(args) -> int:
    from slbjax import sweep
    from slbjax.config import apply_overrides
    from slbjax.paths import resolve_data_dir

    module = _experiments().load(args.experiment)
    base = apply_overrides(module.get_config(smoke=args.smoke), args.set or [])
    grid = sweep.merge_grids(sweep.experiment_grid(module, args.smoke), sweep.parse_grid(args.grid or []))
    workdir = Path(args.workdir) if args.workdir else Path("runs") / f"sweep-{args.experiment}"
    table = sweep.run_sweep(args.experiment, base, grid, resolve_data_dir(args.data_dir), workdir,
                            base_overrides=args.set or [])
    cols = ["point"] + [c for c in sweep.MAIN_METRICS if c in table.columns]
    print(table[cols].to_string(index=False))
    print(f"wrote {workdir / 'sweep.csv'}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from slbjax import report
    from slbjax.paths import resolve_data_dir

    workdir = Path(args.workdir) if args.workdir else Path("runs") / f"report-{args.suite}{'-smoke' if args.smoke else ''}"
    path = report.run_report(args.suite, args.smoke, resolve_data_dir(args.data_dir), workdir,
                             args.set or [])
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _refuse_existing(path: Path | None, overwrite: bool) -> None:
    from slbjax.errors import RunDirError

    if path is not None and path.exists() and not overwrite:
        raise RunDirError(f"{path} already exists; choose another -o or pass --overwrite")


def cmd_predict(args) -> int:
    from slbjax.inference import load_run

    out = Path(args.output) if args.output else None
    _refuse_existing(out, args.overwrite)
    run = load_run(args.run)
    frames = run.iter_predict(args.input, refuse_out_of_distribution=args.refuse_out_of_distribution)
    counts = _Counts()
    with csv_output(out) as (fh, direct):
        if direct and args.refuse_out_of_distribution:
            frames = list(frames)  # every cell checked before a line reaches the reader
        fh.write(",".join(run.columns) + "\n")
        fh.flush()  # a full disk fails here, before any cell is predicted
        for frame in frames:
            frame.to_csv(fh, header=False, index=False)
            counts.add(frame)
    if out is not None:
        print(f"wrote {counts.rows} rows ({counts}) to {out}", file=sys.stderr)
    return 0


class _Counts:
    """Rows, cells by split and cells out of distribution of a prediction, for its last line."""

    def __init__(self):
        self.rows, self.splits, self.outside, self.checked = 0, {}, 0, True

    def add(self, frame) -> None:
        self.rows += len(frame)
        split = frame.split.iloc[0]
        self.splits[split] = self.splits.get(split, 0) + 1
        if frame.in_distribution.isna().iloc[0]:
            self.checked = False
        elif not frame.in_distribution.iloc[0]:
            self.outside += 1

    def __str__(self) -> str:
        n = sum(self.splits.values())
        if not n:
            return "no cell with a valid cycle"
        text = f"{n} cell{'s' if n != 1 else ''}: " + ", ".join(
            f"{self.splits[k]} {k}" for k in ("train", "val", "test", "other", "unknown")
            if k in self.splits)
        return text + (f"; {self.outside} out of distribution" if self.checked else "; no range check")


@contextlib.contextmanager
def csv_output(out: Path | None):
    """Yields (text handle, direct) for a CSV: standard output (``out`` None) or a device such
    as ``/dev/stdout`` written directly (``direct`` True), else a temporary file beside ``out``
    moved into place when the block ends without error, so a full disk, a kill or a refusal
    leaves no half-written file.  An output folder fails before the block runs; file-system
    faults name ``out``."""
    if out is None:
        yield sys.stdout, True
        sys.stdout.flush()
        return
    try:
        if out.exists() and not out.is_file() and not out.is_dir():
            with open(out, "w", newline="") as fh:
                yield fh, True
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file name", str(out))
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", newline="") as fh:
                yield fh, False
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        if e.filename is None or str(e.filename).startswith(str(out.with_name(f".{out.name}.tmp"))):
            raise OSError(e.errno, e.strerror, str(out)) from None
        raise


def cmd_generate(args) -> int:
    from slbjax.inference import generate

    out = generate(Path(args.run), args.soc, args.soh, args.n, Path(args.output),
                   case=args.case, seed=args.seed)
    print(f"wrote {args.n} generated samples to {out}", file=sys.stderr)
    return 0


def cmd_triage(args) -> int:
    from slbjax.decide import triage

    summary = triage.run(Path(args.run), Path(args.input), Path(args.output),
                         num_groups=args.groups, group_size=args.group_size,
                         apps_path=Path(args.apps) if args.apps else None,
                         cell_voltage_v=args.cell_voltage, overwrite=args.overwrite,
                         refuse_out_of_distribution=args.refuse_out_of_distribution)
    print(f"{summary['num_cells']} cells in {summary['num_groups']} groups; wrote {args.output}",
          file=sys.stderr)
    return 0


def cmd_interpret(args) -> int:
    from slbjax.interpret.report import interpret
    from slbjax.paths import resolve_data_dir

    out = Path(args.output) if args.output else Path(args.run) / "interpret"
    _refuse_existing(out, args.overwrite)  # --overwrite replaces the files interpret writes, nothing else
    interpret(Path(args.run), out, resolve_data_dir(args.data_dir), linear_run=args.linear,
              draws=args.draws, seed=args.seed)
    print(f"wrote {out / 'interpret.md'}", file=sys.stderr)
    return 0


def build_parser(list_experiments: bool = False) -> argparse.ArgumentParser:
    """The argument parser; ``list_experiments`` puts the experiments into the help of
    ``run`` and ``show`` (read only when help is asked for: it imports every experiment)."""
    from slbjax import __version__

    p = argparse.ArgumentParser(prog="slbjax", description="Second-life battery research in JAX.")
    p.add_argument("--version", action="version", version=f"slbjax {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    listed = {"epilog": _experiment_list() if list_experiments else None,
              "formatter_class": argparse.RawDescriptionHelpFormatter}

    sub.add_parser("list", help="list experiment names").set_defaults(fn=cmd_list)

    sh = sub.add_parser("show", help="print an experiment's resolved config: every key, its type "
                        "and value", **listed)
    sh.add_argument("experiment")
    sh.add_argument("--smoke", action="store_true", help="the smoke config")
    sh.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override a config value (repeatable)")
    sh.set_defaults(fn=cmd_show)

    r = sub.add_parser("run", help="train and evaluate one experiment", **listed)
    r.add_argument("experiment")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    r.add_argument("--data-dir", help="folder laid out like shared/data (default: $SLBJAX_DATA)")
    r.add_argument("--workdir", help="the run's own folder (default: a fresh one under runs/)")
    r.add_argument("--smoke", action="store_true", help="tiny size, for a quick check")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the run in --workdir (only the files it wrote)")
    r.add_argument("--resume", action="store_true",
                   help="continue the killed or interrupted run in --workdir (same experiment, "
                        "--set values and --smoke) from its saved training state")
    r.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (multi-host data parallel)")
    r.add_argument("--coordinator", help="with --distributed: host:port of process 0")
    r.add_argument("--num-processes", type=int, help="with --distributed: number of processes")
    r.add_argument("--process-id", type=int, help="with --distributed: this process's index")
    r.set_defaults(fn=cmd_run)

    sw = sub.add_parser("sweep", help="run a cartesian grid of configs and gather one table")
    sw.add_argument("experiment")
    sw.add_argument("--grid", action="append", metavar="SECTION.KEY=V1,V2,...",
                    help="values of one key (repeatable: the cartesian product is run); "
                         "adds to or replaces the experiment's own grid")
    sw.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override for every point (repeatable)")
    sw.add_argument("--data-dir", help="folder laid out like shared/data (default: $SLBJAX_DATA)")
    sw.add_argument("--workdir", help="sweep folder (default: runs/sweep-EXPERIMENT); finished points are reused")
    sw.add_argument("--smoke", action="store_true", help="tiny size, for a quick check")
    sw.set_defaults(fn=cmd_sweep)

    rp = sub.add_parser("report", help="run a paper suite and write report.md, results.csv, figures")
    rp.add_argument("suite", choices=["imoe-paper", "cvae-paper", "all"])
    rp.add_argument("--data-dir", help="folder laid out like shared/data (default: $SLBJAX_DATA)")
    rp.add_argument("--workdir", help="report folder (default: runs/report-SUITE); finished runs are reused")
    rp.add_argument("--smoke", action="store_true", help="tiny size: the same tables and figures in minutes")
    rp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override a config value of every run that has the key, before the "
                         "suite's own values (repeatable; e.g. train.recipe=fast)")
    rp.set_defaults(fn=cmd_report)

    pr = sub.add_parser("predict", help="predict trajectories with a finished iMOE run")
    pr.add_argument("--run", required=True, help="run folder")
    pr.add_argument("--input", required=True, help="a cell file or a folder of cell files")
    pr.add_argument("-o", "--output", help="output CSV (default: standard output)")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    pr.add_argument("--refuse-out-of-distribution", action="store_true",
                    help="stop with an error, writing nothing, when a cell lies outside the run's "
                         "training ranges (default: a warning per cell on stderr and "
                         "in_distribution=False in the output)")
    pr.set_defaults(fn=cmd_predict)

    t = sub.add_parser("triage", help="group retired cells and assign uses with a finished life-lsd run")
    t.add_argument("--run", required=True, help="life-lsd run folder")
    t.add_argument("--input", required=True, help="a cell file or a folder of them (first cycles suffice)")
    how = t.add_mutually_exclusive_group()
    how.add_argument("--groups", type=int, help="number of groups (default: cells // 10)")
    how.add_argument("--group-size", type=int, help="cells per group instead of a number of groups")
    t.add_argument("--apps", help="application catalogue TOML (default: the bundled one)")
    t.add_argument("--cell-voltage", type=float, default=3.6,
                   help="nominal cell voltage for group energies, V (default 3.6)")
    t.add_argument("-o", "--output", required=True, help="output folder (never overwritten unless --overwrite)")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier triage output")
    t.add_argument("--refuse-out-of-distribution", action="store_true",
                   help="stop with an error, writing nothing, when a cell lies outside the run's "
                        "training ranges (default: a warning per cell on stderr and "
                        "in_distribution=False in cells.csv)")
    t.set_defaults(fn=cmd_triage)

    it = sub.add_parser("interpret", help="router analysis of a finished iMOE run (the paper's Fig. 4)")
    it.add_argument("run", help="iMOE run folder (single model or ensemble)")
    it.add_argument("-o", "--output", help="output folder (default: RUN/interpret)")
    it.add_argument("--linear", help="an iMOE-linear run of the same data, to compare embeddings (Fig. 4g)")
    it.add_argument("--data-dir", help="data folder (default: $SLBJAX_DATA)")
    it.add_argument("--draws", type=int, default=10, help="noise draws per feature (default 10)")
    it.add_argument("--seed", type=int, default=0, help="seed of the noise, permutations and resampling")
    it.add_argument("--overwrite", action="store_true", help="write into an existing output folder")
    it.set_defaults(fn=cmd_interpret)

    g = sub.add_parser("generate", help="generate pulse features with a finished CVAE run")
    g.add_argument("--run", required=True, help="run folder")
    g.add_argument("--soc", type=float, required=True, help="SOC as a fraction, e.g. 0.30")
    g.add_argument("--soh", type=float, required=True, help="SOH as a fraction, e.g. 0.85")
    g.add_argument("-n", type=int, default=1000, help="number of samples")
    g.add_argument("-o", "--output", required=True, help="output CSV (never overwritten)")
    g.add_argument("--case", type=int, default=None,
                   help="which SOC case's model (default: of the run's cases, the one whose "
                        "training SOC levels span --soc, or lie nearest to it; ties go to the "
                        "case with the most training levels, then to the lowest case number)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(fn=cmd_generate)
    return p


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: marked interrupted


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(list_experiments="-h" in argv or "--help" in argv).parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if getattr(args, "distributed", False):
            start_distributed(args.coordinator, args.num_processes, args.process_id)
        return args.fn(args)
    except SlbjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``slbjax ... | head``): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        print(f"error: {_os_error_text(e)}", file=sys.stderr)
        return 2


def _os_error_text(e: OSError) -> str:
    """One line for a fault of the file system: which path, what went wrong."""
    what = e.strerror or type(e).__name__
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    if e.errno == errno.ENOSPC:
        what += " (the disk is full)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what += " (the folder is not writable for you)"
    return f"{where}: {what}" if where else f"{what} ({e})"


if __name__ == "__main__":
    sys.exit(main())
