"""Interpretability of iMOE runs: router weights, regimes, stages, attributions (``slbjax interpret``)."""
