"""Two local processes on CPU train one data-parallel model (jax.distributed + gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from slbjax.cli import main

ARGS = ["run", "imoe-synthetic", "--smoke", "--set", "train.data_parallel=true",
        "--set", "train.batch_size=16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.long
def test_two_processes_match_one_process(tmp_path):
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "slbjax.cli", *ARGS, "--workdir", str(tmp_path / "multi"),
             "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(i)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("the two-process run did not finish in 240 s")
    assert [p.returncode for p in procs] == [0, 0], outs
    multi = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    # the same model trained in one process (no mesh: the sharded program must agree)
    assert main(["run", "imoe-synthetic", "--smoke", "--set", "train.batch_size=16",
                 "--workdir", str(tmp_path / "single")]) == 0
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    for key in ("test_mape_pct", "val_mape_pct", "best_epoch"):
        assert multi[key] == pytest.approx(single[key], rel=1e-4), key
    assert (tmp_path / "multi" / "checkpoints").is_dir()
