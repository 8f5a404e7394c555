"""Decisions made on retired cells: consistency grouping (:mod:`slbjax.decide.grouping`)."""
