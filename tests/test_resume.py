"""Kill a run, resume it: the same parameters and metrics as a run never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from slbjax import checkpoint, rundir
from slbjax.cli import main
from slbjax.train import resume

BASE = ["imoe-synthetic", "--smoke", "--set", "train.epochs=40", "--set", "train.patience=1000",
        "--set", "data.synthetic_cells=12"]


@pytest.fixture(autouse=True)
def save_every_chunk(monkeypatch):
    monkeypatch.setenv("SLBJAX_CHECKPOINT_SECONDS", "0")


def _kill_after_save(monkeypatch, nth: int) -> None:
    """Stops the process's run right after its nth training-state save, as a kill then would."""
    real = resume.FitCheckpoint.save
    count = [0]

    def save(self, arrays, meta):
        real(self, arrays, meta)
        count[0] += 1
        if count[0] == nth:
            raise KeyboardInterrupt

    monkeypatch.setattr(resume.FitCheckpoint, "save", save)


def _same_run(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if "seconds" not in k} == \
        {k: v for k, v in mb.items() if "seconds" not in k}
    pa, pb = checkpoint.load(a)[0], checkpoint.load(b)[0]
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, pa, pb))
    assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes()
    assert pd.read_csv(a / "history.csv").equals(pd.read_csv(b / "history.csv"))


@pytest.mark.parametrize("extra", [[], ["--set", "train.ensemble_size=3"]], ids=["single", "ensemble3"])
def test_interrupted_run_resumes_to_the_same_numbers(extra, tmp_path, monkeypatch, capsys):
    args = [*BASE, *extra]
    assert main(["run", *args, "--workdir", str(tmp_path / "whole")]) == 0
    nth = int(np.random.default_rng(len(extra)).integers(1, 4))  # a chunk boundary of epochs 1-40
    with monkeypatch.context() as m:
        _kill_after_save(m, nth)
        assert main(["run", *args, "--workdir", str(tmp_path / "cut")]) == 130
    cut = tmp_path / "cut"
    assert rundir.read_marker(cut)["status"] == "interrupted" and (cut / "train-state").is_dir()
    assert not (cut / "metrics.json").exists()
    # without --resume the saved work is not thrown away
    assert main(["run", *args, "--workdir", str(cut)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    # another config cannot resume it
    assert main(["run", *args, "--set", "train.seed=5", "--workdir", str(cut), "--resume"]) == 2
    assert "another experiment or config" in capsys.readouterr().err
    assert main(["run", *args, "--workdir", str(cut), "--resume"]) == 0
    assert "resumed from the training state" in capsys.readouterr().err
    _same_run(tmp_path / "whole", cut)
    assert rundir.read_marker(cut)["status"] == "finished" and not (cut / "train-state").exists()
    assert main(["run", *args, "--workdir", str(cut), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_sweep_of_two_points_resumes(tmp_path, monkeypatch, capsys):
    grid = ["--grid", "train.learning_rate=0.001,0.003"]
    base = ["sweep", *BASE, *grid]
    assert main([*base, "--workdir", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as m:
        _kill_after_save(m, 2)
        assert main([*base, "--workdir", str(tmp_path / "cut")]) == 130
    # a sweep run again goes on where it stopped
    assert main([*base, "--workdir", str(tmp_path / "cut")]) == 0
    assert "resumed from the training state" in capsys.readouterr().err
    points = sorted(p.name for p in (tmp_path / "whole" / "points").iterdir() if p.is_dir())
    assert len(points) == 2
    for name in points:
        _same_run(tmp_path / "whole" / "points" / name, tmp_path / "cut" / "points" / name)


@pytest.mark.long
def test_sigkill_then_resume(tmp_path):
    """A real kill -9 at a random moment after the first save."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "SLBJAX_CHECKPOINT_SECONDS": "0"}
    cmd = [sys.executable, "-m", "slbjax.cli", "run", *BASE, "--set", "train.epochs=120"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    plain = {**env, "SLBJAX_CHECKPOINT_SECONDS": "600"}  # saves only when the fit ends
    assert subprocess.run([*cmd, "--workdir", str(whole)], env=plain, capture_output=True).returncode == 0
    proc = subprocess.Popen([*cmd, "--workdir", str(cut)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (cut / "train-state").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng(7).uniform(0.1, 1.0)))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (cut / "metrics.json").exists(), "the run ended before the kill; lengthen it"
    out = subprocess.run([*cmd, "--workdir", str(cut), "--resume"], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    _same_run(whole, cut)
