"""The trajectory model a config names: iMOE or a baseline, with its output scaling."""

from __future__ import annotations

from slbjax.configs.imoe import ImoeConfig
from slbjax.models.baselines import Informer, PatchTST
from slbjax.models.imoe import IMOE


def build_model(cfg: ImoeConfig, target_mean: float = 0.0, target_std: float = 1.0):
    """The trajectory model of ``cfg.model.arch`` with the given output scaling."""
    m = cfg.model
    if m.arch == "patchtst":
        return PatchTST(horizon=cfg.data.horizon, target_mean=target_mean, target_std=target_std)
    if m.arch == "informer":
        return Informer(horizon=cfg.data.horizon, target_mean=target_mean, target_std=target_std)
    return IMOE(
        num_experts=m.num_experts, top_k=m.top_k, horizon=cfg.data.horizon, gate=m.gate,
        gate_alpha=m.gate_alpha, hidden=m.hidden, bidirectional=m.bidirectional,
        router=m.router, use_load=m.use_load, target_mean=target_mean, target_std=target_std,
    )
