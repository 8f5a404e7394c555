"""Errors that slbjax reports to users.

Every problem a user can fix (a missing file, a renamed column, a bad
override) is raised as a subclass of :class:`SlbjaxError` whose message names
the file, the row and the field involved and says what was expected.  The CLI
prints such messages without a traceback.
"""

from __future__ import annotations


class SlbjaxError(Exception):
    """Base class for errors caused by user input, reported without traceback."""


class ConfigError(SlbjaxError):
    """An unknown experiment, an unknown config key or a value of the wrong type."""


class RunDirError(SlbjaxError):
    """A run folder that would be overwritten, or that does not hold a run."""


class DataError(SlbjaxError):
    """A data file that is missing or does not follow its published schema.

    Args:
      path: the file (or folder) concerned.
      problem: what is wrong and what was expected.
      row: 0-based data row (the header is not counted), if the problem is in one row.
      field: column, sheet or list name, if the problem is in one field.
    """

    def __init__(self, path, problem: str, *, row: int | None = None, field: str | None = None):
        self.path = str(path)
        self.row = row
        self.field = field
        self.problem = problem
        where = [f"file {self.path}"]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {problem}")
