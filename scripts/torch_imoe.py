"""A PyTorch implementation of slbjax's iMOE (``gate="authors"``), used as the benchmark baseline.

Same architecture, loss and optimiser as :class:`slbjax.models.imoe.IMOE` and
:mod:`slbjax.train.imoe`, written the way one would write it in PyTorch (batched
modules, ``nn.LSTM``, ``torch.optim.Adam``, a shuffled minibatch loop), so the
benchmarks compare the frameworks and not two different models:

* router: ``Linear(F -> E)`` on the standardised features; in training, Gaussian
  noise of std ``softplus(logits @ W_noise) + 1e-5`` (``W_noise`` [E, E], zeros at
  init) is added to the logits; gate: ``p = softmax(logits)``, the top-k entries
  become ``alpha * (exp(p) - 1)``, the others ``alpha * log(1 + p)``, softmax again;
* E linear experts Q-V curve [50] -> trend [L], stored as one ``Linear(50 -> E*L)``
  (row ``e*L + l`` is expert e, cycle l; the same as E separate layers);
  trend = gate-weighted sum;
* a bidirectional ``nn.LSTM(4 -> hidden)`` over [trend, charge current, discharge
  current, temperature], ``Linear(2*hidden -> 1)`` per cycle;
* output ``target_mean + target_std * net``;
* loss ``0.75 * MSE + 0.25 * CV^2`` of the per-expert gate sums (unbiased variance
  over mean^2 + 1e-10).

:func:`state_dict_from_flax` maps a flax parameter tree onto this module so both
frameworks can start from (and be checked on) identical weights;
``tests/test_torch_reference.py`` checks forward outputs and gradients agree.

Import with ``scripts/`` on ``sys.path`` (the benchmark scripts next to this file
get that for free).  Needs the optional ``bench`` extra (``pip install torch==2.13.0``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NOISE_EPS = 1e-5


class TorchIMOE(nn.Module):
    """iMOE for a batch: ``(qv [B, Q], features [B, F], load [B, L, 3]) -> ([B, L], [B, E])``."""

    def __init__(
        self,
        num_features: int,
        *,
        num_experts: int = 5,
        top_k: int = 2,
        horizon: int = 50,
        qv_points: int = 50,
        hidden: int = 64,
        gate_alpha: float = 10.0,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ):
        super().__init__()
        self.num_experts, self.top_k, self.horizon = num_experts, top_k, horizon
        self.gate_alpha = gate_alpha
        self.target_mean, self.target_std = target_mean, target_std
        self.router = nn.Linear(num_features, num_experts)
        self.w_noise = nn.Parameter(torch.zeros(num_experts, num_experts))
        self.experts = nn.Linear(qv_points, num_experts * horizon)
        self.lstm = nn.LSTM(4, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 1)

    def gate(self, logits: torch.Tensor) -> torch.Tensor:
        """The published code's gate: boosted top-k, then a second softmax."""
        p = torch.softmax(logits, dim=-1)
        top = logits.topk(self.top_k, dim=-1).indices
        mask = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, top, True)
        boosted = torch.where(
            mask, self.gate_alpha * (torch.exp(p) - 1.0), self.gate_alpha * torch.log1p(p)
        )
        return torch.softmax(boosted, dim=-1)

    def forward(
        self, qv: torch.Tensor, features: torch.Tensor, load: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.router(features)
        if self.training:
            std = F.softplus(logits @ self.w_noise) + NOISE_EPS
            logits = logits + torch.randn_like(logits) * std
        weights = self.gate(logits)  # [B, E]
        trends = self.experts(qv).view(-1, self.num_experts, self.horizon)  # [B, E, L]
        trend = torch.bmm(weights.unsqueeze(1), trends)  # [B, 1, L]
        seq = torch.cat([trend.transpose(1, 2), load], dim=-1)  # [B, L, 4]
        h, _ = self.lstm(seq)  # [B, L, 2H]
        net = self.out(h).squeeze(-1)
        return self.target_mean + self.target_std * net, weights


def cv_squared(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation (unbiased variance / mean^2) of [E]."""
    if x.shape[0] < 2:
        return x.new_zeros(())
    return x.var(unbiased=True) / (x.mean() ** 2 + eps)


def loss_fn(
    pred: torch.Tensor,
    gates: torch.Tensor,
    target: torch.Tensor,
    mse_weight: float = 0.75,
    router_weight: float = 0.25,
    eps: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, trajectory MSE) of one minibatch."""
    mse = F.mse_loss(pred, target)
    return mse_weight * mse + router_weight * cv_squared(gates.sum(0), eps), mse


def to_tensors(batch) -> tuple[torch.Tensor, ...]:
    """slbjax ``Batch`` (numpy float32) -> tensors sharing its memory."""
    return tuple(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in batch)


def train_epoch(
    model: TorchIMOE,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, ...],
    *,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """One pass over shuffled minibatches (the last one smaller); returns (loss, mse) per window."""
    qv, feats, load, target = data
    n = qv.shape[0]
    model.train()
    perm = torch.randperm(n, generator=generator)
    tot_loss = tot_mse = 0.0
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        pred, gates = model(qv[idx], feats[idx], load[idx])
        loss, mse = loss_fn(pred, gates, target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot_loss += loss.item() * len(idx)
        tot_mse += mse.item() * len(idx)
    return tot_loss / n, tot_mse / n


def predict(
    model: TorchIMOE,
    qv: torch.Tensor,
    feats: torch.Tensor,
    load: torch.Tensor,
    batch_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (no router noise) trajectories [M, L] and gate weights [M, E]."""
    model.eval()
    preds, gates = [], []
    with torch.inference_mode():
        for start in range(0, qv.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            y, w = model(qv[sl], feats[sl], load[sl])
            preds.append(y.numpy())
            gates.append(w.numpy())
    return np.concatenate(preds), np.concatenate(gates)


def eval_mse(model: TorchIMOE, data: tuple[torch.Tensor, ...]) -> float:
    """Trajectory MSE over all windows (eval mode), as slbjax's ``eval_mse``."""
    pred, _ = predict(model, *data[:3])
    return float(((pred - data[3].numpy()) ** 2).mean())


# ----------------------------------------------------------------------------- flax -> torch


def _lstm_weights(cell) -> dict[str, np.ndarray]:
    """flax OptimizedLSTMCell params -> torch (weight_ih, weight_hh, bias_ih, bias_hh).

    flax: ``i{g}`` [in, H] (no bias), ``h{g}`` [H, H] + bias [H] for g in i, f, g, o;
    torch stacks the gates (same order i, f, g, o) as rows of [4H, in] / [4H, H].
    flax has one bias per gate (on the h side): it goes to ``bias_hh``; ``bias_ih`` is 0.
    """
    gates = "ifgo"
    w_ih = np.concatenate([np.asarray(cell[f"i{g}"]["kernel"]).T for g in gates], 0)
    w_hh = np.concatenate([np.asarray(cell[f"h{g}"]["kernel"]).T for g in gates], 0)
    b_hh = np.concatenate([np.asarray(cell[f"h{g}"]["bias"]) for g in gates], 0)
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": np.zeros_like(b_hh), "bias_hh": b_hh}


def state_dict_from_flax(params) -> dict[str, torch.Tensor]:
    """A :class:`TorchIMOE` state dict holding the weights of a flax ``IMOE`` (router="moe",
    bidirectional).  Accepts ``{"params": ...}`` or the inner tree; works for gradient trees too.
    """
    p = params.get("params", params)
    head = p["head"]
    out = {
        "router.weight": np.asarray(p["router"]["logits"]["kernel"]).T,
        "router.bias": np.asarray(p["router"]["logits"]["bias"]),
        "w_noise": np.asarray(p["router"]["w_noise"]),
        "experts.weight": np.asarray(p["experts"]["experts"]["kernel"]).T,
        "experts.bias": np.asarray(p["experts"]["experts"]["bias"]),
        "out.weight": np.asarray(head["out"]["kernel"]).T,
        "out.bias": np.asarray(head["out"]["bias"]),
    }
    # nn.Bidirectional creates the forward cell first (OptimizedLSTMCell_0).
    for suffix, name in (("l0", "OptimizedLSTMCell_0"), ("l0_reverse", "OptimizedLSTMCell_1")):
        for k, v in _lstm_weights(head[name]).items():
            out[f"lstm.{k}_{suffix}"] = v
    return {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in out.items()}


def from_flax(flax_model, params, num_features: int) -> TorchIMOE:
    """A :class:`TorchIMOE` with the hyper-parameters and weights of a flax ``IMOE``."""
    if flax_model.gate != "authors" or flax_model.router != "moe" or not flax_model.bidirectional:
        raise ValueError("TorchIMOE implements gate='authors', router='moe', bidirectional only")
    if not flax_model.use_load:
        raise ValueError("TorchIMOE always feeds the load")
    p = params.get("params", params)
    model = TorchIMOE(
        num_features,
        num_experts=flax_model.num_experts,
        top_k=flax_model.top_k,
        horizon=flax_model.horizon,
        qv_points=int(np.asarray(p["experts"]["experts"]["kernel"]).shape[0]),
        hidden=flax_model.hidden,
        gate_alpha=flax_model.gate_alpha,
        target_mean=float(flax_model.target_mean),
        target_std=float(flax_model.target_std),
    )
    model.load_state_dict(state_dict_from_flax(p))
    return model
