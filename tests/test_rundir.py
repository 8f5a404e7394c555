"""Run folders keep what users saved: the marker, the lock, the status, --overwrite's limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slbjax.experiments import load

from slbjax import rundir
from slbjax.cli import main
from slbjax.config import describe, valid_keys
from slbjax.errors import RunDirError

TINY = ["imoe-synthetic", "--smoke", "--set", "train.epochs=1", "--set", "data.synthetic_cells=10"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _finished(path: Path, files=("metrics.json", "table.csv")) -> Path:
    """A finished run folder written through the API, without training."""
    with rundir.open_run_dir(path) as folder:
        for name in files:
            (path / name).write_text(name)
        folder.finish()
    return path


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A folder of a user's own: a config.json of theirs, a thesis and a data folder."""
    d = tmp_path / "mine"
    (d / "mydata").mkdir(parents=True)
    (d / "mydata" / "cell1.csv").write_text("Cycle,Capacity\n1,1.9\n")
    (d / "thesis.tex").write_text("\\chapter{Results}")
    (d / "config.json").write_text('{"mine": true}')
    return d


def test_overwrite_refuses_a_folder_without_the_marker(user_folder, capsys):
    before = _snapshot(user_folder)
    assert main(["run", *TINY, "--workdir", str(user_folder), "--overwrite"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1]
    assert errors[0].startswith("error: refusing to use") and "holds no slbjax run" in errors[0]
    assert _snapshot(user_folder) == before and not (user_folder / rundir.LOCK_FILE).exists()


def test_overwrite_never_clears_the_working_directory_home_or_data(tmp_path, monkeypatch, capsys):
    run = _finished(tmp_path / "run")
    (run / "notes.txt").write_text("keep")
    before = _snapshot(run)
    monkeypatch.chdir(run)
    assert main(["run", *TINY, "--workdir", ".", "--overwrite"]) == 2
    assert "holds the working directory" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    # a folder above the data folder
    (run / "data").mkdir()
    with pytest.raises(RunDirError, match="holds the data folder"):
        rundir.prepare_run_dir(run, overwrite=True, data_dir=run / "data")
    monkeypatch.setenv("HOME", str(run))
    with pytest.raises(RunDirError, match="your home folder"):
        rundir.prepare_run_dir(run, overwrite=True)
    assert _snapshot(run) == before


def test_overwrite_removes_only_what_the_run_wrote(tmp_path):
    run = _finished(tmp_path / "run")
    (run / "notes.txt").write_text("mine, added after the run")
    marker = rundir.read_marker(run)
    assert marker["status"] == "finished"
    assert {"metrics.json", "table.csv"} <= set(marker["files"]) and "notes.txt" not in marker["files"]
    with pytest.raises(RunDirError, match="holds a finished run"):
        rundir.prepare_run_dir(run)
    with rundir.open_run_dir(run, overwrite=True) as folder:
        assert not (run / "table.csv").exists() and (run / "notes.txt").read_text() == \
            "mine, added after the run"
        assert rundir.read_marker(run)["status"] == "running"
        (run / "metrics.json").write_text("{}")
        folder.finish()
    assert (run / "notes.txt").exists() and rundir.read_marker(run)["status"] == "finished"


def test_a_second_process_cannot_write_a_locked_folder(tmp_path):
    run = tmp_path / "run"
    with rundir.lock_run_dir(run):
        with pytest.raises(RunDirError, match="being written by another slbjax process"):
            with rundir.open_run_dir(run):
                pass
    # and from another process, while this one writes
    with rundir.open_run_dir(run) as folder:
        code = ("import sys; from slbjax.cli import main; "
                f"sys.exit(main(['run', *{TINY!r}, '--workdir', {str(run)!r}, '--overwrite']))")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert other.returncode == 2 and "being written by another slbjax process" in other.stderr
        (run / "metrics.json").write_text("{}")
        folder.finish()
    assert json.loads((run / "metrics.json").read_text()) == {}


def test_status_of_failed_and_interrupted_runs_and_who_respects_it(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.delenv("SLBJAX_DATA", raising=False)
    # data that are not there: refused before the folder is made
    assert main(["run", "imoe-ul", "--smoke", "--workdir", str(run)]) == 2
    assert "--data-dir" in capsys.readouterr().err and not run.exists()
    # a run that fails once it has started: marked failed, and the next run there needs no
    # --overwrite
    with pytest.raises(ValueError):
        with rundir.open_run_dir(run):
            raise ValueError("a fault inside the training")
    assert rundir.read_marker(run)["status"] == "failed"
    with pytest.raises(RunDirError, match="did not finish .status 'failed'"):
        rundir.read_run_config(run)
    assert main(["predict", "--run", str(run), "--input", str(tmp_path)]) == 2
    assert "did not finish" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        with rundir.open_run_dir(run):
            raise KeyboardInterrupt
    assert rundir.read_marker(run)["status"] == "interrupted"
    assert main(["run", *TINY, "--workdir", str(run)]) == 0
    assert rundir.read_marker(run)["status"] == "finished"
    assert rundir.read_run_config(run)[0] == "imoe-synthetic"
    assert not list(run.glob(".*.tmp*"))  # JSON goes through a temporary name


def test_sigterm_saves_the_training_state_and_marks_the_run_interrupted(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "slbjax.cli", "run", "imoe-synthetic", "--smoke", "--workdir", str(run),
           "--set", "train.epochs=100000", "--set", "train.patience=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", "SLBJAX_CHECKPOINT_SECONDS": "0"})
    deadline = time.monotonic() + 120
    while not (run / "train-state").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().endswith("interrupted")
    assert "saved the training state" in err
    assert rundir.read_marker(run)["status"] == "interrupted" and (run / "train-state").is_dir()


def test_cli_version_show_and_run_help(capsys):
    from slbjax import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"slbjax {__version__}"
    assert main(["show", "imoe-ul", "--set", "train.epochs=7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cfg = load("imoe-ul").get_config()
    assert len(lines) == 1 + len(valid_keys(cfg))
    shown = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines[1:]}
    assert shown["train.epochs"].split()[-1] == "7" and shown["train.epochs"].split()[0] == "int"
    assert describe(cfg)[0][0] == lines[1].split()[0]
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "life-lsd" in help_text and "imoe-synthetic" in help_text


def test_broken_pipe_is_a_quiet_exit():
    # `slbjax show X | head -n 1` with the reader gone before slbjax writes (with `head` the
    # 2 kB may still fit the pipe before it exits, so the reader is closed here for certain)
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run([sys.executable, "-m", "slbjax.cli", "show", "imoe-ul"], stdout=write,
                             stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert out.stderr == "" and out.returncode == 141


@pytest.mark.realdata
def test_damaged_checkpoints_and_bad_outputs_are_one_error_line(tmp_path, capsys, data_dir,
                                                                tiny_imoe_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_imoe_run, run)
    cells = data_dir / "imoe" / "LSD" / "1.csv"  # one cell file
    capsys.readouterr()

    def one_error(args) -> str:
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    truncated, no_meta = tmp_path / "truncated", tmp_path / "no_meta"
    for d in (truncated, no_meta):
        shutil.copytree(run, d)
    for f in (truncated / "checkpoints").rglob("d/*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[:20])
    shutil.rmtree(next((no_meta / "checkpoints").glob("*/meta")))
    for d in (truncated, no_meta):
        err = one_error(["predict", "--run", str(d), "--input", str(cells), "-o", str(tmp_path / "p.csv")])
        assert "checkpoint is damaged or incomplete" in err and str(d) in err
    # an output path that is a folder, a full disk
    folder = tmp_path / "a_folder"
    folder.mkdir()
    err = one_error(["predict", "--run", str(run), "--input", str(cells), "-o", str(folder), "--overwrite"])
    assert err == f"error: {folder}: is a folder, expected a file name"
    if Path("/dev/full").exists():
        err = one_error(["predict", "--run", str(run), "--input", str(cells), "-o", "/dev/full",
                         "--overwrite"])
        assert err.startswith("error: /dev/full: No space left on device (the disk is full)")


def test_config_json_records_provenance(tmp_path):
    run = tmp_path / "run"
    assert main(["run", *TINY, "--workdir", str(run)]) == 0
    data = json.loads((run / "config.json").read_text())
    prov = data["provenance"]
    assert prov["data_dir"] is None and prov["files_sha256"] == {}  # the synthetic cohort reads none
    assert prov["packages"]["jax"] and prov["packages"]["flax"] and prov["python"].count(".") == 2
    assert prov["git_commit"] is None or len(prov["git_commit"].split("+")[0]) == 40
    # the record does not make the finished run look like another config
    from slbjax.config import apply_overrides

    cfg = apply_overrides(load("imoe-synthetic").get_config(smoke=True),
                          ["train.epochs=1", "data.synthetic_cells=10"])
    assert rundir.finished_metrics(run, cfg, "imoe-synthetic") is not None


@pytest.mark.realdata
def test_provenance_hashes_every_data_file_read(data_dir):
    import hashlib

    from slbjax import provenance
    from slbjax.data.imoe_files import load_cell_file
    from slbjax.data.sorting import load_sorting

    with provenance.recording() as reads:
        load_cell_file(data_dir / "imoe" / "LSD" / "3.csv")
        load_cell_file(data_dir / "imoe" / "LSD" / "3.csv")  # from the cache: still recorded once
        load_sorting(data_dir / "sorting")
    prov = provenance.describe(data_dir, reads)
    files = prov["files_sha256"]
    assert "imoe/LSD/3.csv" in files and len(files) == 3, files
    for name, digest in files.items():
        assert hashlib.sha256((data_dir / name).read_bytes()).hexdigest() == digest
    assert prov["data_dir"] == str(data_dir.resolve())
    provenance.record(data_dir / "imoe" / "LSD" / "4.csv")  # outside recording(): ignored
    assert "imoe/LSD/4.csv" not in provenance.describe(data_dir, reads)["files_sha256"]


def _damaged_copy(data_dir: Path, tmp: Path, sub: str, damage: str) -> Path:
    """``tmp/data`` holding ``sub`` of the real data as links, the files matching ``damage``
    replaced by a file that is not a table."""
    root = tmp / "data"
    (root / sub).mkdir(parents=True)
    for f in sorted((data_dir / sub).iterdir()):
        if f.match(damage):
            (root / sub / f.name).write_bytes(b"\x00\x01 not a table \x02\n")
        else:
            (root / sub / f.name).symlink_to(f)
    return root


@pytest.mark.parametrize("experiment, sub, damage, names", [
    ("imoe-ul", "imoe/UL-NCA", "CY25-05_1-#*.csv", "CY25-05_1-#"),
    ("life-lsd", "imoe/LSD", "1.csv", "1.csv"),
    ("sort-deep", "sorting", "features.csv", "features.csv"),
    ("cvae-pulse", "pulse", "NMC_2.1Ah*", "NMC_2.1Ah"),
])
def test_damaged_data_fail_before_the_folder_is_made(experiment, sub, damage, names, data_dir,
                                                     tmp_path, capsys):
    root = _damaged_copy(data_dir, tmp_path, sub, damage)
    run = tmp_path / "run"
    assert main(["run", experiment, "--smoke", "--data-dir", str(root), "--workdir", str(run)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and names in errors[0], errors
    assert not run.exists()


def test_history_baselines_check_their_cells_before_a_folder(data_dir, tmp_path):
    from slbjax import runners
    from slbjax.configs.history import HistoryConfig
    from slbjax.errors import DataError

    root = _damaged_copy(data_dir, tmp_path, "imoe/UL-NCA", "CY25-05_1-#*.csv")
    cfg = HistoryConfig()
    assert cfg.data.condition == "CY25-05_1"
    with pytest.raises(DataError, match="CY25-05_1-#"):
        runners.for_config(cfg).check_inputs(cfg, root)
    runners.for_config(cfg).check_inputs(cfg, data_dir)  # the intact data pass
