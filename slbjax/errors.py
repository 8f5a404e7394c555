"""Errors that slbjax reports to users.

Every problem a user can fix (a missing file, a renamed column, a bad
override) is raised as a subclass of :class:`SlbjaxError` whose message names
the file, the row and the field involved and says what was expected.  The CLI
prints such messages without a traceback.
"""

from __future__ import annotations

import os
import re


class SlbjaxError(Exception):
    """Base class for errors caused by user input, reported without traceback."""


class ConfigError(SlbjaxError):
    """An unknown experiment, an unknown config key or a value of the wrong type."""


class RunDirError(SlbjaxError):
    """A run folder that would be overwritten, or that does not hold a run."""


class DataError(SlbjaxError):
    """A data file that is missing or does not follow its published schema.

    The message reads as a person finds the place: ``file F, line L (cycle C),
    field 'X': problem``, where L is the line of a text table as an editor
    numbers it (header on line 1, so data row r is line r + 2).  Spreadsheet
    readers name the sheet, the Excel row and the column in ``problem``
    themselves, so for a workbook only the file leads the message.

    Args:
      path: the file or folder concerned; None when the problem is not in a file
        (an unknown dataset name, no data folder given).
      problem: what is wrong and what was expected.
      row: 0-based data row (the header is not counted), if the problem is in one row.
      field: column, sheet or list name, if the problem is in one field.
      cycle: the cycle number that row records, where the file has one.
    """

    def __init__(self, path, problem: str, *, row: int | None = None, field: str | None = None,
                 cycle: int | None = None):
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field
        self.cycle = cycle
        self.problem = problem = " ".join(str(problem).split())  # always one line
        where = []
        if self.path is not None:
            where.append(f"{'folder' if os.path.isdir(self.path) else 'file'} {self.path}")
        if not self.path_is_spreadsheet:
            if row is not None:
                where.append(f"line {row + 2}" + (f" (cycle {cycle})" if cycle is not None else ""))
            elif cycle is not None:
                where.append(f"cycle {cycle}")
            if field is not None:
                where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)

    @property
    def path_is_spreadsheet(self) -> bool:
        return self.path is not None and self.path.lower().endswith((".xlsx", ".xls"))


def csv_problem(exc: Exception) -> str:
    """A CSV reader's complaint (pandas ``ParserError``) in the project's words, on one line."""
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if m:
        return f"{m.group(3)} fields where the header has {m.group(1)}"
    return " ".join(str(exc).split())
