"""Every family's config: frozen dataclasses, one module per family.

A config class is named ``<Family>Config`` and its sections ``<Family><Section>``
(``ImoeConfig`` with ``ImoeData``, ``ImoeModel``, ``ImoeTrain``); its
``family`` class variable names the runner (:mod:`slbjax.runners`) that
trains and evaluates it, and ``validate()`` raises ConfigError on values no
run can use.  Experiments (``experiments/``) build these configs; nothing
here imports a runner or a model.
"""
