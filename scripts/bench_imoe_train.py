"""Benchmark 1: iMOE training speed, slbjax (jit + scan) vs the same model in PyTorch.

Usage::

    python scripts/bench_imoe_train.py --data-dir /work/shared/data          # ms/epoch, FLOPs
    python scripts/bench_imoe_train.py --epochs 3 --no-breakdown              # quicker
    python scripts/bench_imoe_train.py --time-to-accuracy --budget-s 600      # + time to 0.88 %
    python scripts/bench_imoe_train.py --time-to-accuracy 1.5 --budget-s 60

Data: UL-NCA CY25-05_1 through slbjax's own pipeline (``load_cells`` ->
``windows_for`` -> ``to_batch`` with the training normalisers and target
scaling), so both frameworks get the same float32 arrays: 1326 training windows
= 42 steps of 32 (the last one 14) and 241 validation windows.

Measured, after compilation / warm-up, median over ``--epochs`` epochs:

* slbjax: one call of the jitted chunk function of :mod:`slbjax.train.imoe`
  (``chunk=1``, vmapped over a member axis of 1 exactly as ``fit`` runs it): the
  shuffle, 42 Adam steps in ``lax.scan``, the validation MSE and the
  best-parameter bookkeeping.
* torch: ``scripts/torch_imoe.py``, the same model, loss and Adam, a shuffled
  minibatch loop, plus the validation MSE (so both do the same work), with
  ``torch.set_num_threads(os.cpu_count())``; its training loop alone is printed too.

Both start from the same weights (the flax initialisation copied into torch).
Also printed: FLOPs of one step / epoch (analytic; cross-checked by counting the
matmuls of the jaxpr JAX differentiates, and XLA's ``cost_analysis``), achieved
GFLOP/s, and this machine's large-matmul GFLOP/s as the ceiling; unless
``--no-breakdown``, the time of one step's forward, forward+backward and full
update in both frameworks.

Threads: torch uses ``--torch-threads`` (default: all cores); XLA uses its own
pool.  On a busy machine a thread per core oversubscribes it; compare with
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false ... --torch-threads 1`` (one
thread each).  ``--time-to-accuracy`` trains both from the same weights until the
validation MAPE reaches the level or ``--budget-s`` runs out (slbjax's time
includes its compilation).

The authors' published code is timed only where you point the benchmark at
your own checkout of it (``--authors-code DIR``, the folder holding its
``run.py``, with its data in place): it runs in a subprocess, on UL-NCA
CY25-05_1 with its defaults (batch 32), for ``--authors-epochs A B`` epochs
(default 2 and 6), alternating, ``--authors-repeats`` times; its seconds per
epoch are the median of (wall(B) - wall(A)) / (B - A), so start-up, data
loading and its final test cancel.  Nothing of it is part of slbjax.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from slbjax.configs.imoe import ImoeConfig, ImoeData
from slbjax.data.imoe_inputs import training_batches
from slbjax.evaluate import metrics
from slbjax.models.imoe import IMOE, batched_apply
from slbjax.paths import resolve_data_dir
from slbjax.train import imoe as trainlib
from slbjax.train.imoe import Batch, LossWeights, init_params, loss_fn

try:  # the torch side is optional: without it only slbjax is timed
    import torch
    import torch_imoe
except ImportError:
    torch = torch_imoe = None


# ----------------------------------------------------------------------------- FLOPs


def forward_flops(model: IMOE, num_features: int, qv_points: int = 50, inputs: int = 4) -> dict:
    """Analytic FLOPs of ONE sample's forward pass (multiply-add = 2 FLOPs).

    Returns ``{"matmul": ..., "lstm_matmul": ..., "total": ...}``; ``total`` adds biases and the
    element-wise LSTM cell work (3 sigmoids, 2 tanh counted 1 each, 3 mul, 2 add per unit).
    """
    e, h, steps = model.num_experts, model.hidden, model.horizon
    dirs = 2 if model.bidirectional else 1
    router = 2 * num_features * e + 2 * e * e  # logits + noise scale (train only; counted anyway)
    experts = 2 * qv_points * e * steps
    mix = 2 * e * steps
    lstm_mm = dirs * steps * (2 * inputs * 4 * h + 2 * h * 4 * h)
    head = 2 * dirs * h * steps
    matmul = router + experts + mix + lstm_mm + head
    elementwise = e + e * steps + dirs * steps * (4 * h + 10 * h) + steps + 20 * e
    return {"matmul": matmul, "lstm_matmul": lstm_mm, "total": matmul + elementwise}


def jaxpr_matmul_flops(jaxpr) -> int:
    """Matmul FLOPs of a (closed) jaxpr, scan bodies multiplied by their length."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lc)
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_matmul_flops(eqn.params["jaxpr"])
        elif name == "cond":
            total += max(jaxpr_matmul_flops(b) for b in eqn.params["branches"])
        else:
            for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
                sub = eqn.params.get(key)
                if sub is not None and hasattr(getattr(sub, "jaxpr", sub), "eqns"):
                    total += jaxpr_matmul_flops(sub)
    return total


def machine_matmul_gflops(n: int = 2048, repeats: int = 10) -> tuple[float, float]:
    """Measured float32 n x n matmul GFLOP/s: (jax, torch)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        ts.append(time.perf_counter() - t0)
    at = torch.from_numpy(np.array(a))
    at @ at
    tt = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        at @ at
        tt.append(time.perf_counter() - t0)
    flops = 2 * n**3
    return flops / min(ts) / 1e9, flops / min(tt) / 1e9


# ----------------------------------------------------------------------------- data


def load_ul(data_dir: Path | None):
    cfg = ImoeConfig(data=ImoeData(dataset="UL", subset="NCA", condition="CY25-05_1"))
    model, train, val = training_batches(cfg, data_dir)
    return cfg, model, train, val


# ----------------------------------------------------------------------------- timing


def _median_ms(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


class SlbjaxTrainer:
    """The exact program ``fit_members`` runs for one member, one epoch per call."""

    def __init__(self, model, params, train: Batch, val: Batch, *, batch_size, lr, seed):
        self.train = Batch(*map(jnp.asarray, train))
        self.val = Batch(*map(jnp.asarray, val))
        self.model = model
        self._pred = jax.jit(lambda p, q, f, u: batched_apply(model, p, q, f, u)[0])
        if hasattr(trainlib, "make_chunk_fn"):  # the training code before slbjax.train.loop
            tx = trainlib.make_optimizer(lr)
            carry = trainlib.init_carry(params, tx, lr, 0.75, 0.25)
            one = trainlib.make_chunk_fn(model, tx, num_train=train.size, batch_size=batch_size,
                                         patience=10**9, weights=LossWeights(), chunk=1)
            run = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))
            keys = jax.random.split(jax.random.key(seed), 1)
            self.carry = jax.tree_util.tree_map(lambda x: x[None], carry)
            self._step = lambda c: run(c, keys, self.train, self.val)
            return
        from slbjax.train import loop

        task = trainlib.task(model, train.size, batch_size)
        members = trainlib.members([seed], lr, LossWeights())
        state, data, hp = loop.init_state(task, loop.Data(self.train, self.val), members)
        # the given initial weights, as the torch side gets them
        # (params and best params: two buffers each, the state is donated)
        state = state._replace(params=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], params),
                               best_params=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], params))
        run = loop.program(task, (state, data, hp), epochs=10**9, chunk=1, patience=10**9)
        self.carry = state
        self._step = lambda c: run(c, data, hp)

    def epoch(self) -> None:
        self.carry, logs = self._step(self.carry)
        jax.block_until_ready(logs)

    def params(self):
        return jax.tree_util.tree_map(lambda x: x[0], self.carry.params)

    def val_mape(self) -> float:
        pred = self._pred(self.params(), self.val.qv, self.val.features, self.val.load)
        return metrics.mape_pct(np.asarray(pred), np.asarray(self.val.target))


class TorchTrainer:
    def __init__(self, model, params, train: Batch, val: Batch, *, batch_size, lr, seed):
        self.net = torch_imoe.from_flax(model, params, train.features.shape[1])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.train = torch_imoe.to_tensors(train)
        self.val = torch_imoe.to_tensors(val)
        self.gen = torch.Generator().manual_seed(seed)
        self.batch_size = batch_size

    def train_only(self) -> None:
        torch_imoe.train_epoch(
            self.net, self.opt, self.train, batch_size=self.batch_size, generator=self.gen
        )

    def epoch(self) -> None:
        self.train_only()
        torch_imoe.eval_mse(self.net, self.val)

    def val_mape(self) -> float:
        pred, _ = torch_imoe.predict(self.net, *self.val[:3])
        return metrics.mape_pct(pred, self.val[3].numpy())


def breakdown(model, params, train: Batch, batch_size: int, repeats: int) -> None:
    """Per-step times: forward, forward+backward, full Adam update, both frameworks."""
    b = train.take(slice(0, batch_size))
    bj = Batch(*map(jnp.asarray, b))
    mask = jnp.ones(batch_size)
    rng = jax.random.key(1)
    tx = optax.adam(1e-4)
    opt_state = tx.init(params)
    fwd = jax.jit(
        lambda p: batched_apply(model, p, bj.qv, bj.features, bj.load, train=True, rng=rng)
    )
    grad = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, model, bj, mask, rng, LossWeights())[0]))

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda p: loss_fn(p, model, bj, mask, rng, LossWeights())[0])(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for f in (lambda: fwd(params), lambda: grad(params), lambda: step(params, opt_state)):
        jax.block_until_ready(f())
    j = [
        _median_ms(lambda: jax.block_until_ready(fwd(params)), repeats),
        _median_ms(lambda: jax.block_until_ready(grad(params)), repeats),
        _median_ms(lambda: jax.block_until_ready(step(params, opt_state)), repeats),
    ]
    net = torch_imoe.from_flax(model, params, b.features.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    tb = torch_imoe.to_tensors(b)
    net.train()

    def t_fwd():
        with torch.no_grad():
            net(*tb[:3])

    def t_grad():
        pred, gates = net(*tb[:3])
        net.zero_grad(set_to_none=True)
        torch_imoe.loss_fn(pred, gates, tb[3])[0].backward()

    def t_step():
        t_grad()
        opt.step()

    for f in (t_fwd, t_grad, t_step):
        f()
    t = [_median_ms(f, repeats) for f in (t_fwd, t_grad, t_step)]
    print(f"\nper-step breakdown, batch {batch_size} (median of {repeats}, ms):")
    print(f"  {'':24s} {'slbjax':>8s} {'torch':>8s}")
    for name, a, c in zip(
        ("forward (train mode)", "forward + backward", "full Adam step"), j, t, strict=True
    ):
        print(f"  {name:24s} {a:8.2f} {c:8.2f}")


def time_to_accuracy(trainer, target: float, budget_s: float) -> dict:
    """Epochs until the validation MAPE (checked after each) reaches ``target`` or time runs out."""
    t0 = time.perf_counter()
    epochs, mape, best, first = 0, float("inf"), float("inf"), None
    while True:
        trainer.epoch()
        epochs += 1
        mape = trainer.val_mape()
        best = min(best, mape)
        elapsed = time.perf_counter() - t0
        first = elapsed if first is None else first
        if mape <= target or elapsed >= budget_s:
            break
    return {
        "reached": mape <= target,
        "seconds": elapsed,
        "epochs": epochs,
        "first": first,
        "last": mape,
        "best": best,
    }


def epoch_benchmark(args, model, params, train: Batch, val: Batch, kw: dict) -> float:
    """ms per epoch side by side, FLOPs, GFLOP/s and (optionally) the per-step breakdown;
    returns slbjax's median ms per epoch."""
    # --- ms per epoch: the frameworks alternate epoch by epoch so load changes hit both
    sj = SlbjaxTrainer(model, params, train, val, **kw)
    t0 = time.perf_counter()
    sj.epoch()
    compile_s = time.perf_counter() - t0
    if torch is None:
        times = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            sj.epoch()
            times.append(time.perf_counter() - t0)
        print(f"\nms per training epoch (median of {args.epochs}, after compile; train + val MSE; "
              "torch not installed, slbjax only):")
        print(f"  slbjax (one member, one epoch per call): {1e3 * statistics.median(times):8.1f} ms   "
              f"(range {1e3 * min(times):.0f}-{1e3 * max(times):.0f}; compile + 1st epoch {compile_s:.1f} s)")
        return 1e3 * statistics.median(times)
    th = TorchTrainer(model, params, train, val, **kw)
    th.epoch()  # warm-up
    times: dict[str, list[float]] = {"slbjax": [], "torch": [], "torch_train": []}
    for _ in range(args.epochs):
        for name, fn in (("slbjax", sj.epoch), ("torch", th.epoch), ("torch_train", th.train_only)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    sj_ms, th_ms, th_train_ms = (1e3 * statistics.median(times[k]) for k in times)
    spread = {k: f"{1e3 * min(v):.0f}-{1e3 * max(v):.0f}" for k, v in times.items()}

    # --- FLOPs
    fl = forward_flops(model, train.features.shape[1])
    step_flops = 3 * fl["total"] * args.batch_size
    epoch_flops = 3 * fl["total"] * train.size + fl["total"] * val.size
    bj = Batch(*map(jnp.asarray, train.take(slice(0, args.batch_size))))
    mask = jnp.ones(args.batch_size)

    def step_loss(p):
        return loss_fn(p, model, bj, mask, jax.random.key(0), LossWeights())[0]

    jaxpr_mm = jaxpr_matmul_flops(jax.make_jaxpr(jax.value_and_grad(step_loss))(params))
    try:
        cost = jax.jit(jax.value_and_grad(step_loss)).lower(params).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        xla_flops = float(cost.get("flops", float("nan")))
    except Exception as exc:  # cost analysis is backend-dependent
        print(f"(cost_analysis unavailable: {exc})")
        xla_flops = float("nan")
    jax_peak, torch_peak = machine_matmul_gflops()

    print(
        f"\nms per training epoch (median of {args.epochs}, alternating, after compile/warm-up; "
        "train + val MSE):"
    )
    print(
        f"  slbjax (jit chunk fn, vmap N=1): {sj_ms:8.1f} ms   (range {spread['slbjax']}; "
        f"compile + 1st epoch {compile_s:.1f} s)"
    )
    print(
        f"  torch (same model, Adam):        {th_ms:8.1f} ms   (range {spread['torch']}; "
        f"training loop alone {th_train_ms:.1f} ms)"
    )
    best_ratio = min(times["torch"]) / min(times["slbjax"])
    print(
        f"  torch / slbjax:                  {th_ms / sj_ms:8.2f}x   (fastest epochs: {best_ratio:.2f}x)"
    )

    print("\nFLOPs (multiply-add = 2):")
    print(
        f"  forward, one window:          {fl['total'] / 1e6:8.3f} MFLOP "
        f"({fl['matmul'] / 1e6:.3f} in matmuls, of which the LSTM "
        f"{fl['lstm_matmul'] / fl['matmul']:.0%})"
    )
    print(f"  train step, batch {args.batch_size} (3x fwd): {step_flops / 1e6:8.1f} MFLOP")
    print(
        f"    cross-check, matmuls in the differentiated jaxpr: {jaxpr_mm / 1e6:8.1f} MFLOP "
        f"(analytic matmuls x3: {3 * fl['matmul'] * args.batch_size / 1e6:.1f})"
    )
    print(
        f"    XLA cost_analysis of the step:                   {xla_flops / 1e6:8.1f} MFLOP "
        "(counts each while-loop body once: the 50-step LSTM scan as one step)"
    )
    print(f"  epoch ({train.size} train x3 + {val.size} val fwd): {epoch_flops / 1e9:8.2f} GFLOP")
    print("\nachieved GFLOP/s (epoch FLOPs / epoch time):")
    print(f"  slbjax {epoch_flops / sj_ms / 1e6:7.2f}   torch {epoch_flops / th_ms / 1e6:7.2f}")
    print(
        f"  machine: 2048x2048 float32 matmul {jax_peak:.1f} GFLOP/s in jax, {torch_peak:.1f} in "
        f"torch -> slbjax at {epoch_flops / sj_ms / 1e6 / jax_peak:.1%} of the jax matmul rate"
    )

    if not args.no_breakdown:
        breakdown(model, params, train, args.batch_size, repeats=max(20, 4 * args.epochs))
    return sj_ms


def authors_run_py(code_dir: Path) -> Path:
    """The ``run.py`` of a checkout of the authors' code (in DIR or DIR/IMOE)."""
    for candidate in (code_dir / "run.py", code_dir / "IMOE" / "run.py"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"error: {code_dir}: no run.py here or in IMOE/; point --authors-code at a "
                     "checkout of the authors' iMOE code")


def authors_seconds_per_epoch(code_dir: Path, python: str, epochs: tuple[int, int],
                              repeats: int) -> dict:
    """Seconds per epoch of the authors' ``run.py`` by differencing two epoch counts."""
    run_py = authors_run_py(code_dir)
    a, b = epochs
    walls: dict[int, list[float]] = {a: [], b: []}
    for _ in range(repeats):
        for n in (a, b):
            cmd = [python, run_py.name, "--dataset", "UL-NCA", "--condition", "CY25-05_1",
                   "--train_epochs", str(n)]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, cwd=run_py.parent, capture_output=True, text=True)
            walls[n].append(time.perf_counter() - t0)
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise SystemExit(f"error: {run_py}: exited {out.returncode} after "
                                 f"{walls[n][-1]:.0f} s: {last}")
    per_epoch = [(tb - ta) / (b - a) for ta, tb in zip(walls[a], walls[b], strict=True)]
    return {"seconds": statistics.median(per_epoch), "min": min(per_epoch),
            "max": max(per_epoch), "walls": walls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="default: $SLBJAX_DATA")
    ap.add_argument(
        "--epochs", type=int, default=5, help="timed epochs each (median); 0: skip the epoch timing"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count(),
        help="torch.set_num_threads (default: all cores)",
    )
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-step breakdown")
    ap.add_argument(
        "--time-to-accuracy",
        type=float,
        nargs="?",
        const=0.88,
        default=None,
        metavar="MAPE",
        help="also train both to this validation MAPE %% (default 0.88)",
    )
    ap.add_argument(
        "--budget-s", type=float, default=600.0, help="time-to-accuracy budget per framework"
    )
    ap.add_argument("--authors-code", type=Path, default=None, metavar="DIR",
                    help="your checkout of the authors' iMOE code: time its run.py too")
    ap.add_argument("--authors-python", default=sys.executable,
                    help="the Python (with torch) that runs the authors' code")
    ap.add_argument("--authors-epochs", type=int, nargs=2, default=(2, 6), metavar=("A", "B"))
    ap.add_argument("--authors-repeats", type=int, default=3)
    args = ap.parse_args()

    if torch is not None:
        torch.set_num_threads(args.torch_threads)
    _, model, train, val = load_ul(resolve_data_dir(args.data_dir))
    steps = math.ceil(train.size / args.batch_size)
    th = f"torch {torch.__version__}, {torch.get_num_threads()} threads" if torch else "no torch"
    print(
        f"UL-NCA CY25-05_1: {train.size} train windows ({steps} steps of {args.batch_size}), "
        f"{val.size} val windows; {os.cpu_count()} CPU cores, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, {th}; load average {os.getloadavg()[0]:.1f}"
    )
    params = init_params(model, jax.random.key(args.seed), train)
    kw = dict(batch_size=args.batch_size, lr=args.lr, seed=args.seed)

    slbjax_ms = epoch_benchmark(args, model, params, train, val, kw) if args.epochs > 0 else None

    if args.authors_code is not None:
        a, b = args.authors_epochs
        r = authors_seconds_per_epoch(args.authors_code, args.authors_python, (a, b),
                                      args.authors_repeats)
        print(f"\nauthors' code ({authors_run_py(args.authors_code)}, {a} vs {b} epochs, "
              f"{args.authors_repeats} repeats, alternating): {1e3 * r['seconds']:.0f} ms per epoch "
              f"(range {1e3 * r['min']:.0f}-{1e3 * r['max']:.0f})")
        if slbjax_ms is not None:
            print(f"  authors' code / slbjax: {1e3 * r['seconds'] / slbjax_ms:.2f}x "
                  "(both measured in this run)")

    if args.time_to_accuracy is not None:
        target = args.time_to_accuracy
        print(
            f"\ntime to validation MAPE <= {target} % (budget {args.budget_s:.0f} s each, "
            "same initial weights, MAPE checked after every epoch):"
        )
        trainers = (("slbjax", SlbjaxTrainer), ("torch", TorchTrainer))[: 2 if torch else 1]
        for name, cls in trainers:
            r = time_to_accuracy(cls(model, params, train, val, **kw), target, args.budget_s)
            status = "reached" if r["reached"] else "NOT reached"
            print(
                f"  {name:7s} {status:11s} after {r['seconds']:7.1f} s, {r['epochs']:5d} epochs "
                f"(1st epoch {r['first']:.1f} s{', incl. compile' if name == 'slbjax' else ''}); "
                f"last {r['last']:.3f} %, best {r['best']:.3f} %"
            )


if __name__ == "__main__":
    main()
