"""iMOE on the built-in synthetic cohort (the embedded default; no data needed).

Command: ``slbjax run imoe-synthetic`` (add ``--smoke`` for a seconds-long check).

The cohort (slbjax.data.synthetic) has no paper counterpart: it exists so the
whole pipeline (features, router, recurrent head, checkpoints, predict) runs
on a fresh machine.  Expect a test MAPE of a few percent at default size.
"""

from slbjax.runners.imoe import ImoeConfig, ImoeData, ImoeModel, ImoeTrain


def get_config(smoke: bool = False) -> ImoeConfig:
    if smoke:
        return ImoeConfig(
            data=ImoeData(dataset="synthetic", synthetic_cells=12, horizon=20, max_windows_per_cell=20),
            model=ImoeModel(hidden=16),
            train=ImoeTrain(epochs=4, patience=4, learning_rate=1e-3, chunk=2),
        )
    return ImoeConfig(
        data=ImoeData(dataset="synthetic", synthetic_cells=60, max_windows_per_cell=40),
        train=ImoeTrain(epochs=150, patience=30, learning_rate=1e-3, chunk=10),
    )
