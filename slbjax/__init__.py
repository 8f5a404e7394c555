"""slbjax: JAX tools for second-life lithium-ion battery research."""

__version__ = "0.1.0"


def load_run(path):
    """Reloads a finished iMOE run folder (see :func:`slbjax.inference.load_run`)."""
    from slbjax.inference import load_run as _load_run

    return _load_run(path)
