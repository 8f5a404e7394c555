"""slbjax: JAX tools for second-life lithium-ion battery research."""

__version__ = "0.1.0"
