"""Runner of Fig. 5a's history baselines: one baseline on one UL-NCA condition."""

from __future__ import annotations

from pathlib import Path

from slbjax import history
from slbjax.configs.history import HistoryConfig
from slbjax.data.imoe_files import load_split
from slbjax.paths import require_data_dir

CONFIG_CLASS = HistoryConfig


def check_inputs(cfg: HistoryConfig, data_dir: Path | None) -> None:
    """Fails, before a run folder is made, when the condition's cells are missing or do not load."""
    cfg.validate()
    load_split(require_data_dir(data_dir, "the history baselines"), "UL", "NCA", cfg.data.condition)


def train_and_evaluate(cfg: HistoryConfig, data_dir: Path | None, run_dir: Path) -> dict[str, float]:
    """Fits (MLP) or applies (polynomial) the baseline and scores its test cells."""
    cfg.validate()
    return history.score(cfg, require_data_dir(data_dir, "the history baselines"), Path(run_dir))
